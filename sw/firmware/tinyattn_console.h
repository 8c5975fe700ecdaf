/*
 * tinyattn_console.h: console output and the end of a run, over the HOST registers.
 *
 * Every byte is one write to HOST_CONSOLE; the simulation (or the SoC around the
 * cluster) collects them. HOST_EXIT ends the run with an exit code, 0 for success.
 * Several cores may print, but their bytes interleave: print from one core.
 */
#ifndef TINYATTN_CONSOLE_H
#define TINYATTN_CONSOLE_H

#include <stdint.h>

#include "tinyattn_regs.h"

/* The register block, as the accessors of tinyattn_regs.h take it. */
#define TA_REGS ((volatile void *)(uintptr_t)TINYATTN_REGS_BASE)

/* Exit codes of the SDK itself; far from the small codes main usually returns. */
#define TA_EXIT_OK 0x00000000u
#define TA_EXIT_CHECK 0xE0000001u  /* a TA_CHECK failed */
#define TA_EXIT_CONFIG 0xE0000002u /* the hardware is not the configuration of tinyattn_regs.h */

/* Stops the run when `cond` is false, naming file, line and the condition. */
#define TA_CHECK(cond) ((cond) ? (void)0 : ta_check_failed(__FILE__, __LINE__, #cond))

static inline void ta_putc(char c)
{
    tinyattn_host_console_write(TA_REGS, (uint8_t)c);
}

/* Like C's puts: the string, then a newline. */
void ta_puts(const char *s);

/*
 * A small printf: %d %i %u %x %X %s %c %p %%, the flags '0' (zero padding) and '-'
 * (left-justify), a width, and the 'l' modifier (long). %p prints 0x and all the
 * digits of a pointer. Print uint32_t as (unsigned)x: on rv32 it is an unsigned long.
 */
void ta_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes HOST_EXIT: the run ends with `code`. crt0 calls it with main's return value. */
void ta_exit(uint32_t code) __attribute__((noreturn));

void ta_check_failed(const char *file, int line, const char *what) __attribute__((noreturn));

#endif /* TINYATTN_CONSOLE_H */
