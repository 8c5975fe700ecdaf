/*
 * tinyattn_hal.h: firmware HAL of the tinyattn cluster (prefix ta_).
 *
 * Offsets, fields and constants come from the generated tinyattn_regs.h. This file
 * adds what the registers leave to firmware: the queue-room rule before a push,
 * completion tickets, sleeping on the cluster's irq, errors and counters.
 *
 * - One core (core 0) drives the engine and the DMA. The HAL owns EVENTS_IRQ_ENABLE.
 * - Call ta_init() first, with the engine and the DMA idle (as after reset): it stops
 *   the run (TA_EXIT_CONFIG) when the hardware is not the configuration this firmware
 *   was generated for.
 * - Submissions return a ticket: the value the done counter (ENGINE_JOBS_DONE,
 *   DMA_DONE_COUNT) reaches when that job or transfer has finished. A ticket is done
 *   when every earlier one is, so "all but the last two" is ta_job_wait(t - 2).
 * - Waits are compiler barriers: after one, plain loads see what the DMA and the engine
 *   wrote, and a submission happens after the stores written before it.
 *
 * Host builds (tests against fake registers) define TINYATTN_REG_READ/WRITE before
 * tinyattn_regs.h and provide ta_waitirq(), ta_cycles() and ta_cycles64().
 */
#ifndef TINYATTN_HAL_H
#define TINYATTN_HAL_H

#include <stdint.h>

#include "tinyattn_console.h"
#include "tinyattn_regs.h"

/* L1 byte `offset` as a core pointer; jobs and DMA descriptors take the offsets. */
#define TA_L1(offset) ((void *)(uintptr_t)(TINYATTN_L1_BASE + (uint32_t)(offset)))

/* ---- Core: cycles and sleeping ---------------------------------------------------- */

#if defined(__riscv)
/*
 * PicoRV32's waitirq (custom-0, funct3 4, funct7 4): sleeps until an IRQ is pending,
 * masked or not, and returns the pending mask. The cluster's irq is IRQ 3, a level:
 * it stays pending while an enabled EVENTS_IRQ_STATUS flag is set.
 */
static inline uint32_t ta_waitirq(void)
{
    uint32_t pending;
    __asm__ volatile(".insn r 0x0B, 4, 4, %0, x0, x0" : "=r"(pending) : : "memory");
    return pending;
}

/* Clock cycles since reset, modulo 2^32: differences of two readings are exact. */
static inline uint32_t ta_cycles(void)
{
    uint32_t lo;
    __asm__ volatile("rdcycle %0" : "=r"(lo));
    return lo;
}

static inline uint64_t ta_cycles64(void)
{
    uint32_t hi, lo, again;
    do { /* read again when the low word wrapped between the two reads */
        __asm__ volatile("rdcycleh %0" : "=r"(hi));
        __asm__ volatile("rdcycle %0" : "=r"(lo));
        __asm__ volatile("rdcycleh %0" : "=r"(again));
    } while (hi != again);
    return (uint64_t)hi << 32 | lo;
}
#else
uint32_t ta_waitirq(void);
uint32_t ta_cycles(void);
uint64_t ta_cycles64(void);
#endif

/* Keeps the compiler from moving memory accesses across MMIO that starts or ends work. */
static inline void ta_barrier(void)
{
    __asm__ volatile("" : : : "memory");
}

/* ---- Start-up ----------------------------------------------------------------- */

/*
 * Checks CLUSTER_CONFIG_HASH and the map's major version against tinyattn_regs.h
 * (prints both and exits with TA_EXIT_CONFIG on a mismatch), takes the done counters
 * as the starting tickets and enables the done events that the waits sleep on.
 */
void ta_init(void);

/* ---- Engine jobs -------------------------------------------------------------- */

/* Requantization: y = sat8(floor(mult * acc / 2**shift + 1/2) + add). */
typedef struct {
    uint8_t mult;
    uint8_t shift; /* 0..31 */
    int8_t add;
} ta_requant_t;

/*
 * ATTENTION flag (hw/job.py FLAG_PER_HEAD; it reuses the bit of TINYATTN_FLAG_PER_ROW):
 * head h's qk/av come from record h of the table at p_addr (16 bytes a head, qk in
 * word 0 and av in word 1, each mult [7:0], shift [12:8], add [23:16]), not from the job.
 */
#define TINYATTN_ATTENTION_FLAG_PER_HEAD 8u

/*
 * An engine job: the ENGINE_JOB_* staging registers field by field, named as in
 * hw/job.py (Job). Addresses are L1 offsets, strides in bytes. Only the registers the
 * job uses are written; the others keep older values, which the engine ignores.
 */
typedef struct {
    uint8_t op;    /* TINYATTN_OP_GEMM or TINYATTN_OP_ATTENTION */
    uint8_t flags; /* TINYATTN_FLAG_* (GEMM), TINYATTN_ATTENTION_FLAG_PER_HEAD */
    uint8_t heads; /* attention heads */
    uint32_t m, n, k;
    uint32_t a_addr, a_stride, a_hstride; /* X (GEMM) / Q */
    uint32_t b_addr, b_stride, b_hstride; /* W^T (GEMM) / K */
    uint32_t c_addr, c_stride, c_hstride; /* Y (GEMM) / O */
    uint32_t d_addr, d_stride, d_hstride; /* R, the residual (GEMM) / V^T */
    uint32_t p_addr;     /* GEMM parameter records; attention head table (PER_HEAD) */
    ta_requant_t qk, av; /* attention without PER_HEAD */
    uint8_t res_y_mult, res_r_mult, res_shift; /* GEMM with TINYATTN_FLAG_RESIDUAL */
    uint8_t aff_shift;                         /* GEMM with TINYATTN_FLAG_AFFINE */
} ta_job_t;

