/* tinyattn_runtime.c: the schedule walker (see tinyattn_runtime.h and docs/deploy.md). */
#include "tinyattn_runtime.h"

/* Operand slots of a record. */
enum { A = 0, B = 1, C = 2, D = 3, P = 4 };
/* Loop indices an operand's tile depends on (tinyattn.sw.tiler.deps). */
enum { DEP_H = 1, DEP_M = 2, DEP_N = 4 };

static uint32_t transfers, jobs;

static uint32_t min_u32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

/* A word that may alias anything (GCC), so that copying words into a struct with 16-bit
   fields does not break C's aliasing rules, as a plain uint32_t pointer would. */
typedef uint32_t __attribute__((may_alias)) any_word_t;

/* Word loads from L1 after a DMA wait (the wait is a compiler barrier). */
static void copy_from_l1(void *dst, uint32_t l1_addr, uint32_t bytes)
{
    const volatile uint32_t *src = TA_L1(l1_addr);
    any_word_t *out = dst;

    for (uint32_t i = 0; i < bytes / 4; i++)
        out[i] = src[i];
}

static uint32_t dma(uint32_t dir, uint32_t l2, uint32_t l1, uint32_t bytes, uint32_t rows,
                    uint32_t l2_stride, uint32_t l1_stride)
{
    const ta_dma_t d = {l2, l1, bytes, rows, l2_stride, l1_stride, dir};

    transfers++;
    return ta_dma_submit(&d);
}

/* Waits whose ticket is often done already: one counter read then, instead of the HAL's
   clear-and-test of the done flags. */
static void dma_wait(uint32_t ticket)
{
    if (!ta_dma_done(ticket))
        ta_dma_wait(ticket);
}

static void job_wait(uint32_t ticket)
{
    if (!ta_job_done(ticket))
        ta_job_wait(ticket);
}

#define LOAD TINYATTN_DMA_DIRECTION_L2_TO_L1
#define STORE TINYATTN_DMA_DIRECTION_L1_TO_L2

/* ---- GEMM and ATTENTION: the tile loop (tinyattn.sw.tiler.op_actions) ------------------- */

/*
 * One job's place in the loop nest: the indices (head, tile of M, tile of N) and the rows
 * of M and columns of N it covers, kept up to date by next_tile with additions only
 * (PicoRV32 spends some 40 cycles on a MUL and the loop runs once per job).
 */
typedef struct {
    uint32_t h, i, j;
    uint32_t m0, mr, n0, nc;
} tile_t;

/* Per input: the indices of its tile last loaded, loads so far, its current slot and
   that slot's L1 address. */
typedef struct {
    uint32_t h, i, j;
    uint32_t loaded, slot, l1;
    uint8_t deps;
} buffer_t;

static uint8_t deps_of(const ta_record_t *r, int key)
{
    static const uint8_t gemm[5] = {DEP_M, DEP_N, DEP_M | DEP_N, DEP_M | DEP_N, DEP_N};
    static const uint8_t attention[5] = {DEP_H | DEP_M, DEP_H, DEP_H | DEP_M, DEP_H, 0};

    if (r->kind == TA_KIND_ATTENTION)
        return attention[key];
    if (key == P && (r->flags & TINYATTN_FLAG_PER_ROW))
        return DEP_M;
    return gemm[key];
}

/*
 * Copies operand `key` (= r->op[key], passed as `o` so that callers index with constants:
 * GCC multiplies by the struct size otherwise) between its L2 tensor and L1
 * (tiler._rect and _transfer).
 */
static void move_tile(const ta_record_t *r, int key, const ta_operand_t *o, const tile_t *t,
                      uint32_t l1, uint32_t dir)
{
    uint32_t row0 = t->m0, rows = t->mr, col0 = 0, bytes = r->k;

    if (r->kind == TA_KIND_ATTENTION) {
        if (key == B || key == D) /* the head's whole K (n x k) or V^T (k x n) */
            row0 = 0, rows = key == B ? r->n : r->k, bytes = key == B ? r->k : r->n;
    } else if (key == B) {
        row0 = t->n0, rows = t->nc;
    } else if (key == P) {
        if (!(r->flags & TINYATTN_FLAG_PER_ROW))
            row0 = t->n0, rows = t->nc;
        bytes = 16;
    } else if (key == C || key == D) {
        col0 = t->n0, bytes = t->nc;
    }
    dma(dir, o->l2_addr + (t->h ? t->h * o->l2_hstride : 0) + row0 * o->l2_pitch + col0, l1,
        bytes, rows, o->l2_pitch, o->l1_pitch);
}

