/*
 * tinyattn_runtime.h: runs a deployed model's schedule (docs/deploy.md, "Schedule records").
 *
 * The L2 image made by tinyattn.sw.schedule.build_schedule starts with a 128-byte header,
 * then fixed-size records for the prologue (the embedding gathers and fills), then, after
 * the tensors, the command stream of every engine op. ta_run_schedule fetches each
 * prologue record into L1 with one DMA and runs it as the Python executor does
 * (tinyattn.sw.schedule.execute_schedule). Then it loads the stream's first chunk and
 * starts the command sequencer, which stages every job and transfer of the model by itself
 * (docs/sequencer.md), and sleeps until it stops.
 */
#ifndef TINYATTN_RUNTIME_H
#define TINYATTN_RUNTIME_H

#include <stdint.h>

#include "tinyattn_hal.h"

#define TA_SCHEDULE_MAGIC 0x43534154u /* "TASC" */
#define TA_SCHEDULE_VERSION 2u
#define TA_SCHEDULE_HEADER_BYTES 128u
/* Attention heads of one record the runtime can decode (8 field bytes each). */
#define TA_MAX_HEADS 16

enum { TA_KIND_GEMM = 1, TA_KIND_ATTENTION = 2, TA_KIND_GATHER = 3, TA_KIND_FILL = 4 };
enum { TA_MODE_UNUSED = 0, TA_MODE_ONCE = 1, TA_MODE_DOUBLE = 2, TA_MODE_CACHED = 3 };

/* What ta_run_schedule returns (0 or one of these). */
enum {
    TA_RUN_OK = 0,
    TA_RUN_BAD_HEADER = 1, /* wrong magic, version or record size */
    TA_RUN_BAD_RECORD = 2, /* a kind other than gather or fill in the prologue */
    TA_RUN_BAD_INDEX = 3,  /* a gather's id outside its table */
    TA_RUN_HW_ERROR = 4,   /* the engine rejected a job or the DMA a descriptor */
    TA_RUN_SEQ_ERROR = 5   /* the sequencer stopped on an error (run->seq_error, seq_pc) */
};

/* The header at the start of the L2 image (little endian, as the core is). */
typedef struct {
    uint32_t magic;
    uint16_t version, record_bytes;
    uint32_t records_addr, record_count, l1_record_addr, seq_len;
    uint32_t input_ids_addr, token_type_ids_addr, image_bytes;
    /* The engine ops' command stream: `stream_chunks` chunks of `chunk_bytes` from
       `stream_addr`, run from two L1 buffers at `l1_stream_addr`; the jobs and transfers it
       pushes; where its STAMPs end up in L2 (`stamp_count` words). */
    uint32_t stream_addr, stream_chunks, chunk_bytes, l1_stream_addr;
    uint32_t stream_jobs, stream_transfers, stamps_addr, stamp_count;
} ta_schedule_header_t;

/* One operand of a record: 24 bytes, laid out as in the image. */
typedef struct {
    uint32_t l2_addr, l2_hstride, l1_addr, l1_slot;
    uint16_t l2_pitch, l1_pitch;
    uint8_t mode, slots;
    uint16_t reserved;
} ta_operand_t;

/* One record: 16 bytes of header, the operands a b c d p, then 8 bytes per head. */
typedef struct {
    uint8_t kind, flags, loop, heads;
    uint16_t m, n, k, tm, tn, tiles;
    ta_operand_t op[5];
    uint8_t fields[TA_MAX_HEADS][8];
} ta_record_t;

/*
 * Counts and, on failure, what failed. `on_record` (optional) sees each prologue record's
 * cycles; `stream_cycles` is the stream's, from the load of its first chunk to the stop.
 */
typedef struct {
    uint32_t records, jobs, transfers;
    uint32_t stream_cycles;
    uint32_t failed_record; /* index of the record that failed (the record count: the stream) */
    ta_errors_t errors;     /* the hardware's report when it was TA_RUN_HW_ERROR */
    uint32_t seq_error;     /* TINYATTN_SEQ_ERROR_* when it was TA_RUN_SEQ_ERROR */
    uint32_t seq_pc;        /* and the L1 address of the command it stopped at */
    void (*on_record)(uint32_t index, uint32_t kind, uint32_t cycles);
} ta_run_t;

/*
 * Runs the schedule whose header is at L2 address `l2_header_addr` (the addresses in the
 * image are L2 addresses, so that is where the image was placed: 0 for deploy's image).
 * Returns TA_RUN_OK or the first failure; `run` holds the counts either way.
 */
int ta_run_schedule(uint32_t l2_header_addr, ta_run_t *run);

#endif /* TINYATTN_RUNTIME_H */
