/*
 * fw_costs.c: the runtime's firmware costs, one call at a time, with ta_cycles() around it
 * (the calibration of tinyattn.sw.tiler.CostModel; tinyattn.sim.fw_costs runs it).
 *
 * The runtime is included, so its static helpers (move_tile, load_input, next_tile,
 * stage_job, copy_from_l1) are timed as compiled there. Each item runs REPS times on an
 * idle cluster and prints "<name> <min> <max>" cycles, less the cost of an empty
 * measurement. The record is a GEMM of the fixture's shape (m 128, n 128, k 512, tiles
 * 48 x 64, M outer, cached Wt), placed in the bottom of L1.
 */
#include "../../sw/firmware/tinyattn_runtime.c"

#define REPS 4

static ta_record_t r;
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

static void set_operand(int key, uint32_t l2, uint32_t l1, uint32_t slot, uint32_t l2_pitch,
                        uint32_t l1_pitch, uint8_t mode)
{
    r.op[key].l2_addr = l2;
    r.op[key].l2_hstride = 0;
    r.op[key].l1_addr = l1;
    r.op[key].l1_slot = slot;
    r.op[key].l2_pitch = l2_pitch;
    r.op[key].l1_pitch = l1_pitch;
    r.op[key].mode = mode;
}

int main(void)
{
    buffer_t buf[5];
    tile_t t;
    volatile uint32_t sink = 0;

    ta_init();
    r.kind = TA_KIND_GEMM;
    r.flags = TINYATTN_FLAG_RESIDUAL;
    r.loop = 0;
    r.heads = 1;
    r.m = 128, r.n = 128, r.k = 512, r.tm = 48, r.tn = 64, r.tiles = 6;
    set_operand(A, 0x10000, 0x0000, 48 * 512, 512, 512, TA_MODE_DOUBLE);
    set_operand(B, 0x30000, 0xC000, 64 * 512, 512, 512, TA_MODE_CACHED);
    set_operand(C, 0x40000, 0x1C000, 48 * 64, 128, 64, TA_MODE_DOUBLE);
    set_operand(D, 0x50000, 0x1E000, 48 * 64, 128, 64, TA_MODE_DOUBLE);
    set_operand(P, 0x60000, 0x20000, 64 * 16, 16, 16, TA_MODE_CACHED);
    for (int k = 0; k < 5; k++) {
        buf[k].h = buf[k].i = buf[k].j = ~0u;
        buf[k].loaded = buf[k].slot = 0;
        buf[k].l1 = r.op[k].l1_addr;
        buf[k].deps = deps_of(&r, k);
    }
    t.h = t.i = t.j = 0, t.m0 = 48, t.n0 = 64, t.mr = 48, t.nc = 64;

    empty = 0;
    MEASURE("empty", , (void)0);
    empty = lo;

    MEASURE("dma_submit", , dma(LOAD, 0x10000, 0, 64, 1, 64, 64));
    MEASURE("move_tile_store", , move_tile(&r, C, &r.op[C], &t, r.op[C].l1_addr, STORE));
    MEASURE("move_tile_load_a", , move_tile(&r, A, &r.op[A], &t, r.op[A].l1_addr, LOAD));
    MEASURE("load_input_double", buf[A].i = ~0u, load_input(&r, A, &r.op[A], &buf[A], &t));
    MEASURE("load_input_cached", buf[B].j = ~0u; buf[B].loaded = 0,
            load_input(&r, B, &r.op[B], &buf[B], &t));
    MEASURE("load_input_same", , load_input(&r, A, &r.op[A], &buf[A], &t));
    MEASURE("load_inputs_none", , load_inputs(&r, buf, &t));
    MEASURE("next_tile", t.j = 0; t.n0 = 0; t.nc = 64, next_tile(&r, &t));
    t.i = 1, t.j = 1, t.m0 = 48, t.n0 = 64, t.mr = 48, t.nc = 64;
    MEASURE("stage_job", , stage_job(&r, buf, &t, r.op[C].l1_addr));
    MEASURE("stage_push", stage_job(&r, buf, &t, r.op[C].l1_addr), sink = ta_job_push());
    MEASURE("dma_wait_done", , dma_wait(ta_dma_last()));
    MEASURE("job_wait_done", , job_wait(ta_job_last()));
    MEASURE("copy_record_176", , copy_from_l1(scratch, 0, 176));
    {
        static ta_record_t f;
        f.kind = TA_KIND_FILL, f.flags = 0, f.m = 1, f.n = 128;
        f.op[A].l1_addr = 0x100, f.op[C].l2_addr = 0x10000, f.op[C].l2_pitch = 128;
        MEASURE("run_fill_128", , run_fill(&f));
    }
    /* run_op up to its tile-count check (a record whose tiles disagree): the checks, two
       divisions and two multiplies; then its initialisation of the five buffers. */
    MEASURE("run_op_checks", r.tiles = 7, sink = run_op(&r));
    r.tiles = 6;
    MEASURE("buffers_init", , for (int k = 0; k < 5; k++) {
        buf[k].h = buf[k].i = buf[k].j = ~0u;
        buf[k].loaded = buf[k].slot = 0;
        buf[k].l1 = r.op[k].l1_addr;
        buf[k].deps = deps_of(&r, k);
    });
    MEASURE("errors_read", , sink = ta_errors_read(&(ta_errors_t){0}));
    (void)sink;
    ta_printf("done\n");
    return 0;
}
