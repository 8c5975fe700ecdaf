/* tinyattn_hal.c: the logic of the HAL (see tinyattn_hal.h and docs/cluster.md). */
#include "tinyattn_hal.h"

/* The events the waits sleep on; ta_init enables these and nothing else. */
#define DONE_EVENTS \
    (TINYATTN_EVENTS_IRQ_STATUS_ENGINE_DONE_MASK | TINYATTN_EVENTS_IRQ_STATUS_DMA_DONE_MASK)
#define ERROR_EVENTS                                    \
    (TINYATTN_EVENTS_IRQ_STATUS_ENGINE_ERROR_MASK       \
     | TINYATTN_EVENTS_IRQ_STATUS_DMA_ERROR_MASK        \
     | TINYATTN_EVENTS_IRQ_STATUS_BUS_ERROR_MASK)

/* Tickets of the last job and the last descriptor pushed. */
static uint32_t jobs_pushed;
static uint32_t dma_pushed;

void ta_init(void)
{
    volatile void *regs = TA_REGS;
    uint32_t hash = tinyattn_cluster_config_hash_read(regs);
    uint32_t major = tinyattn_cluster_version_major_get(tinyattn_cluster_version_read(regs));

    if (hash != TINYATTN_CONFIG_HASH || major != TINYATTN_REGMAP_VERSION_MAJOR) {
        ta_printf("tinyattn: the hardware is configuration %08x (register map %u.x), "
                  "this firmware was built for %08x (%u.x)\n",
                  (unsigned)hash, (unsigned)major, (unsigned)TINYATTN_CONFIG_HASH,
                  (unsigned)TINYATTN_REGMAP_VERSION_MAJOR);
        ta_exit(TA_EXIT_CONFIG);
    }
    /* The done counters count from reset, not from this program's start. */
    jobs_pushed = tinyattn_engine_jobs_done_read(regs);
    dma_pushed = tinyattn_dma_done_count_read(regs);
    tinyattn_events_irq_enable_write(regs, DONE_EVENTS);
}

/*
 * Waits until ready(arg). With `sleep`, race-free on the level irq: clear the done
 * flags, test, and only then waitirq. An event after the clear sets its flag again,
 * so waitirq returns at once instead of missing it.
 */
static void wait_until(int (*ready)(uint32_t), uint32_t arg, int sleep)
{
    for (;;) {
        if (sleep)
            tinyattn_events_irq_status_write(TA_REGS, DONE_EVENTS);
        if (ready(arg))
            break;
        if (sleep)
            (void)ta_waitirq();
    }
    ta_barrier();
}

/* The queue-room rule: queued + pending push < depth (docs/cluster.md). */
static int job_room(uint32_t unused)
{
    uint32_t st = tinyattn_engine_status_read(TA_REGS);

    (void)unused;
    return tinyattn_engine_status_queued_get(st) + tinyattn_engine_status_push_pending_get(st)
           < TINYATTN_JOB_QUEUE_DEPTH;
}

static int dma_room(uint32_t unused)
{
    uint32_t st = tinyattn_dma_status_read(TA_REGS);

    (void)unused;
    return tinyattn_dma_status_queue_level_get(st) + tinyattn_dma_status_push_pending_get(st)
           < TINYATTN_DMA_QUEUE_DEPTH;
}

static int job_reached(uint32_t ticket)
{
    return ta_job_done(ticket);
}

static int dma_reached(uint32_t ticket)
{
    return ta_dma_done(ticket);
}

/* ---- Engine ------------------------------------------------------------------- */

