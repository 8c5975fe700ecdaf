/*
 * two_cores.c: two control cores share L1. Build once with -DCORE=1 (the writer) and
 * once with -DCORE=0 (the reader, which ends the run).
 */
#include "tinyattn_hal.h"

#ifndef CORE
#error "build with -DCORE=0 or -DCORE=1"
#endif

#define MAILBOX ((volatile uint32_t *)TA_L1(0))
#define HELLO 0xC0DE0001u

int main(void)
{
#if CORE == 1
    MAILBOX[0] = HELLO;
    for (;;) /* only core 0 ends the run */
        (void)ta_waitirq();
#else
    uint32_t start = ta_cycles();
    while (MAILBOX[0] != HELLO)
        if (ta_cycles() - start > 100000u)
            return 1;
    ta_printf("core 1 wrote %x\n", (unsigned)MAILBOX[0]);
    return 0;
#endif
}