/* Waits for room in the job queue, writes the job, pushes it; returns its ticket. */
uint32_t ta_job_submit(const ta_job_t *job);

/*
 * ta_job_submit in two halves, so that the registers are written while the job's tiles
 * are still on their way: ta_job_stage waits for room in the queue and writes the staging
 * registers; ta_job_push pushes them and returns the ticket. Nothing else may stage or
 * push in between (there is one set of staging registers).
 */
void ta_job_stage(const ta_job_t *job);
uint32_t ta_job_push(void);

/* Has the job with this ticket (and every earlier one) finished? Never waits. */
static inline int ta_job_done(uint32_t ticket)
{
    return tinyattn_engine_jobs_done_read(TA_REGS) - ticket < 0x80000000u;
}

void ta_job_wait(uint32_t ticket);      /* sleeps on irq (waitirq) */
void ta_job_wait_poll(uint32_t ticket); /* polls ENGINE_JOBS_DONE, never sleeps */
void ta_job_wait_all(void);
uint32_t ta_job_last(void); /* ticket of the last job submitted */

/* Soft clear: drops queued jobs, the running one and a pending push; waits for idle. */
void ta_engine_clear(void);

/* ---- DMA ---------------------------------------------------------------------- */

/* A 2-D copy: `rows` rows of `row_bytes`, strides in bytes; all multiples of 4. */
typedef struct {
    uint32_t l2_addr;   /* L2 byte address of row 0 */
    uint32_t l1_addr;   /* L1 offset of row 0 */
    uint32_t row_bytes;
    uint32_t rows;
    uint32_t l2_stride;
    uint32_t l1_stride;
    uint32_t direction; /* TINYATTN_DMA_DIRECTION_L2_TO_L1 or _L1_TO_L2 */
} ta_dma_t;

/* Waits for room in the DMA queue, writes the descriptor, pushes it; returns its ticket. */
uint32_t ta_dma_submit(const ta_dma_t *dma);
/*
 * Pushes the descriptor submitted last with a new L2 address, L1 address and row count
 * (the staging registers keep the rest): 4 register writes instead of 8, and no room test:
 * with the queue full the writes are held on the bus until it has room. Only while nothing
 * else (another core, the sequencer) stages descriptors. Returns its ticket.
 */
uint32_t ta_dma_resubmit(uint32_t l2_addr, uint32_t l1_addr, uint32_t rows);

static inline int ta_dma_done(uint32_t ticket)
{
    return tinyattn_dma_done_count_read(TA_REGS) - ticket < 0x80000000u;
}

void ta_dma_wait(uint32_t ticket);
void ta_dma_wait_poll(uint32_t ticket);
void ta_dma_wait_all(void);
uint32_t ta_dma_last(void);

/* Soft clear: drops the queue, the running transfer and a pending push; clears the error. */
void ta_dma_clear(void);

/* ---- Command sequencer (docs/sequencer.md) ---------------------------------------- */

/*
 * Starts the command list at L1 offset `list`. The list pushes `jobs` engine jobs and
 * `transfers` DMA descriptors, and its WAITs count from the tickets at this call
 * (SEQ_JOB_BASE, SEQ_DMA_BASE); the HAL's tickets move past them, so ta_job_wait_all()
 * and ta_dma_wait_all() also wait for the list's work. Returns at once.
 */
void ta_seq_start(uint32_t list, uint32_t jobs, uint32_t transfers);
/* Sleeps until the list stops; returns TINYATTN_SEQ_ERROR_NONE when it reached END. */
uint32_t ta_seq_wait(void);
/* L1 offset of the command the last list stopped at. */
static inline uint32_t ta_seq_pc(void)
{
    return tinyattn_seq_pc_read(TA_REGS);
}

/* ---- Errors ------------------------------------------------------------------- */

/* What went wrong since the last ta_errors_clear(). */
typedef struct {
    uint32_t engine_rejected; /* a job was rejected (IRQ_STATUS.ENGINE_ERROR) */
    uint32_t engine_code;     /* TINYATTN_JOB_ERROR_* of the last finished job */
    uint32_t dma_code;        /* TINYATTN_DMA_ERROR_* of the first rejected descriptor, or 0 */
    uint32_t bus;             /* an access to an unmapped address (IRQ_STATUS.BUS_ERROR) */
} ta_errors_t;

/* Fills `e`; returns nonzero when there is an error to report. */
int ta_errors_read(ta_errors_t *e);
/* Acknowledges the DMA error and clears the three error flags. */
void ta_errors_clear(void);

/* ---- Performance counters (32-bit ones from reset, wrapping) -------------------------- */

typedef struct {
    uint32_t busy;  /* cycles with a job running */
    uint32_t stall; /* busy cycles in which the array had work but issued no beat */
    uint32_t idle;  /* cycles with no job running */
    uint64_t macs;  /* useful MACs of finished jobs */
} ta_perf_t;

static inline uint64_t ta_engine_macs(void)
{
    uint32_t lo = tinyattn_engine_macs_lo_read(TA_REGS); /* latches the high word */
    uint32_t hi = tinyattn_engine_macs_hi_read(TA_REGS);
    return (uint64_t)hi << 32 | lo;
}

static inline void ta_perf_read(ta_perf_t *p)
{
    p->busy = tinyattn_engine_busy_cycles_read(TA_REGS);
    p->stall = tinyattn_engine_stall_cycles_read(TA_REGS);
    p->idle = tinyattn_engine_idle_cycles_read(TA_REGS);
    p->macs = ta_engine_macs();
}

#endif /* TINYATTN_HAL_H */
