/*
 * crt0.S: reset code of the tinyattn control core (PicoRV32, rv32imc).
 *
 * The whole image, .data included, is loaded into the core's private memory before
 * reset, so nothing is copied here: set gp and sp, zero .bss, run main, and end the
 * run with main's return value as the exit code (ta_exit writes HOST_EXIT).
 */

    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function

    /* No linker relaxation before 0x10: deleting bytes would move the IRQ vector. */
    .option push
    .option norelax
_start:
    j reset

    /* PicoRV32's IRQ vector. IRQs stay masked, so this never runs; should one be
       taken anyway, ebreak stops the core (a trap) instead of running garbage. */
    .org 0x10
irq_vector:
    ebreak

reset:
    la gp, __global_pointer$
    .option pop

    la sp, __stack_top

    la a0, __bss_start
    la a1, __bss_end
    j 2f
1:  sw zero, 0(a0)
    addi a0, a0, 4
2:  bltu a0, a1, 1b

    call main
    /* main's return value is in a0, the argument of ta_exit. */
    call ta_exit
    j .

    .size _start, . - _start
