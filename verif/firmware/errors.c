/*
 * errors.c: the firmware sees the engine's and the DMA's error reports.
 *
 * 1. A GEMM with m = 0: the engine rejects it; the firmware reads ZERO_DIM.
 * 2. A DMA transfer that runs past the end of L1: the DMA rejects it; the firmware
 *    reads L1_RANGE.
 * 3. A good GEMM afterwards runs: a rejected job leaves the engine usable.
 * Each step prints what it read; the exit code is 0 only when all three hold.
 */
#include "tinyattn_hal.h"

int main(void)
{
    ta_errors_t err;
    int failures = 0;

    ta_init();

    const ta_job_t bad_job = {.op = TINYATTN_OP_GEMM, .m = 0, .n = 16, .k = 16};
    ta_job_wait(ta_job_submit(&bad_job));
    ta_errors_read(&err);
    ta_printf("bad job: rejected %u, code %u\n", (unsigned)err.engine_rejected,
              (unsigned)err.engine_code);
    failures += !(err.engine_rejected && err.engine_code == TINYATTN_JOB_ERROR_ZERO_DIM);
    ta_errors_clear();

    const ta_dma_t bad_dma = {.l2_addr = 0, .l1_addr = TINYATTN_L1_BYTES - 64, .row_bytes = 64,
                              .rows = 2, .l2_stride = 64, .l1_stride = 64,
                              .direction = TINYATTN_DMA_DIRECTION_L2_TO_L1};
    ta_dma_wait(ta_dma_submit(&bad_dma));
    ta_errors_read(&err);
    ta_printf("bad transfer: code %u\n", (unsigned)err.dma_code);
    failures += err.dma_code != TINYATTN_DMA_ERROR_L1_RANGE;
    ta_errors_clear();

    /* 16x16x16 on whatever L1 holds: only the status matters here. */
    const ta_job_t good_job = {.op = TINYATTN_OP_GEMM, .m = 16, .n = 16, .k = 16,
                               .a_addr = 0, .a_stride = 16, .b_addr = 256, .b_stride = 16,
                               .c_addr = 512, .c_stride = 16, .p_addr = 768};
    ta_job_wait(ta_job_submit(&good_job));
    int bad = ta_errors_read(&err);
    ta_printf("good job after them: code %u\n", (unsigned)err.engine_code);
    failures += bad;
    return failures;
}
