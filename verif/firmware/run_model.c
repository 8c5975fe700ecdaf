/*
 * run_model.c: runs the deployed model whose schedule image is at L2 address 0
 * (tinyattn.sim.model_run writes it, with the input ids, before the run).
 *
 * Prints one line per prologue record, "r<index> <cycles>", one for the command stream of
 * the engine ops, "stream <cycles>" (its per-op cycles are the STAMPs it leaves in L2),
 * then a summary:
 * "model: <records> records, <jobs> jobs, <transfers> transfers, <cycles> cycles".
 * Exits with 0, or 0x100 + the TA_RUN_* code after naming the record that failed.
 * -DRUN_MODEL_QUIET drops the per-record lines.
 */
#include "tinyattn_runtime.h"

#ifndef RUN_MODEL_QUIET
static void print_record(uint32_t index, uint32_t kind, uint32_t cycles)
{
    (void)kind;
    ta_printf("r%u %u\n", (unsigned)index, (unsigned)cycles);
}
#endif

int main(void)
{
    ta_run_t run = {0};

    ta_init();
#ifndef RUN_MODEL_QUIET
    run.on_record = print_record;
#endif
    uint32_t t0 = ta_cycles();
    int status = ta_run_schedule(0, &run);
    uint32_t cycles = ta_cycles() - t0;

    if (status != TA_RUN_OK) {
        ta_printf("record %u failed: status %d, engine rejected %u (code %u), dma code %u, "
                  "bus %u, sequencer %u at %x\n",
                  (unsigned)run.failed_record, status, (unsigned)run.errors.engine_rejected,
                  (unsigned)run.errors.engine_code, (unsigned)run.errors.dma_code,
                  (unsigned)run.errors.bus, (unsigned)run.seq_error, (unsigned)run.seq_pc);
        return 0x100 + status;
    }
    ta_printf("stream %u\n", (unsigned)run.stream_cycles);
    ta_printf("model: %u records, %u jobs, %u transfers, %u cycles\n", (unsigned)run.records,
              (unsigned)run.jobs, (unsigned)run.transfers, (unsigned)cycles);
    return 0;
}
