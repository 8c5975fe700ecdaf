/* tinyattn_console.c: ta_puts, ta_printf, ta_exit (see tinyattn_console.h). */
#include <stdarg.h>
#include <stddef.h>

#include "tinyattn_console.h"

void ta_puts(const char *s)
{
    while (*s)
        ta_putc(*s++);
    ta_putc('\n');
}

static void pad(char c, int n)
{
    while (n-- > 0)
        ta_putc(c);
}

/* A conversion's flags and width. */
struct spec {
    int width;
    int left; /* '-' */
    int zero; /* '0' */
};

static void put_text(const char *s, int len, const struct spec *sp)
{
    if (!sp->left)
        pad(' ', sp->width - len);
    for (int i = 0; i < len; i++)
        ta_putc(s[i]);
    if (sp->left)
        pad(' ', sp->width - len);
}

static void put_number(unsigned long value, unsigned base, int negative, int upper,
                       const struct spec *sp)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char buf[3 * sizeof(unsigned long)]; /* enough digits for base 10 and up */
    int n = 0;

    do {
        buf[n++] = digits[value % base];
        value /= base;
    } while (value);

    int fill = sp->width - n - negative;
    if (!sp->left && !sp->zero)
        pad(' ', fill);
    if (negative)
        ta_putc('-');
    if (!sp->left && sp->zero) /* zeros go between the sign and the digits */
        pad('0', fill);
    while (n)
        ta_putc(buf[--n]);
    if (sp->left)
        pad(' ', fill);
}

void ta_printf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            ta_putc(*fmt);
            continue;
        }
        struct spec sp = {0, 0, 0};
        for (;; fmt++) {
            if (fmt[1] == '-')
                sp.left = 1;
            else if (fmt[1] == '0')
                sp.zero = 1;
            else
                break;
        }
        while (fmt[1] >= '0' && fmt[1] <= '9')
            sp.width = sp.width * 10 + (*++fmt - '0');
        int is_long = fmt[1] == 'l';
        if (is_long)
            fmt++;

        switch (*++fmt) {
        case 'd':
        case 'i': {
            long v = is_long ? va_arg(ap, long) : va_arg(ap, int);
            /* 0 - (unsigned long)v is |v| even for LONG_MIN. */
            put_number(v < 0 ? 0ul - (unsigned long)v : (unsigned long)v, 10, v < 0, 0, &sp);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            unsigned long v = is_long ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
            put_number(v, *fmt == 'u' ? 10 : 16, 0, *fmt == 'X', &sp);
            break;
        }
        case 'p': /* all the digits of a pointer: the flags and width are ignored */
            sp.width = 2 * (int)sizeof(void *);
            sp.left = 0;
            sp.zero = 1;
            ta_putc('0');
            ta_putc('x');
            put_number((unsigned long)(uintptr_t)va_arg(ap, void *), 16, 0, 0, &sp);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            int len = 0;
            if (s == NULL)
                s = "(null)";
            while (s[len])
                len++;
            put_text(s, len, &sp);
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            put_text(&c, 1, &sp);
            break;
        }
        case '%':
            ta_putc('%');
            break;
        case '\0': /* a lone '%' at the end */
            fmt--;
            break;
        default: /* unknown: print it as written */
            ta_putc('%');
            ta_putc(*fmt);
            break;
        }
    }
    va_end(ap);
}

void ta_exit(uint32_t code)
{
    tinyattn_host_exit_write(TA_REGS, code);
    for (;;) {
        /* The run has ended; the core just waits to be stopped. */
    }
}

void ta_check_failed(const char *file, int line, const char *what)
{
    ta_printf("%s:%d: check failed: %s\n", file, line, what);
    ta_exit(TA_EXIT_CHECK);
}
