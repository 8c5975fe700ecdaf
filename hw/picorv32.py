"""PicoRV32 (rv32imc) as an Amaranth component with its native memory interface.

The CPU is Claire Wolf's PicoRV32, ISC licence, taken unmodified from the pinned PyPI
package ``pythondata-cpu-picorv32``; :func:`verilog_source` is its one Verilog file,
which the build copies beside the generated netlist (``tinyattn generate`` writes it
next to the cluster's Verilog).

Native memory interface (PicoRV32's README, "PicoRV32 Native Memory Interface"): the
CPU raises ``mem_valid`` with ``mem_addr``, ``mem_wdata``, ``mem_wstrb`` (0 for a
read) and ``mem_instr`` (an instruction fetch), and holds them until a cycle with
``mem_ready``; ``mem_rdata`` is sampled in that cycle. One transfer at a time.

Configuration: rv32imc (``COMPRESSED_ISA``, ``ENABLE_FAST_MUL``, ``ENABLE_DIV``), a barrel
shifter, a single-cycle multiplier (the sequential one took 40-70 cycles per ``mul``, which
the gathers of the deploy flow pay per position), cycle/instret counters (``rdcycle``),
and the IRQ unit without q-registers or timer. The firmware does not take interrupts:
every IRQ stays masked (PicoRV32's reset value of ``irq_mask``), and the SDK sleeps on
the cluster's ``irq`` with the ``waitirq`` instruction, which returns when any IRQ,
masked or not, is pending. The cluster's line is ``irq[IRQ_CLUSTER]``, not latched
(``LATCHED_IRQ``), so it is pending exactly while the register block's ``irq`` is high.
With the IRQs masked, an illegal instruction, a misaligned access, ``ebreak`` and
``ecall`` stop the CPU and raise ``trap``.
"""

from __future__ import annotations

from pathlib import Path

from amaranth.hdl import ClockSignal, Const, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "IRQ_CLUSTER",
    "PicoRV32",
    "lookahead_signature",
    "native_bus_signature",
    "verilog_source",
]

#: PicoRV32 IRQ number the cluster's ``irq`` drives (0..2 are the CPU's own causes).
IRQ_CLUSTER = 3


def verilog_source() -> Path:
    """Path of ``picorv32.v`` in the pinned ``pythondata-cpu-picorv32`` package."""
    import pythondata_cpu_picorv32

    return Path(pythondata_cpu_picorv32.data_location) / "picorv32.v"


def native_bus_signature() -> wiring.Signature:
    """PicoRV32's native memory interface, from the CPU's (initiator's) side."""
    return wiring.Signature(
        {
            "valid": Out(1),
            "instr": Out(1),
            "addr": Out(32),
            "wdata": Out(32),
            "wstrb": Out(4),
            "ready": In(1),
            "rdata": In(32),
        }
    )


def lookahead_signature() -> wiring.Signature:
    """PicoRV32's look-ahead read: in the cycle before ``valid`` rises for a read (or
    stays high for the second half of an instruction), ``read`` pulses with ``addr``."""
    return wiring.Signature({"read": Out(1), "addr": Out(32)})


class PicoRV32(wiring.Component):
    """The PicoRV32 CPU, rv32imc, as an :class:`~amaranth.hdl.Instance`.

    Parameters
    ----------
    reset_addr : int
        First instruction fetched after reset (``PROGADDR_RESET``).
    stack_addr : int
        Initial ``sp`` (``STACKADDR``); crt0 sets it again.

    Ports
    -----
    run : In(1)
        The CPU runs while high; low holds it in reset (``resetn = run & ~rst``).
    bus : Out(:func:`native_bus_signature`)
        Instruction fetches and data accesses, one at a time.
    lookahead : Out(:func:`lookahead_signature`)
        The next read's address a cycle early, so that a synchronous memory can answer
        in the cycle ``valid`` rises.
    irq : In(1)
        The cluster's interrupt line, PicoRV32 IRQ :data:`IRQ_CLUSTER`.
    trap : Out(1)
        The CPU stopped on a trap (see the module docstring); it stays stopped until
        ``run`` falls.
    """

    def __init__(self, *, reset_addr: int, stack_addr: int) -> None:
        self.reset_addr = reset_addr
        self.stack_addr = stack_addr
        super().__init__(
            {
                "bus": Out(native_bus_signature()),
                "lookahead": Out(lookahead_signature()),
                "run": In(1),
                "irq": In(1),
                "trap": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        resetn = Signal()
        m.d.comb += resetn.eq(self.run & ~ResetSignal())
        irq = Signal(32)
        m.d.comb += irq.eq(self.irq << IRQ_CLUSTER)
        # Unused outputs still need a net each, so that the instance is complete.
        unused = {
            name: Signal(width, name=f"unused_{name}")
            for name, width in (
                ("mem_la_write", 1),
                ("mem_la_wdata", 32),
                ("mem_la_wstrb", 4),
                ("pcpi_valid", 1),
                ("pcpi_insn", 32),
                ("pcpi_rs1", 32),
                ("pcpi_rs2", 32),
                ("eoi", 32),
                ("trace_valid", 1),
                ("trace_data", 36),
            )
        }
        m.submodules.picorv32 = Instance(
            "picorv32",
            p_ENABLE_COUNTERS=Const(1, 1),
            p_ENABLE_COUNTERS64=Const(1, 1),
            p_ENABLE_REGS_16_31=Const(1, 1),
            p_ENABLE_REGS_DUALPORT=Const(1, 1),
            p_BARREL_SHIFTER=Const(1, 1),
            p_COMPRESSED_ISA=Const(1, 1),
            p_CATCH_MISALIGN=Const(1, 1),
            p_CATCH_ILLINSN=Const(1, 1),
            p_ENABLE_MUL=Const(0, 1),
            p_ENABLE_FAST_MUL=Const(1, 1),
            p_ENABLE_DIV=Const(1, 1),
            p_ENABLE_IRQ=Const(1, 1),
            p_ENABLE_IRQ_QREGS=Const(0, 1),
            p_ENABLE_IRQ_TIMER=Const(0, 1),
            p_LATCHED_IRQ=Const(~(1 << IRQ_CLUSTER) & 0xFFFF_FFFF, 32),
            p_PROGADDR_RESET=Const(self.reset_addr, 32),
            p_PROGADDR_IRQ=Const(self.reset_addr + 0x10, 32),
            p_STACKADDR=Const(self.stack_addr, 32),
            i_clk=ClockSignal(),
            i_resetn=resetn,
            o_trap=self.trap,
            o_mem_valid=self.bus.valid,
            o_mem_instr=self.bus.instr,
            i_mem_ready=self.bus.ready,
            o_mem_addr=self.bus.addr,
            o_mem_wdata=self.bus.wdata,
            o_mem_wstrb=self.bus.wstrb,
            i_mem_rdata=self.bus.rdata,
            o_mem_la_read=self.lookahead.read,
            o_mem_la_addr=self.lookahead.addr,
            i_pcpi_wr=Const(0, 1),
            i_pcpi_rd=Const(0, 32),
            i_pcpi_wait=Const(0, 1),
            i_pcpi_ready=Const(0, 1),
            i_irq=irq,
            **{f"o_{name}": sig for name, sig in unused.items()},
        )
        return m