/* Loads input `key` if its tile changes at this job, into its next slot. */
static void load_input(const ta_record_t *r, int key, const ta_operand_t *o, buffer_t *b,
                       const tile_t *t)
{
    uint32_t h = b->deps & DEP_H ? t->h : 0, i = b->deps & DEP_M ? t->i : 0,
             j = b->deps & DEP_N ? t->j : 0;

    if (o->mode == TA_MODE_UNUSED || (h == b->h && i == b->i && j == b->j))
        return;
    b->h = h, b->i = i, b->j = j;
    if (o->mode == TA_MODE_CACHED) {
        /* One slot per tile of the inner index, filled in order on the first pass. */
        b->slot = b->deps & DEP_N ? j : i;
        b->l1 = o->l1_addr + b->slot * o->l1_slot;
        if (b->slot < b->loaded)
            return;
    } else if (o->mode == TA_MODE_DOUBLE) {
        b->slot = b->loaded & 1;
        b->l1 = o->l1_addr + (b->slot ? o->l1_slot : 0);
    }
    b->loaded++;
    move_tile(r, key, o, t, b->l1, LOAD);
}

/* tiler's loads(t): the inputs in the order a, b, d, p. */
static void load_inputs(const ta_record_t *r, buffer_t buf[5], const tile_t *t)
{
    load_input(r, A, &r->op[A], &buf[A], t);
    load_input(r, B, &r->op[B], &buf[B], t);
    load_input(r, D, &r->op[D], &buf[D], t);
    load_input(r, P, &r->op[P], &buf[P], t);
}

/* Writes the registers of the job of tile `t`, its inputs in their current slots. */
static void stage_job(const ta_record_t *r, const buffer_t buf[5], const tile_t *t, uint32_t c_l1)
{
    /* Static, and every field the HAL writes for this op set below: `= {0}` on the stack
       costs a byte-wise memset per job. */
    static ta_job_t job;
    const uint8_t *f = r->fields[t->h];

    job.m = t->mr;
    job.n = t->nc;
    job.k = r->k;
    job.heads = 1;
    job.a_addr = buf[A].l1;
    job.a_stride = r->op[A].l1_pitch;
    job.b_addr = buf[B].l1;
    job.b_stride = r->op[B].l1_pitch;
    job.c_addr = c_l1;
    job.c_stride = r->op[C].l1_pitch;
    job.d_addr = buf[D].l1;
    job.d_stride = r->op[D].l1_pitch;
    if (r->kind == TA_KIND_ATTENTION) {
        job.op = TINYATTN_OP_ATTENTION;
        job.flags = 0;
        job.qk = (ta_requant_t){f[0], f[1], (int8_t)f[2]};
        job.av = (ta_requant_t){f[3], f[4], (int8_t)f[5]};
    } else {
        job.op = TINYATTN_OP_GEMM;
        job.flags = r->flags;
        job.p_addr = buf[P].l1;
        job.res_y_mult = f[0];
        job.res_r_mult = f[1];
        job.res_shift = f[2];
        job.aff_shift = f[3];
    }
    ta_job_stage(&job);
}

/* The next job of the loop nest: head outermost, then M and N in the record's order. */
static void next_tile(const ta_record_t *r, tile_t *t)
{
    int n_inner = !(r->loop & 1); /* order 0: M outer, N inner */
    int last_m = t->m0 + t->mr >= r->m, last_n = t->n0 + t->nc >= r->n;

    if (n_inner ? !last_n : !last_m) {
        if (n_inner)
            t->j++, t->n0 += r->tn;
        else
            t->i++, t->m0 += r->tm;
    } else {
        if (n_inner)
            t->j = t->n0 = 0;
        else
            t->i = t->m0 = 0;
        if (n_inner ? !last_m : !last_n) {
            if (n_inner)
                t->i++, t->m0 += r->tm;
            else
                t->j++, t->n0 += r->tn;
        } else {
            t->i = t->j = t->m0 = t->n0 = 0;
            t->h++;
        }
    }
    t->mr = min_u32(r->tm, r->m - t->m0);
    t->nc = min_u32(r->tn, r->n - t->n0);
}

