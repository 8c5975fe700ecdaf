/* tinyattn_runtime.c: the schedule walker (see tinyattn_runtime.h and docs/deploy.md). */
#include <stddef.h>

#include "tinyattn_runtime.h"

/* Operand slots of a record. */
enum { A = 0, B = 1, C = 2, D = 3, P = 4 };

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

#define LOAD TINYATTN_DMA_DIRECTION_L2_TO_L1
#define STORE TINYATTN_DMA_DIRECTION_L1_TO_L2

/* ---- GATHER and FILL ----------------------------------------------------------------- */

/*
 * Table rows indexed by ids in L2 go to up to three destinations (gather_body in
 * tinyattn.sw.schedule): the ids are fetched into L1, then per chunk of `tm` staging rows
 * each run of consecutive table rows is one load and each write one store. The DMA runs
 * in order, so a chunk's loads never pass the previous chunk's stores.
 *
 * This loop is the prologue's critical path on the core (a position costs tens of
 * cycles), so the record's fields sit in locals (the DMA's register writes are volatile
 * and would make the compiler reload them), each id is read and checked once, and a run's
 * load takes the few register writes of ta_dma_resubmit. A bad id stops the gather after
 * the loads pushed so far are done, before any row it would index.
 */
static int run_gather(const ta_record_t *r)
{
    const ta_operand_t *table = &r->op[A], *ids = &r->op[B];
    const volatile int32_t *index = TA_L1(ids->l1_addr);
    const uint32_t m = r->m, tm = r->tm, row_bytes = r->n, pitch = r->tn;
    const uint32_t limit = pitch ? table->l2_hstride / pitch : 0;
    /* index_pitch * id, plus the position with add_position (flags bit 0) */
    const uint32_t positions = (r->flags & 1) ? r->k : 0, per_position = r->flags & 1;
    const uint32_t l2_table = table->l2_addr, l2_pitch = table->l2_pitch;
    const uint32_t l1_stage = table->l1_addr, l1_pitch = table->l1_pitch;

    if (tm == 0 || r->loop > 3)
        return TA_RUN_BAD_RECORD;
    dma_wait(dma(LOAD, ids->l2_addr, ids->l1_addr, 4u * m, 1, 4, 4));

    for (uint32_t c0 = 0; c0 < m; c0 += tm) {
        uint32_t c1 = min_u32(m, c0 + tm);
        uint32_t l1 = l1_stage; /* staging row of position q */
        uint32_t id = (uint32_t)index[c0];

        if (id >= limit)
            goto bad_index;
        /* Each id is read once: the row that ends a run starts the next one. */
        uint32_t row = pitch * id + positions + per_position * c0;

        for (uint32_t q = c0; q < c1;) {
            uint32_t end = q + 1, next = 0;

            while (end < c1) {
                id = (uint32_t)index[end];
                if (id >= limit)
                    goto bad_index;
                next = pitch * id + positions + per_position * end;
                if (next != row + (end - q))
                    break;
                end++;
            }
            uint32_t l2 = l2_table + row * l2_pitch;
            /* The chunk's loads differ only in their addresses and rows. */
            if (q == c0)
                dma(LOAD, l2, l1, row_bytes, end - q, l2_pitch, l1_pitch);
            else
                transfers++, ta_dma_resubmit(l2, l1, end - q);
            l1 += (end - q) * l1_pitch;
            q = end;
            row = next;
        }
        for (uint32_t w = 0; w < r->loop; w++) {
            const ta_operand_t *o = &r->op[C + w];
            /* Positions relative to r->k: the write covers [first, first + l1_slot). */
            uint32_t first = o->l2_hstride - r->k;
            uint32_t lo = c0 > first ? c0 : first, hi = min_u32(c1, first + o->l1_slot);

            if (lo < hi)
                dma(STORE, o->l2_addr + (lo - first) * o->l2_pitch,
                    l1_stage + (lo - c0) * l1_pitch, row_bytes, hi - lo, o->l2_pitch, l1_pitch);
        }
    }
    dma_wait(ta_dma_last());
    return TA_RUN_OK;

bad_index:
    dma_wait(ta_dma_last());
    return TA_RUN_BAD_INDEX;
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

/* ---- The engine ops: the command stream ------------------------------------------------ */

/*
 * Loads the first chunk (each chunk loads the next one itself), starts the sequencer with
 * the HAL's tickets as its bases, and sleeps until it stops.
 */
static int run_stream(const ta_schedule_header_t *hdr, ta_run_t *run)
{
    uint32_t t0 = ta_cycles();

    run->failed_record = hdr->record_count;
    dma_wait(dma(LOAD, hdr->stream_addr, hdr->l1_stream_addr, hdr->chunk_bytes, 1,
                 hdr->chunk_bytes, hdr->chunk_bytes));
    ta_seq_start(hdr->l1_stream_addr, hdr->stream_jobs, hdr->stream_transfers);
    run->seq_error = ta_seq_wait();
    run->stream_cycles = ta_cycles() - t0;
    run->seq_pc = ta_seq_pc();
    if (run->seq_error != TINYATTN_SEQ_ERROR_NONE) {
        (void)ta_errors_read(&run->errors);
        return TA_RUN_SEQ_ERROR;
    }
    jobs += hdr->stream_jobs;
    transfers += hdr->stream_transfers;
    if (ta_errors_read(&run->errors))
        return TA_RUN_HW_ERROR;
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
        /* Gathers and fills use no head fields: copying them would cost 27 cycles a word. */
        copy_from_l1(&rec, hdr.l1_record_addr, offsetof(ta_record_t, fields));
        switch (rec.kind) {
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
    if (status == TA_RUN_OK && hdr.stream_chunks)
        status = run_stream(&hdr, run);
    run->jobs = jobs;
    run->transfers = transfers;
    return status;
}