void ta_job_stage(const ta_job_t *job)
{
    volatile void *regs = TA_REGS;

    /* Staging writes would be held while a push is pending: wait for room first. */
    wait_until(job_room, 0, 1);

    tinyattn_engine_job_op_write(regs,
                                 tinyattn_engine_job_op_pack(job->op, job->flags, job->heads));
    tinyattn_engine_job_m_write(regs, job->m);
    tinyattn_engine_job_n_write(regs, job->n);
    tinyattn_engine_job_k_write(regs, job->k);
    tinyattn_engine_job_a_addr_write(regs, job->a_addr);
    tinyattn_engine_job_a_stride_write(regs, job->a_stride);
    tinyattn_engine_job_b_addr_write(regs, job->b_addr);
    tinyattn_engine_job_b_stride_write(regs, job->b_stride);
    tinyattn_engine_job_c_addr_write(regs, job->c_addr);
    tinyattn_engine_job_c_stride_write(regs, job->c_stride);

    if (job->op == TINYATTN_OP_GEMM) {
        tinyattn_engine_job_p_addr_write(regs, job->p_addr);
        if (job->flags & TINYATTN_FLAG_RESIDUAL) {
            tinyattn_engine_job_d_addr_write(regs, job->d_addr);
            tinyattn_engine_job_d_stride_write(regs, job->d_stride);
            tinyattn_engine_job_res_write(regs,
                                          tinyattn_engine_job_res_pack(job->res_y_mult,
                                                                       job->res_r_mult,
                                                                       job->res_shift));
        }
        if (job->flags & TINYATTN_FLAG_AFFINE)
            tinyattn_engine_job_aff_write(regs, job->aff_shift);
    } else if (job->op == TINYATTN_OP_ATTENTION) {
        tinyattn_engine_job_d_addr_write(regs, job->d_addr);
        tinyattn_engine_job_d_stride_write(regs, job->d_stride);
        /* Head strides only move heads 1 and up; the engine ignores them otherwise. */
        if (job->heads > 1) {
            tinyattn_engine_job_a_hstride_write(regs, job->a_hstride);
            tinyattn_engine_job_b_hstride_write(regs, job->b_hstride);
            tinyattn_engine_job_c_hstride_write(regs, job->c_hstride);
            tinyattn_engine_job_d_hstride_write(regs, job->d_hstride);
        }
        if (job->flags & TINYATTN_ATTENTION_FLAG_PER_HEAD) {
            tinyattn_engine_job_p_addr_write(regs, job->p_addr); /* the head table */
        } else {
            /* ADD is the int8's bit pattern. */
            tinyattn_engine_job_qk_write(
                regs,
                tinyattn_engine_job_qk_pack(job->qk.mult, job->qk.shift, (uint8_t)job->qk.add));
            tinyattn_engine_job_av_write(
                regs,
                tinyattn_engine_job_av_pack(job->av.mult, job->av.shift, (uint8_t)job->av.add));
        }
    }
    /* Any other op is pushed as it is: the engine rejects it with UNKNOWN_OP. */
}

uint32_t ta_job_push(void)
{
    ta_barrier();
    tinyattn_engine_push(TA_REGS);
    return ++jobs_pushed;
}

uint32_t ta_job_submit(const ta_job_t *job)
{
    ta_job_stage(job);
    return ta_job_push();
}

void ta_job_wait(uint32_t ticket)
{
    wait_until(job_reached, ticket, 1);
}

void ta_job_wait_poll(uint32_t ticket)
{
    wait_until(job_reached, ticket, 0);
}

void ta_job_wait_all(void)
{
    ta_job_wait(jobs_pushed);
}

uint32_t ta_job_last(void)
{
    return jobs_pushed;
}

void ta_engine_clear(void)
{
    volatile void *regs = TA_REGS;

    tinyattn_engine_clear(regs);
    while (tinyattn_engine_status_busy_get(tinyattn_engine_status_read(regs))) {
    }
    /* Dropped jobs never finish: the tickets restart from the counter. */
    jobs_pushed = tinyattn_engine_jobs_done_read(regs);
    ta_barrier();
}

/* ---- DMA ---------------------------------------------------------------------- */

uint32_t ta_dma_submit(const ta_dma_t *dma)
{
    volatile void *regs = TA_REGS;

    wait_until(dma_room, 0, 1);
    /* All seven: the DMA checks every stride's alignment, even for a single row. */
    tinyattn_dma_l2_addr_write(regs, dma->l2_addr);
    tinyattn_dma_l1_addr_write(regs, dma->l1_addr);
    tinyattn_dma_row_bytes_write(regs, dma->row_bytes);
    tinyattn_dma_rows_write(regs, dma->rows);
    tinyattn_dma_l2_stride_write(regs, dma->l2_stride);
    tinyattn_dma_l1_stride_write(regs, dma->l1_stride);
    tinyattn_dma_direction_write(regs, dma->direction);
    tinyattn_dma_push(regs);
    return ++dma_pushed;
}

