/*
 * seq_jobs.c: the cluster scenario run by the command sequencer.
 *
 * seq_scenario.h (generated per seed by tinyattn.verif.firmware_scenarios) says where
 * two command lists sit in L2. The good one loads the operands, runs GEMM, ATTENTION
 * and GEMM and stores the results; the bad one pushes a DMA descriptor beyond L1 and
 * must stop with HW_ERROR before its HOST_EXIT write. The core only copies the lists
 * into L1, starts them and sleeps; the test compares L2 with the golden model.
 */
#include "seq_scenario.h"
#include "tinyattn_hal.h"

int main(void)
{
    ta_errors_t err;
    ta_dma_t lists = {
        .l2_addr = SEQ_LISTS_L2,
        .l1_addr = SEQ_GOOD_L1,
        .row_bytes = SEQ_LISTS_BYTES,
        .rows = 1,
        .l2_stride = SEQ_LISTS_BYTES,
        .l1_stride = SEQ_LISTS_BYTES,
        .direction = TINYATTN_DMA_DIRECTION_L2_TO_L1,
    };

    ta_init();
    ta_dma_submit(&lists);
    ta_dma_wait_all();

    uint64_t macs0 = ta_engine_macs();
    uint32_t t0 = ta_cycles();
    ta_seq_start(SEQ_GOOD_L1, SEQ_GOOD_JOBS, SEQ_GOOD_TRANSFERS);
    uint32_t code = ta_seq_wait();
    uint32_t cycles = ta_cycles() - t0;
    uint64_t macs = ta_engine_macs() - macs0;
    if (code != TINYATTN_SEQ_ERROR_NONE || ta_errors_read(&err)) {
        ta_printf("good list: error %u at %x\n", (unsigned)code, (unsigned)ta_seq_pc());
        return 10;
    }
    /* The HAL's tickets moved past the list's work: these return at once. */
    ta_job_wait_all();
    ta_dma_wait_all();
    ta_printf("good list: %u cycles, macs %u\n", (unsigned)cycles, (unsigned)macs);

    ta_seq_start(SEQ_BAD_L1, 0, 1);
    code = ta_seq_wait();
    ta_printf("bad list: error %u at %x\n", (unsigned)code, (unsigned)ta_seq_pc());
    if (code != TINYATTN_SEQ_ERROR_HW_ERROR)
        return 20;
    ta_dma_clear();
    ta_errors_clear();
    return macs == SEQ_MACS ? 0 : 30;
}