static int run_op(const ta_record_t *r)
{
    uint32_t tiles_m, tiles_n, count, ticket = 0;
    buffer_t buf[5];
    tile_t t, prev; /* no initializers or copies: GCC would call byte-wise memset, memcpy */
    const ta_operand_t *c = &r->op[C];
    uint32_t prev_l1 = c->l1_addr;

    if (r->tm == 0 || r->tn == 0 || r->heads == 0 || r->heads > TA_MAX_HEADS
        || (r->kind == TA_KIND_ATTENTION && r->tn != r->n))
        return TA_RUN_BAD_RECORD;
    tiles_m = (r->m + r->tm - 1) / r->tm;
    tiles_n = (r->n + r->tn - 1) / r->tn;
    count = r->heads * tiles_m * tiles_n;
    if (count != r->tiles)
        return TA_RUN_BAD_RECORD;
    for (int k = 0; k < 5; k++) {
        /* Nothing loaded yet. (Field by field: GCC would call a byte-wise memcpy.) */
        buf[k].h = buf[k].i = buf[k].j = ~0u;
        buf[k].loaded = buf[k].slot = 0;
        buf[k].l1 = r->op[k].l1_addr;
        buf[k].deps = deps_of(r, k);
    }
    t.h = t.i = t.j = t.m0 = t.n0 = 0;
    t.mr = min_u32(r->tm, r->m);
    t.nc = min_u32(r->tn, r->n);
    load_inputs(r, buf, &t);
    for (uint32_t n = 0; n < count; n++) {
        /* Job n writes its output to slot n mod 2 (DOUBLE) or to the one slot. */
        uint32_t c_l1 = c->l1_addr + (c->mode == TA_MODE_DOUBLE && (n & 1) ? c->l1_slot : 0);

        /* Registers first, while the tiles are on their way; push once they are in. */
        stage_job(r, buf, &t, c_l1);
        dma_wait(ta_dma_last());
        ticket = ta_job_push();
        jobs++;
        if (n > 0) {
            job_wait(ticket - 1);
            move_tile(r, C, c, &prev, prev_l1, STORE);
        }
        prev.h = t.h, prev.m0 = t.m0, prev.mr = t.mr, prev.n0 = t.n0, prev.nc = t.nc;
        prev_l1 = c_l1;
        if (n + 1 < count) {
            next_tile(r, &t);
            load_inputs(r, buf, &t); /* overlaps job n */
        }
    }
    job_wait(ticket);
    move_tile(r, C, c, &prev, prev_l1, STORE);
    dma_wait(ta_dma_last());
    return TA_RUN_OK;
}

/* ---- GATHER and FILL ----------------------------------------------------------------- */

/*
 * Table rows indexed by ids in L2 go to up to three destinations (gather_body in
 * tinyattn.sw.schedule): the ids are fetched into L1, then per chunk of `tm` staging rows
 * each run of consecutive table rows is one load and each write one store. The DMA runs
 * in order, so a chunk's loads never pass the previous chunk's stores.
 */
static uint32_t table_row(const ta_record_t *r, const volatile int32_t *index, uint32_t q)
{
    /* index_pitch * id, plus the position with add_position (flags bit 0) */
    uint32_t id = (uint32_t)index[q];

    /* PicoRV32 multiplies bit by bit, even by 1 (the word tables) */
    return (r->tn == 1 ? id : r->tn * id) + ((r->flags & 1) ? r->k + q : 0);
}