uint32_t ta_dma_resubmit(uint32_t l2_addr, uint32_t l1_addr, uint32_t rows)
{
    volatile void *regs = TA_REGS;

    tinyattn_dma_l2_addr_write(regs, l2_addr);
    tinyattn_dma_l1_addr_write(regs, l1_addr);
    tinyattn_dma_rows_write(regs, rows);
    tinyattn_dma_push(regs);
    return ++dma_pushed;
}

void ta_dma_wait(uint32_t ticket)
{
    wait_until(dma_reached, ticket, 1);
}

void ta_dma_wait_poll(uint32_t ticket)
{
    wait_until(dma_reached, ticket, 0);
}

void ta_dma_wait_all(void)
{
    ta_dma_wait(dma_pushed);
}

uint32_t ta_dma_last(void)
{
    return dma_pushed;
}

void ta_dma_clear(void)
{
    volatile void *regs = TA_REGS;

    tinyattn_dma_clear(regs);
    while (tinyattn_dma_status_busy_get(tinyattn_dma_status_read(regs))) {
    }
    dma_pushed = tinyattn_dma_done_count_read(regs);
    ta_barrier();
}

/* ---- Command sequencer -------------------------------------------------------- */

void ta_seq_start(uint32_t list, uint32_t jobs, uint32_t transfers)
{
    volatile void *regs = TA_REGS;

    tinyattn_seq_list_write(regs, list);
    tinyattn_seq_job_base_write(regs, jobs_pushed);
    tinyattn_seq_dma_base_write(regs, dma_pushed);
    tinyattn_events_irq_status_write(regs, TINYATTN_EVENTS_IRQ_STATUS_SEQ_DONE_MASK);
    tinyattn_seq_start(regs);
    jobs_pushed += jobs;
    dma_pushed += transfers;
}

static int seq_stopped(uint32_t unused)
{
    (void)unused;
    return !tinyattn_seq_status_busy_get(tinyattn_seq_status_read(TA_REGS));
}

uint32_t ta_seq_wait(void)
{
    volatile void *regs = TA_REGS;
    uint32_t enabled = tinyattn_events_irq_enable_read(regs);

    /*
     * Sleep on SEQ_DONE alone: waking on every job and transfer of the list would put
     * the core on the bus the sequencer shares with it. The flag was cleared at the
     * start, so a list that has already stopped leaves it set and waitirq returns.
     */
    tinyattn_events_irq_enable_write(regs, TINYATTN_EVENTS_IRQ_STATUS_SEQ_DONE_MASK);
    while (!seq_stopped(0))
        (void)ta_waitirq();
    tinyattn_events_irq_enable_write(regs, enabled);
    ta_barrier();
    return tinyattn_seq_status_error_get(tinyattn_seq_status_read(regs));
}

/* ---- Errors ------------------------------------------------------------------- */

int ta_errors_read(ta_errors_t *e)
{
    volatile void *regs = TA_REGS;
    uint32_t events = tinyattn_events_irq_status_read(regs);
    uint32_t dma = tinyattn_dma_status_read(regs);

    e->engine_rejected = tinyattn_events_irq_status_engine_error_get(events);
    e->engine_code = tinyattn_engine_status_error_code_get(tinyattn_engine_status_read(regs));
    e->dma_code = tinyattn_dma_status_error_get(dma) ? tinyattn_dma_status_error_code_get(dma) : 0u;
    e->bus = tinyattn_events_irq_status_bus_error_get(events);
    return e->engine_rejected || e->dma_code || e->bus;
}

void ta_errors_clear(void)
{
    tinyattn_dma_error_ack(TA_REGS);
    tinyattn_events_irq_status_write(TA_REGS, ERROR_EVENTS);
}
