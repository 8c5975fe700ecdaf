/*
 * faults.c: a program that stops the core in one of the ways the harness must name.
 * Build with -DFAULT=<n>: 1 misaligned load, 2 load from an unmapped address,
 * 3 jump into L1 (a fetch outside the private memory), 4 illegal instruction,
 * 5 an endless loop (the cycle limit), 6 ebreak.
 */
#include "tinyattn_hal.h"

#ifndef FAULT
#error "build with -DFAULT=1..6"
#endif

static volatile uint32_t sink;

int main(void)
{
    ta_printf("about to fault (%d)\n", FAULT);
#if FAULT == 1
    /* In assembly: gcc splits a C load from a known odd address into halfwords. */
    uint32_t value, addr = TINYATTN_L1_BASE + 2u;
    __asm__ volatile("lw %0, 0(%1)" : "=r"(value) : "r"(addr));
    sink = value;
#elif FAULT == 2
    sink = *(volatile uint32_t *)0x20000000u;
#elif FAULT == 3
    ((void (*)(void))TINYATTN_L1_BASE)();
#elif FAULT == 4
    __asm__ volatile(".word 0xffffffff");
#elif FAULT == 5
    for (;;)
        sink++;
#elif FAULT == 6
    __asm__ volatile("ebreak");
#endif
    return 0;
}