static int run_gather(const ta_record_t *r)
{
    const ta_operand_t *table = &r->op[A], *ids = &r->op[B];
    const volatile int32_t *index = TA_L1(ids->l1_addr);
    uint32_t limit = r->tn ? table->l2_hstride / r->tn : 0;

    if (r->tm == 0 || r->loop > 3)
        return TA_RUN_BAD_RECORD;
    dma_wait(dma(LOAD, ids->l2_addr, ids->l1_addr, 4u * r->m, 1, 4, 4));
    for (uint32_t q = 0; q < r->m; q++)
        if ((uint32_t)index[q] >= limit)
            return TA_RUN_BAD_INDEX;

    for (uint32_t c0 = 0; c0 < r->m; c0 += r->tm) {
        uint32_t c1 = min_u32(r->m, c0 + r->tm);

        /* Each id is read once: the row that ends a run starts the next one. */
        uint32_t row = table_row(r, index, c0);

        uint32_t l1 = table->l1_addr; /* staging row of position q */

        for (uint32_t q = c0; q < c1;) {
            uint32_t end = q + 1, next = 0, l1_end = l1 + table->l1_pitch;

            while (end < c1 && (next = table_row(r, index, end)) == row + (end - q))
                end++, l1_end += table->l1_pitch;
            dma(LOAD, table->l2_addr + row * table->l2_pitch, l1, r->n, end - q,
                table->l2_pitch, table->l1_pitch);
            q = end;
            row = next;
            l1 = l1_end;
        }
        for (uint32_t w = 0; w < r->loop; w++) {
            const ta_operand_t *o = &r->op[C + w];
            /* Positions relative to r->k: the write covers [first, first + l1_slot). */
            uint32_t first = o->l2_hstride - r->k;
            uint32_t lo = c0 > first ? c0 : first, hi = min_u32(c1, first + o->l1_slot);

            if (lo < hi)
                dma(STORE, o->l2_addr + (lo - first) * o->l2_pitch,
                    table->l1_addr + (lo - c0) * table->l1_pitch, r->n, hi - lo, o->l2_pitch,
                    table->l1_pitch);
        }
    }
    dma_wait(ta_dma_last());
    return TA_RUN_OK;
}

/* One row of the byte value written by the core, broadcast by a DMA with L1 stride 0. */
static int run_fill(const ta_record_t *r)
{
    volatile uint32_t *row = TA_L1(r->op[A].l1_addr);
    uint32_t word = r->flags * 0x01010101u;

    for (uint32_t i = 0; i < r->n / 4u; i++)
        row[i] = word;
    dma_wait(dma(STORE, r->op[C].l2_addr, r->op[A].l1_addr, r->n, r->m, r->op[C].l2_pitch, 0));
    return TA_RUN_OK;
}

/* ---- The schedule ------------------------------------------------------------------------ */

int ta_run_schedule(uint32_t l2_header_addr, ta_run_t *run)
{
    static ta_record_t rec; /* .bss: the stack stays small */
    ta_schedule_header_t hdr = {0};
    /* The header goes where the records will: the top of L1, which no op's arena uses. */
    const uint32_t l1_header = TINYATTN_L1_BYTES - TA_SCHEDULE_HEADER_BYTES;

    transfers = jobs = 0;
    run->records = run->failed_record = 0;
    ta_errors_clear();
    dma_wait(dma(LOAD, l2_header_addr, l1_header, TA_SCHEDULE_HEADER_BYTES, 1,
                    TA_SCHEDULE_HEADER_BYTES, TA_SCHEDULE_HEADER_BYTES));
    copy_from_l1(&hdr, l1_header, sizeof hdr);
    if (hdr.magic != TA_SCHEDULE_MAGIC || hdr.version != TA_SCHEDULE_VERSION
        || hdr.record_bytes > sizeof rec || hdr.record_bytes < 16 + sizeof rec.op
        || hdr.record_bytes % 16)
        return TA_RUN_BAD_HEADER;

    int status = TA_RUN_OK;
    for (uint32_t i = 0; i < hdr.record_count && status == TA_RUN_OK; i++) {
        uint32_t t0 = ta_cycles();

        run->failed_record = i;
        dma_wait(dma(LOAD, hdr.records_addr + i * hdr.record_bytes, hdr.l1_record_addr,
                        hdr.record_bytes, 1, hdr.record_bytes, hdr.record_bytes));
        copy_from_l1(&rec, hdr.l1_record_addr, hdr.record_bytes);
        switch (rec.kind) {
        case TA_KIND_GEMM:
        case TA_KIND_ATTENTION:
            status = run_op(&rec);
            break;
        case TA_KIND_GATHER:
            status = run_gather(&rec);
            break;
        case TA_KIND_FILL:
            status = run_fill(&rec);
            break;
        default:
            status = TA_RUN_BAD_RECORD;
        }
        /* Rejected jobs and descriptors still count as done: look for them here. */
        if (status == TA_RUN_OK && ta_errors_read(&run->errors))
            status = TA_RUN_HW_ERROR;
        if (status == TA_RUN_OK) {
            run->records = i + 1;
            if (run->on_record)
                run->on_record(i, rec.kind, ta_cycles() - t0);
        }
    }
    run->jobs = jobs;
    run->transfers = transfers;
    return status;
}
