/*
 * hello.c: the smallest firmware that uses the SDK, and the first one a new cluster runs.
 *
 * It checks the configuration (ta_init), prints a greeting, compares every CLUSTER
 * register with tinyattn_regs.h and exits with the number of registers that differ,
 * or with HELLO_EXIT_CODE (default 0) when all match. A test can set HELLO_EXIT_CODE
 * (-DHELLO_EXIT_CODE=7) to see main's return value arrive in HOST_EXIT.
 */
#include "tinyattn_hal.h"

#ifndef HELLO_EXIT_CODE
#define HELLO_EXIT_CODE 0
#endif

#define CONFIG_REG(name) {TINYATTN_CLUSTER_##name##_OFFSET, TINYATTN_##name, #name}

static const struct {
    uint32_t offset;
    uint32_t expected;
    const char *name;
} config_regs[] = {
    CONFIG_REG(N_PE),          CONFIG_REG(VEC_LEN),         CONFIG_REG(ACC_BITS),
    CONFIG_REG(TILE_M),        CONFIG_REG(MAX_SEQ),         CONFIG_REG(MAX_DIM),
    CONFIG_REG(JOB_QUEUE_DEPTH), CONFIG_REG(N_BANKS),       CONFIG_REG(BANK_WORDS),
    CONFIG_REG(N_CORES),       CONFIG_REG(DMA_BITS),        CONFIG_REG(DMA_QUEUE_DEPTH),
    CONFIG_REG(L2_ADDR_BITS),
};

int main(void)
{
    uint32_t start = ta_cycles();
    int differ = 0;

    ta_init();
    ta_printf("hello from tinyattn %08x: %ux%u engine, %u KiB L1, %u KiB private memory\n",
              (unsigned)TINYATTN_CONFIG_HASH, (unsigned)TINYATTN_N_PE, (unsigned)TINYATTN_VEC_LEN,
              (unsigned)(TINYATTN_L1_BYTES / 1024u), (unsigned)(TINYATTN_PRIVATE_BYTES / 1024u));

    for (unsigned i = 0; i < sizeof config_regs / sizeof config_regs[0]; i++) {
        uint32_t value = TINYATTN_REG_READ(TA_REGS, config_regs[i].offset);
        if (value != config_regs[i].expected) {
            ta_printf("CLUSTER_%s = %u, tinyattn_regs.h says %u\n", config_regs[i].name,
                      (unsigned)value, (unsigned)config_regs[i].expected);
            differ++;
        }
    }
    ta_printf("%d of %d configuration registers differ; %u cycles\n", differ,
              (int)(sizeof config_regs / sizeof config_regs[0]), (unsigned)(ta_cycles() - start));
    return differ ? differ : HELLO_EXIT_CODE;
}
