/*
 * tinyattn_runtime.h: runs a deployed model's schedule (docs/deploy.md, "Schedule records").
 *
 * The L2 image made by tinyattn.sw.schedule.build_schedule starts with a 64-byte header
 * and fixed-size records, one per engine op, fused gather and fill. ta_run_schedule
 * fetches each record into L1 with one DMA and runs it with the loop nest of the Python
 * executor (tinyattn.sw.tiler.op_actions, tinyattn.sw.schedule.execute_schedule): the same
 * transfers, jobs and waits in the same order, so the results are bit-exact and the race
 * rules the executor checks hold on the hardware.
 */
#ifndef TINYATTN_RUNTIME_H
#define TINYATTN_RUNTIME_H

#include <stdint.h>

#include "tinyattn_hal.h"

#define TA_SCHEDULE_MAGIC 0x43534154u /* "TASC" */
#define TA_SCHEDULE_VERSION 1u
#define TA_SCHEDULE_HEADER_BYTES 64u
/* Attention heads of one record the runtime can decode (8 field bytes each). */
#define TA_MAX_HEADS 16

enum { TA_KIND_GEMM = 1, TA_KIND_ATTENTION = 2, TA_KIND_GATHER = 3, TA_KIND_FILL = 4 };
enum { TA_MODE_UNUSED = 0, TA_MODE_ONCE = 1, TA_MODE_DOUBLE = 2, TA_MODE_CACHED = 3 };

/* What ta_run_schedule returns (0 or one of these). */
enum {
    TA_RUN_OK = 0,
    TA_RUN_BAD_HEADER = 1, /* wrong magic, version or record size */
    TA_RUN_BAD_RECORD = 2, /* an unknown kind, zero tiles, too many heads */
    TA_RUN_BAD_INDEX = 3,  /* a gather's id outside its table */
    TA_RUN_HW_ERROR = 4    /* the engine rejected a job or the DMA a descriptor */
};

/* The header at the start of the L2 image (little endian, as the core is). */
typedef struct {
    uint32_t magic;
    uint16_t version, record_bytes;
    uint32_t records_addr, record_count, l1_record_addr, seq_len;
    uint32_t input_ids_addr, token_type_ids_addr, image_bytes;
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

/* Counts and, on failure, what failed. `on_record` (optional) sees each record's cycles. */
typedef struct {
    uint32_t records, jobs, transfers;
    uint32_t failed_record; /* index of the record that failed */
    ta_errors_t errors;     /* the hardware's report when it was TA_RUN_HW_ERROR */
    void (*on_record)(uint32_t index, uint32_t kind, uint32_t cycles);
} ta_run_t;

/*
 * Runs the schedule whose header is at L2 address `l2_header_addr` (the addresses in the
 * image are L2 addresses, so that is where the image was placed: 0 for deploy's image).
 * Returns TA_RUN_OK or the first failure; `run` holds the counts either way.
 */
int ta_run_schedule(uint32_t l2_header_addr, ta_run_t *run);

#endif /* TINYATTN_RUNTIME_H */
