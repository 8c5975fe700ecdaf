/*
 * cluster_jobs.c: the cluster scenario as firmware.
 *
 * scenario.h (generated per seed by tinyattn.verif.firmware_scenarios) lists the DMA
 * transfers that bring the operands from L2, three engine jobs (GEMM, ATTENTION, GEMM)
 * and the transfers that take the results back. This program queues them with the HAL,
 * sleeps on the cluster's irq, checks the error flags and the MAC counter, and exits
 * with 0; the test compares L2 with the golden model. With -DSCN_REPEAT=n the jobs run
 * n times (they are independent, so the results stay the same): a longer run for the
 * benchmark.
 */
#include "scenario.h"

#ifndef SCN_REPEAT
#define SCN_REPEAT 1
#endif

int main(void)
{
    ta_errors_t err;
    uint32_t i;

    ta_init();

    for (i = 0; i < SCN_LOADS_COUNT; i++)
        ta_dma_submit(&scn_loads[i]);
    ta_dma_wait_all();
    if (ta_errors_read(&err)) {
        ta_printf("load: DMA error %u\n", (unsigned)err.dma_code);
        return 10;
    }

    uint64_t macs0 = ta_engine_macs();
    /* The submit cost: from deciding to submit to the job's JOB_PUSH write. */
    uint32_t t0 = ta_cycles();
    ta_job_submit(&scn_jobs[0]);
    uint32_t submit_cycles = ta_cycles() - t0;
    /* The others queue behind the first while it runs. */
    for (i = 1; i < SCN_JOBS_COUNT * SCN_REPEAT; i++)
        ta_job_submit(&scn_jobs[i % SCN_JOBS_COUNT]);
    ta_job_wait_all();
    if (ta_errors_read(&err)) {
        ta_printf("jobs: engine error %u (rejected %u)\n", (unsigned)err.engine_code,
                  (unsigned)err.engine_rejected);
        return 20;
    }
    uint64_t macs = ta_engine_macs() - macs0;

    for (i = 0; i < SCN_STORES_COUNT; i++)
        ta_dma_submit(&scn_stores[i]);
    ta_dma_wait_all();
    if (ta_errors_read(&err)) {
        ta_printf("store: DMA error %u\n", (unsigned)err.dma_code);
        return 30;
    }

    ta_printf("jobs %u, macs %u, submit %u cycles\n", (unsigned)(SCN_JOBS_COUNT * SCN_REPEAT),
              (unsigned)macs, (unsigned)submit_cycles);
    return macs == SCN_MACS * SCN_REPEAT ? 0 : 40;
}
