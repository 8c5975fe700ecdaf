/*
 * fw_costs.c: the runtime's firmware costs, one call at a time, with ta_cycles() around it
 * (the calibration of tinyattn.sw.tiler.CostModel; tinyattn.sim.fw_costs runs it).
 *
 * The runtime is included, so its static helpers (dma, copy_from_l1, run_fill) are timed
 * as compiled there. Each item runs REPS times on an idle cluster and prints
 * "<name> <min> <max>" cycles, less the cost of an empty measurement. The engine ops are
 * the sequencer's (docs/sequencer.md); the core runs only the prologue's records.
 */
#include "../../sw/firmware/tinyattn_runtime.c"

#define REPS 4

static uint32_t scratch[44];
static uint32_t lo, hi, empty;

static void take(uint32_t c)
{
    c = c > empty ? c - empty : 0;
    if (c < lo)
        lo = c;
    if (c > hi)
        hi = c;
}

static void start(void)
{
    lo = ~0u, hi = 0;
}

static void show(const char *name)
{
    ta_printf("%s %u %u\n", name, (unsigned)lo, (unsigned)hi);
}

#define MEASURE(name, setup, body)       \
    do {                                 \
        start();                         \
        for (int rep = 0; rep < REPS; rep++) { \
            setup;                       \
            uint32_t t0 = ta_cycles();   \
            body;                        \
            take(ta_cycles() - t0);      \
            ta_dma_wait_all();           \
            ta_job_wait_all();           \
        }                                \
        show(name);                      \
    } while (0)

int main(void)
{
    volatile uint32_t sink = 0;

    ta_init();

    empty = 0;
    MEASURE("empty", , (void)0);
    empty = lo;

    MEASURE("dma_submit", , dma(LOAD, 0x10000, 0, 64, 1, 64, 64));
    MEASURE("dma_resubmit", , ta_dma_resubmit(0x10000, 0, 1));
    MEASURE("dma_wait_done", , dma_wait(ta_dma_last()));
    MEASURE("copy_record_176", , copy_from_l1(scratch, 0, 176));
    {
        static ta_record_t f;
        f.kind = TA_KIND_FILL, f.flags = 0, f.m = 1, f.n = 128;
        f.op[A].l1_addr = 0x100, f.op[C].l2_addr = 0x10000, f.op[C].l2_pitch = 128;
        MEASURE("run_fill_128", , run_fill(&f));
    }
    MEASURE("errors_read", , sink = ta_errors_read(&(ta_errors_t){0}));
    (void)sink;
    ta_printf("done\n");
    return 0;
}
