"""The command sequencer: runs command lists from L1 that program the engine and the DMA.

A control core spends hundreds of cycles on each job it stages and each transfer it
submits. The sequencer does the same register writes and waits from a list of
commands in L1, at about four cycles per register, so the core's speed stops
bounding the engine. It is an OBI initiator in the cores' address space: it reads
its list from L1 and reads and writes the registers through the same ports as a
core, so everything it does is something firmware could do (Gemmini's loop
unrollers have the same role: they turn a tiled loop nest into commands without
the CPU).

Commands are 32-bit little-endian words; each starts with a header word:

=====  =====================================  ==========================================
op     header fields                          then
=====  =====================================  ==========================================
WRITE  ``count`` [27:16], ``reg`` [11:0]      ``count`` words, written to the registers
                                              at ``reg``, ``reg + 4``, ...
WAIT   ``base`` [17:16], ``reg`` [11:0]       one word ``delta``: wait until
                                              ``reg - (BASE + delta)`` is >= 0 as a
                                              signed 32-bit difference (wrap-safe)
JUMP   --                                     one word: the L1 address of the next command
STAMP  --                                     one word: an L1 address, written with the
                                              cycles since START
END    --                                     --: the list is done
=====  =====================================  ==========================================

- ``op`` is the header's bits [31:28] (:class:`SeqOp`); ``reg`` is a byte offset into
  the register window; ``base`` selects 0, ``JOB_BASE`` or ``DMA_BASE`` (:class:`WaitBase`).
  Firmware sets the bases to its ticket counters before START, so that a list holds
  only counts relative to its own start.
- Errors stop the list (``done`` with ``error`` set, :class:`SeqError`): an unknown
  op, a WRITE of no words or a misaligned ``reg`` (``BAD_COMMAND``); a list or jump
  address outside L1 or misaligned, or a list that runs off the end of L1
  (``BAD_ADDRESS``); a WAIT longer than ``wait_limit`` cycles (``TIMEOUT``, 0 = no
  limit); an engine job or DMA descriptor rejected while the list runs (``HW_ERROR``);
  ``abort`` (``ABORTED``).
- A stop takes effect at the end of the bus access in flight: a request is never
  withdrawn before its grant (OBI), so a held register write completes first.

Timing: every access takes two cycles (grant, then the response one cycle later,
as every cluster target answers). A WRITE of ``n`` registers takes ``2 + 4n`` cycles.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .core_bus import L1_BASE, PERIPH_BASE, PERIPH_BITS
from .obi import obi_signature

__all__ = [
    "CommandSequencer",
    "SeqError",
    "SeqOp",
    "WaitBase",
    "sequencer_control_signature",
]


class SeqOp(enum.IntEnum, shape=4):
    """A command's operation, in bits [31:28] of its header word (0 is not a command)."""

    WRITE = 1
    WAIT = 2
    JUMP = 3
    STAMP = 4
    END = 5


class WaitBase(enum.IntEnum, shape=2):
    """What a WAIT's ``delta`` is relative to."""

    ZERO = 0
    JOB_BASE = 1
    DMA_BASE = 2


class SeqError(enum.IntEnum, shape=3):
    """Why the last list stopped (``NONE``: it reached END, or none ran yet)."""

    NONE = 0
    BAD_COMMAND = 1
    BAD_ADDRESS = 2
    TIMEOUT = 3
    HW_ERROR = 4
    ABORTED = 5


def sequencer_control_signature() -> wiring.Signature:
    """The register block's side of the sequencer's control (``SEQ`` registers).

    ``start``/``abort`` are one-cycle pulses; ``list_addr`` (L1 byte address of the
    first command), ``job_base``, ``dma_base`` and ``wait_limit`` are sampled at
    ``start`` and at each WAIT. ``busy`` is high while a list runs; ``done`` pulses
    when it stops, with ``error`` (held until the next start) and ``pc``, the L1
    address of the command that was running.
    """
    return wiring.Signature(
        {
            "start": Out(1),
            "abort": Out(1),
            "list_addr": Out(32),
            "job_base": Out(32),
            "dma_base": Out(32),
            "wait_limit": Out(32),
            "busy": In(1),
            "done": In(1),
            "error": In(SeqError),
            "pc": In(32),
        }
    )


class CommandSequencer(wiring.Component):
    """Runs command lists from L1 (see the module docstring for the commands).

    Ports
    -----
    control : In(:func:`sequencer_control_signature`)
        From the register block.
    bus : Out(:func:`~tinyattn.hw.obi.obi_signature` ``(32)``)
        OBI initiator in the cores' address map; every response must come one cycle
        after its grant.
    hw_error : In(1)
        Pulses when an engine job or a DMA descriptor is rejected.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        super().__init__(
            {
                "control": In(sequencer_control_signature()),
                "bus": Out(obi_signature(32)),
                "hw_error": In(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        ctl, bus = self.control, self.bus
        l1_bytes = self.cfg.memory.size_bytes

        pc = Signal(32)  # L1 byte address of the next word to read
        header_pc = Signal(32)  # of the command that runs (reported on stop)
        op = Signal(4)  # SeqOp
        reg = Signal(PERIPH_BITS)  # register offset of the next WRITE word or the WAIT
        left = Signal(12)  # WRITE words still to write
        base = Signal(2)  # WaitBase
        operand = Signal(32)
        target = Signal(32)
        cycles = Signal(32)  # since START, for STAMP
        waited = Signal(32)  # cycles in the current WAIT
        in_flight = Signal()  # a granted access waits for its response
        stop_request = Signal(SeqError)  # abort or hardware error, taken at a response
        error = Signal(SeqError)
        m.d.comb += [
            ctl.error.eq(error),
            ctl.pc.eq(header_pc),
            bus.be.eq(0xF),
        ]

        def in_l1(addr: object) -> object:
            return (addr[:2] == 0) & (addr < l1_bytes)

        # One access at a time: `req` until the grant, then wait for the response.
        with m.If(bus.req & bus.gnt):
            m.d.sync += in_flight.eq(1)
        with m.Elif(bus.rvalid):
            m.d.sync += in_flight.eq(0)
        response = Signal()
        m.d.comb += response.eq(in_flight & bus.rvalid)

        with m.If(ctl.busy):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(ctl.busy & ctl.abort):
            m.d.sync += stop_request.eq(SeqError.ABORTED)
        with m.Elif(ctl.busy & self.hw_error & (stop_request == SeqError.NONE)):
            m.d.sync += stop_request.eq(SeqError.HW_ERROR)

        # `done` rises with the fall of `busy`, when `error` already holds the cause.
        done = Signal()
        m.d.sync += done.eq(0)
        m.d.comb += ctl.done.eq(done)

        def stop(code: object) -> None:
            m.d.sync += [error.eq(code), done.eq(1)]
            m.next = "IDLE"

        def access(addr: object, *, we: int = 0, wdata: object = 0) -> None:
            """The state's bus access: ``req`` until the grant, then wait for the response."""
            m.d.comb += [
                bus.req.eq(~in_flight),
                bus.addr.eq(addr),
                bus.we.eq(we),
                bus.wdata.eq(wdata),
            ]

        def next_command() -> None:
            """After a response: stop if asked to, else fetch the next header."""
            with m.If(stop_request != SeqError.NONE):
                stop(stop_request)
            with m.Elif(~in_l1(pc)):
                stop(SeqError.BAD_ADDRESS)
            with m.Else():
                m.next = "FETCH"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(ctl.start):
                    m.d.sync += [
                        pc.eq(ctl.list_addr),
                        header_pc.eq(ctl.list_addr),
                        cycles.eq(0),
                        stop_request.eq(SeqError.NONE),
                        error.eq(SeqError.NONE),
                    ]
                    with m.If(in_l1(ctl.list_addr)):
                        m.next = "FETCH"
                    with m.Else():
                        stop(SeqError.BAD_ADDRESS)

            with m.State("FETCH"):
                access(L1_BASE + pc)
                with m.If(response):
                    word = bus.rdata
                    m.d.sync += [
                        header_pc.eq(pc),
                        pc.eq(pc + 4),
                        op.eq(word[28:32]),
                        reg.eq(word[:PERIPH_BITS]),
                        left.eq(word[16:28]),
                        base.eq(word[16:18]),
                    ]
                    code = word[28:32]
                    aligned = word[:2] == 0
                    with m.If(stop_request != SeqError.NONE):
                        stop(stop_request)
                    with m.Elif(code == SeqOp.END):
                        stop(SeqError.NONE)
                    with m.Elif((code == SeqOp.WRITE) & aligned & (word[16:28] != 0)):
                        m.next = "OPERAND"
                    with m.Elif((code == SeqOp.WAIT) & aligned & (word[16:18] != 3)):
                        m.next = "OPERAND"
                    with m.Elif((code == SeqOp.JUMP) | (code == SeqOp.STAMP)):
                        m.next = "OPERAND"
                    with m.Else():
                        stop(SeqError.BAD_COMMAND)

            with m.State("OPERAND"):
                access(L1_BASE + pc)
                with m.If(~in_l1(pc)):
                    # Ran off the end of L1 inside a command; no access was made.
                    m.d.comb += bus.req.eq(0)
                    stop(SeqError.BAD_ADDRESS)
                with m.Elif(response):
                    word = bus.rdata
                    m.d.sync += [operand.eq(word), pc.eq(pc + 4), waited.eq(0)]
                    bases = Mux(
                        base == WaitBase.JOB_BASE,
                        ctl.job_base,
                        Mux(base == WaitBase.DMA_BASE, ctl.dma_base, 0),
                    )
                    m.d.sync += target.eq(bases + word)
                    with m.If(stop_request != SeqError.NONE):
                        stop(stop_request)
                    with m.Elif(op == SeqOp.WRITE):
                        m.next = "WRITE"
                    with m.Elif(op == SeqOp.WAIT):
                        m.next = "POLL"
                    with m.Elif(op == SeqOp.STAMP):
                        with m.If(in_l1(word)):
                            m.next = "STAMP"
                        with m.Else():
                            stop(SeqError.BAD_ADDRESS)
                    with m.Else():  # JUMP
                        with m.If(in_l1(word)):
                            m.d.sync += pc.eq(word)
                            m.next = "FETCH"
                        with m.Else():
                            stop(SeqError.BAD_ADDRESS)

            with m.State("WRITE"):
                access(PERIPH_BASE + reg, we=1, wdata=operand)
                with m.If(response):
                    m.d.sync += [left.eq(left - 1), reg.eq(reg + 4)]
                    with m.If(left == 1):
                        next_command()
                    with m.Elif(stop_request != SeqError.NONE):
                        stop(stop_request)
                    with m.Else():
                        m.next = "OPERAND"

            with m.State("POLL"):
                access(PERIPH_BASE + reg)
                m.d.sync += waited.eq(waited + 1)
                with m.If(response):
                    reached = ~(bus.rdata - target)[31]
                    with m.If(reached):
                        next_command()
                    with m.Elif(stop_request != SeqError.NONE):
                        stop(stop_request)
                    with m.Elif((ctl.wait_limit != 0) & (waited >= ctl.wait_limit)):
                        stop(SeqError.TIMEOUT)

            with m.State("STAMP"):
                access(L1_BASE + operand, we=1, wdata=cycles)
                with m.If(response):
                    next_command()
        m.d.comb += ctl.busy.eq(~fsm.ongoing("IDLE"))
        return m
