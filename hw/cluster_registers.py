"""The register map of the cluster peripherals, defined once in Python.

Everything that firmware sees of the engine, the DMA, the sequencer and the events
comes from :func:`register_map`: the RTL register block (:mod:`tinyattn.hw.regblock`),
the C header ``tinyattn_regs.h``, ``docs/registers.md`` and the SystemRDL file
(:mod:`tinyattn.sw.regmap_emit`). Nothing downstream re-derives an offset, a width or a
value. The description language (fields, registers, blocks, bindings, the builder) is
:mod:`tinyattn.hw.registers`.

Fields bind to the register block's control ports (:func:`control_ports_signature`:
the engine's, the DMA's, the host's and the sequencer's control signatures, as
:class:`~tinyattn.hw.registers.PortBinding` s) and to the block's own logic
(:class:`Internal`, the :class:`~tinyattn.hw.registers.InternalSignal` s the map is
built with).
"""

from __future__ import annotations

import enum
import functools

from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from tinyattn.config import ClusterConfig

from . import job as _job
from .core_bus import L1_BASE, PERIPH_BASE, PRIVATE_BASE
from .dma import dma_control_signature
from .dma_codes import ALIGN_BYTES, Direction, DmaError
from .engine import engine_control_signature
from .job import FLAGS_ALL, PARAM_RECORD_BYTES, JobError, Op
from .registers import (
    CONSTANT,
    REG_BITS,
    Access,
    Block,
    EnumValue,
    Field,
    InternalSignal,
    MapBuilder,
    MemoryMap,
    PortBinding,
    Ports,
    Register,
    RegMapError,
    SignalKind,
    payload_leaves,
)
from .sequencer import SeqError, sequencer_control_signature

__all__ = [
    "INTERNAL",
    "REGMAP_VERSION",
    "Internal",
    "control_ports_signature",
    "host_signature",
    "register_map",
]

#: Version of the register map layout, (major, minor). Bump major when an offset or
#: a field moves, minor when something is added.
REGMAP_VERSION = (1, 2)

_SOURCE, _SINK = SignalKind.SOURCE, SignalKind.SINK


def _push_signals(unit: str, item: str) -> tuple[InternalSignal, InternalSignal]:
    """The push strobe and the pending flag of ``unit``'s queue of ``item`` s: a push
    into a full queue is held pending until the unit takes it."""
    return (
        InternalSignal(
            f"{unit.lower()}_push",
            1,
            _SINK,
            f"push the staged {item} (held pending until accepted)",
        ),
        InternalSignal(
            f"{unit.lower()}_push_pending",
            1,
            _SOURCE,
            f"a pushed {item} waits for the {unit}'s queue",
        ),
    )


class Internal:
    """The register block's own signals that the map binds to (written out in
    :class:`~tinyattn.hw.regblock.RegBlock`)."""

    ENGINE_PUSH, ENGINE_PUSH_PENDING = _push_signals("engine", "job")
    JOBS_DONE = InternalSignal(
        "jobs_done", REG_BITS, _SOURCE, "count of engine done events, wrapping"
    )
    MACS_LATCH = InternalSignal("macs_latch", 1, _SINK, "latch macs[63:32] into MACS_HI")
    MACS_HI = InternalSignal(
        "macs_hi", REG_BITS, _SOURCE, "macs[63:32] as latched by the last MACS_LO read"
    )
    DMA_PUSH, DMA_PUSH_PENDING = _push_signals("DMA", "descriptor")
    DMA_DONE_COUNT = InternalSignal(
        "dma_done_count", REG_BITS, _SOURCE, "count of DMA done events, wrapping"
    )
    ENGINE_DONE = InternalSignal("engine_done", 1, _SOURCE, "engine done event")
    ENGINE_ERROR = InternalSignal("engine_error", 1, _SOURCE, "engine done event of a rejected job")
    DMA_DONE = InternalSignal("dma_done", 1, _SOURCE, "DMA done event")
    DMA_ERROR = InternalSignal("dma_error", 1, _SOURCE, "DMA done event of a rejected descriptor")
    BUS_ERROR = InternalSignal("bus_error", 1, _SOURCE, "an access to an unmapped address")
    CONSOLE_WRITE = InternalSignal("console_write", 1, _SINK, "HOST_CONSOLE written: send its byte")
    EXIT_WRITE = InternalSignal("exit_write", 1, _SINK, "HOST_EXIT written: the run ends")


#: Every :class:`Internal` signal, in declaration order: what the map is built with.
INTERNAL: tuple[InternalSignal, ...] = tuple(
    value for value in vars(Internal).values() if isinstance(value, InternalSignal)
)


def host_signature() -> wiring.Signature:
    """The register block's outputs to the host (a testbench, or an SoC around the cluster).

    ``console_valid`` is high for one cycle per byte written to ``HOST_CONSOLE``, with
    the byte on ``console_char``; there is no back-pressure. ``ended`` rises with the
    first write to ``HOST_EXIT`` and stays high until reset, ``exit_code`` holds the
    value written last.
    """
    return wiring.Signature(
        {
            "console_valid": Out(1),
            "console_char": Out(8),
            "ended": Out(1),
            "exit_code": Out(32),
        }
    )


def control_ports_signature(cfg: ClusterConfig) -> wiring.Signature:
    """The register block's ports that fields bind to, as the block has them.

    ``engine``: :func:`~tinyattn.hw.engine.engine_control_signature`; ``dma``:
    :func:`~tinyattn.hw.dma.dma_control_signature`; ``host``: :func:`host_signature`;
    ``seq``: :func:`~tinyattn.hw.sequencer.sequencer_control_signature`. Functions of
    ``cfg`` alone, so the map exists for every valid ``ClusterConfig`` (``Engine(cfg)``
    rejects ``vec_len < 16``).
    """
    return wiring.Signature(
        {
            "engine": Out(engine_control_signature(cfg)),
            "dma": Out(dma_control_signature(cfg)),
            "host": Out(host_signature()),
            "seq": Out(sequencer_control_signature()),
        }
    )


# ---------------------------------------------------------------------------- the map

_JOB_ERROR_DESC = {
    "NONE": "the job succeeded",
    "UNKNOWN_OP": "op is not GEMM or ATTENTION, or a flag the op does not have is set",
    "ZERO_DIM": "m, n, k or (attention) heads is 0",
    "DIM_LIMIT": "a dimension above max_dim; attention k > vec_len or n > max_seq",
    "GRANULE": "n or k not a multiple of 4; attention n not a multiple of n_pe",
    "MISALIGNED": "an address, stride or head stride of a used tensor is not a multiple of 4",
    "OUT_OF_RANGE": "a used tensor reaches beyond L1",
}
_OP_DESC = {"GEMM": "Y = epilogue(X . W^T + b)", "ATTENTION": "multi-head attention with ITAMax"}
_FLAG_DESC = {
    "RELU": "ReLU on the result",
    "RESIDUAL": "add the residual R (m, n) at d_addr",
    "AFFINE": "per-channel affine (NoNorm) from the parameter records",
    "PER_ROW": "parameters follow the rows of Y instead of its columns",
}
_DMA_ERROR_DESC = {
    "NONE": "no error",
    "ZERO_SIZE": "rows == 0 or row_bytes == 0",
    "MISALIGNED": "an address, row_bytes or a stride is not a multiple of 4",
    "L1_RANGE": "the L1 rectangle reaches beyond L1",
    "L2_RANGE": "the L2 rectangle reaches beyond 2**l2_addr_bits",
}
_DIRECTION_DESC = {"L2_TO_L1": "read L2, write L1", "L1_TO_L2": "read L1, write L2"}


def _enum_values(cls: type[enum.IntEnum], descs: dict[str, str]) -> tuple[EnumValue, ...]:
    if set(descs) != {m.name for m in cls}:
        raise RegMapError(f"descriptions of {cls.__name__} do not match its members")
    return tuple(EnumValue(m.name, int(m.value), descs[m.name]) for m in cls)


def _flag_values() -> tuple[EnumValue, ...]:
    values = tuple(
        EnumValue(name.removeprefix("FLAG_"), getattr(_job, name), _FLAG_DESC[name[5:]])
        for name in _job.__all__
        if name.startswith("FLAG_") and name[5:] not in _job.ATTENTION_FLAGS
    )
    if sum(v.value for v in values) != FLAGS_ALL:
        raise RegMapError("the FLAG_* constants of hw/job.py do not add up to FLAGS_ALL")
    return tuple(sorted(values, key=lambda v: v.value))


def _cluster_constants(cfg: ClusterConfig) -> list[tuple[str, int, str]]:
    e, mem, ic, d = cfg.engine, cfg.memory, cfg.interconnect, cfg.dma
    return [
        ("N_PE", e.n_pe, "dot-product units (also the ITAMax group)"),
        ("VEC_LEN", e.vec_len, "int8 lanes per unit"),
        ("ACC_BITS", e.acc_bits, "accumulator width in bits"),
        ("TILE_M", e.tile_m, "rows of X (queries) kept on chip per tile"),
        ("MAX_SEQ", e.max_seq, "most keys of an attention job"),
        ("MAX_DIM", e.max_dim, "largest m, n or k of a job"),
        ("JOB_QUEUE_DEPTH", e.job_queue_depth, "jobs the engine queues while one runs"),
        ("N_BANKS", mem.n_banks, "L1 banks (32-bit, word-interleaved)"),
        ("BANK_WORDS", mem.bank_words, "32-bit words per L1 bank"),
        ("N_CORES", ic.n_cores, "core ports of the cluster"),
        ("DMA_BITS", d.dma_bits, "width of the DMA's L2 port in bits"),
        ("DMA_QUEUE_DEPTH", d.queue_depth, "descriptors the DMA queues while one runs"),
        ("L2_ADDR_BITS", d.l2_addr_bits, "L2 byte address bits of the DMA"),
    ]


def _config_hash(cfg: ClusterConfig) -> int:
    return int(cfg.stable_hash()[:8], 16)


@functools.lru_cache(maxsize=32)
def register_map(cfg: ClusterConfig) -> MemoryMap:
    """The register map of the cluster peripherals for ``cfg`` (validated, cached).

    Blocks and byte offsets from the register block's base: ``CLUSTER`` 0x000
    (read-only configuration), ``ENGINE`` 0x100, ``DMA`` 0x200, ``EVENTS`` 0x300.
    """
    ports = Ports(control_ports_signature(cfg))
    major, minor = REGMAP_VERSION
    b = MapBuilder(
        "tinyattn",
        "tinyattn cluster peripherals: configuration, attention engine, DMA, events",
        internal=INTERNAL,
    )
    b.add(_cluster_block(cfg), 0x000)
    b.add(_engine_block(ports), 0x100)
    b.add(_dma_block(ports), 0x200)
    b.add(_events_block(ports), 0x300)
    b.add(_host_block(ports), 0x400)
    b.add(_seq_block(ports), 0x500)
    b.constant("REGMAP_VERSION_MAJOR", major, "register map major version")
    b.constant("REGMAP_VERSION_MINOR", minor, "register map minor version")
    b.constant("CONFIG_HASH", _config_hash(cfg), "CLUSTER_CONFIG_HASH of this configuration")
    for name, value, desc in _cluster_constants(cfg):
        b.constant(name, value, desc)
    b.constant("L1_BYTES", cfg.memory.size_bytes, "L1 (TCDM) capacity in bytes")
    b.constant(
        "L1_BASE",
        L1_BASE,
        "core address of L1 byte 0; engine jobs and DMA descriptors use L1 offsets",
    )
    b.constant("REGS_BASE", PERIPH_BASE, "core address of this register block")
    b.constant("RISCV_CORES", cfg.core.count, "core ports 0 .. RISCV_CORES-1 carry a PicoRV32")
    b.constant("PRIVATE_BASE", PRIVATE_BASE, "core address of each core's private memory")
    b.constant("PRIVATE_BYTES", cfg.core.private_bytes, "private memory per core in bytes")
    b.constant("STACK_BYTES", cfg.core.stack_bytes, "stack reserved at the top of private memory")
    b.constant("DMA_ALIGN_BYTES", ALIGN_BYTES, "DMA addresses, row lengths, strides: multiple")
    b.constant("PARAM_RECORD_BYTES", PARAM_RECORD_BYTES, "bytes per GEMM parameter record")
    mm = b.build()
    _check_payload_coverage(mm, ports)
    return mm


RO, RW, W1P, W1C = Access.RO, Access.RW, Access.W1P, Access.W1C


def _field(
    name: str,
    offset: int,
    access: Access,
    hw: PortBinding | InternalSignal,
    desc: str,
    values: tuple[EnumValue, ...] = (),
    flags: bool = False,
    enum: str = "",
) -> Field:
    """A field as wide as its binding, reset to 0."""
    return Field(name, offset, hw.width, access, 0, desc, hw, values, flags, enum)


def _const(name: str, value: int, desc: str) -> Register:
    return Register(name, desc, (Field("VALUE", 0, REG_BITS, RO, value, desc, CONSTANT),))


def _push_register(
    name: str, unit: str, item: str, held: str, push: InternalSignal, pending: InternalSignal
) -> tuple[Register, Field]:
    """The push register of ``unit``'s queue of ``item`` s (its PUSH field pushes the
    staged ``item``) and the STATUS.PUSH_PENDING field, bit 1; while a push is pending,
    writes to ``held`` get no grant."""
    field = _field(
        "PUSH",
        0,
        W1P,
        push,
        f"push the staged {item}; with the queue full it stays pending (STATUS.PUSH_PENDING) "
        f"until the {unit} takes it",
    )
    register = Register(
        name, f"push the staged {item} into the queue", (field,), stall_while=pending
    )
    pending_field = _field(
        "PUSH_PENDING",
        1,
        RO,
        pending,
        f"a pushed {item} waits for room in the queue; writes to {held} are held (no gnt) "
        "meanwhile",
    )
    return register, pending_field


def _cluster_block(cfg: ClusterConfig) -> Block:
    major, minor = REGMAP_VERSION
    version = (
        Field("MINOR", 0, 16, RO, minor, "minor version (additions)", CONSTANT),
        Field("MAJOR", 16, 16, RO, major, "major version (moves)", CONSTANT),
    )
    return Block(
        "CLUSTER",
        "Read-only configuration of this cluster, from the ClusterConfig it was generated for.",
        (
            Register("VERSION", "register map version", version),
            _const(
                "CONFIG_HASH",
                _config_hash(cfg),
                "first 8 hex digits of ClusterConfig.stable_hash(); compare with "
                "TINYATTN_CONFIG_HASH to check that firmware and hardware match",
            ),
            *(_const(name, value, desc) for name, value, desc in _cluster_constants(cfg)),
        ),
    )


def _engine_block(ports: Ports) -> Block:
    pending = Internal.ENGINE_PUSH_PENDING
    engine = ports.engine
    job = engine.jobs.payload

    def staging(name: str, desc: str, *fields: Field, offset: int | None = None) -> Register:
        return Register(name, desc, fields, offset=offset, stall_while=pending)

    def one(name: str, hw: PortBinding, field_name: str, desc: str) -> Register:
        return staging(name, desc, _field(field_name, 0, RW, hw, desc))

    def requant(name: str, requant: PortBinding, what: str) -> Register:
        return staging(
            name,
            f"{what} requantization (attention jobs)",
            _field("MULT", 0, RW, requant.mult, "multiplier, uint8"),
            _field("SHIFT", 8, RW, requant.shift, "right shift, 0..31"),
            _field("ADD", 16, RW, requant.add, "offset after the shift, int8 bit pattern"),
        )

    def counter(
        name: str,
        hw: PortBinding | InternalSignal,
        desc: str,
        read_action: InternalSignal | None = None,
    ) -> Register:
        return Register(name, desc, (_field("COUNT", 0, RO, hw, desc),), read_action=read_action)

    tensors = {
        "A": "X (GEMM) / Q (attention)",
        "B": "W^T (GEMM) / K (attention)",
        "C": "Y (GEMM) / O (attention)",
        "D": "R, the residual (GEMM) / V^T (attention)",
    }
    tensor_regs = []
    for t, what in tensors.items():
        lt = t.lower()
        tensor_regs += [
            one(f"JOB_{t}_ADDR", getattr(job, f"{lt}_addr"), "ADDR", f"L1 byte address of {what}"),
            one(
                f"JOB_{t}_STRIDE",
                getattr(job, f"{lt}_stride"),
                "STRIDE",
                f"row stride of {what}, bytes",
            ),
            one(
                f"JOB_{t}_HSTRIDE",
                getattr(job, f"{lt}_hstride"),
                "HSTRIDE",
                f"head stride of {what}, bytes",
            ),
        ]
    push, push_pending = _push_register(
        "JOB_PUSH",
        "engine",
        "job",
        "JOB_PUSH and the JOB_* staging registers",
        Internal.ENGINE_PUSH,
        pending,
    )
    status = (
        _field("BUSY", 0, RO, engine.status.busy, "a job runs, one is queued, or a clear drains"),
        push_pending,
        _field(
            "ERROR_CODE",
            4,
            RO,
            engine.status.error,
            "JobError of the last finished job (0: it succeeded)",
            values=_enum_values(JobError, _JOB_ERROR_DESC),
            enum="JOB_ERROR",
        ),
        _field(
            "QUEUED",
            8,
            RO,
            engine.status.queued,
            "jobs waiting in the queue (the running one not counted)",
        ),
    )
    clear = _field(
        "CLEAR",
        0,
        W1P,
        engine.clear,
        "soft clear: drops the queued jobs, the running one and a pending push",
    )
    op = _field(
        "OP",
        0,
        RW,
        job.op,
        "job kind (Op); 0 and 3 are rejected",
        values=_enum_values(Op, _OP_DESC),
        enum="OP",
    )
    flags = _field(
        "FLAGS",
        8,
        RW,
        job.flags,
        "GEMM epilogue flags; attention: 8 = PER_HEAD (qk/av per head from p_addr) or 0",
        values=_flag_values(),
        flags=True,
        enum="FLAG",
    )
    heads = _field("HEADS", 16, RW, job.heads, "attention heads (>= 1)")
    res = (
        _field("Y_MULT", 0, RW, job.res_y_mult, "multiplier of the result"),
        _field("R_MULT", 8, RW, job.res_r_mult, "multiplier of the residual"),
        _field("SHIFT", 16, RW, job.res_shift, "right shift of the sum"),
    )
    return Block(
        "ENGINE",
        "The attention engine: job staging registers, the push into its job queue, status "
        "and performance counters.",
        (
            Register("STATUS", "engine status", status),
            Register("CTRL", "engine control", (clear,)),
            push,
            counter("JOBS_DONE", Internal.JOBS_DONE, "done events (jobs finished or rejected)"),
            counter("BUSY_CYCLES", engine.busy_cycles, "cycles with a job running"),
            counter(
                "STALL_CYCLES",
                engine.stall_cycles,
                "busy cycles in which the array had work but issued no beat",
            ),
            counter("IDLE_CYCLES", engine.idle_cycles, "cycles with no job running"),
            counter(
                "MACS_LO",
                engine.macs[0:32],
                "useful MACs of finished jobs, bits 31:0; a read latches bits 63:32 into MACS_HI",
                read_action=Internal.MACS_LATCH,
            ),
            counter(
                "MACS_HI",
                Internal.MACS_HI,
                "useful MACs, bits 63:32, as latched by the last read of MACS_LO",
            ),
            # Staging starts at a round offset, after room for more status registers.
            staging(
                "JOB_OP", "job kind, epilogue flags, head count", op, flags, heads, offset=0x40
            ),
            one("JOB_M", job.m, "M", "rows of X / queries"),
            one("JOB_N", job.n, "N", "output channels (GEMM) / keys (attention)"),
            one("JOB_K", job.k, "K", "reduction length (GEMM) / head dimension (attention)"),
            *tensor_regs,
            one("JOB_P_ADDR", job.p_addr, "ADDR", "L1 byte address of the parameter records"),
            requant("JOB_QK", job.qk, "Q.K^T"),
            requant("JOB_AV", job.av, "P.V"),
            staging("JOB_RES", "residual add (GEMM with RESIDUAL)", *res),
            staging(
                "JOB_AFF",
                "per-channel affine (GEMM with AFFINE)",
                _field("SHIFT", 0, RW, job.aff_shift, "right shift after x * gamma + beta"),
            ),
        ),
    )


def _dma_block(ports: Ports) -> Block:
    pending = Internal.DMA_PUSH_PENDING
    dma = ports.dma
    cmd = dma.cmd.payload

    def staging(
        name: str,
        hw: PortBinding,
        field_name: str,
        desc: str,
        offset: int | None = None,
        values: tuple[EnumValue, ...] = (),
        enum: str = "",
    ) -> Register:
        f = _field(field_name, 0, RW, hw, desc, values=values, enum=enum)
        return Register(name, desc, (f,), offset=offset, stall_while=pending)

    push, push_pending = _push_register(
        "PUSH",
        "DMA",
        "descriptor",
        "PUSH and the staging registers",
        Internal.DMA_PUSH,
        pending,
    )
    status = (
        _field("BUSY", 0, RO, dma.busy, "a transfer runs, one is queued, or a clear drains"),
        push_pending,
        _field(
            "ERROR",
            2,
            RO,
            dma.error,
            "sticky: a descriptor was rejected since the last CLEAR or ERROR_ACK",
        ),
        _field(
            "ERROR_CODE",
            4,
            RO,
            dma.error_code,
            "DmaError of the first rejected descriptor since then",
            values=_enum_values(DmaError, _DMA_ERROR_DESC),
            enum="DMA_ERROR",
        ),
        _field(
            "QUEUE_LEVEL",
            8,
            RO,
            dma.queue_level,
            "descriptors waiting in the queue (the running one not counted)",
        ),
    )
    ctrl = (
        _field(
            "CLEAR",
            0,
            W1P,
            dma.clear,
            "soft clear: drops the queue, the running transfer and a pending push; clears "
            "the error",
        ),
        _field("ERROR_ACK", 1, W1P, dma.error_ack, "clears STATUS.ERROR and STATUS.ERROR_CODE"),
    )
    done = _field(
        "COUNT",
        0,
        RO,
        Internal.DMA_DONE_COUNT,
        "done events (transfers completed or rejected)",
    )
    return Block(
        "DMA",
        "The 2-D L2 <-> L1 DMA: descriptor staging registers, the push into its queue, "
        "status and a completion counter.",
        (
            Register("STATUS", "DMA status", status),
            Register("CTRL", "DMA control", ctrl),
            push,
            Register("DONE_COUNT", done.desc, (done,)),
            # Staging starts at a round offset, after room for more status registers.
            staging("L2_ADDR", cmd.l2_addr, "ADDR", "L2 byte address of row 0", offset=0x20),
            staging("L1_ADDR", cmd.l1_addr, "ADDR", "L1 byte address of row 0 (from the L1 base)"),
            staging("ROW_BYTES", cmd.row_bytes, "BYTES", "bytes per row"),
            staging("ROWS", cmd.rows, "ROWS", "number of rows"),
            staging(
                "L2_STRIDE", cmd.l2_stride, "STRIDE", "bytes from one row start to the next, L2"
            ),
            staging(
                "L1_STRIDE", cmd.l1_stride, "STRIDE", "bytes from one row start to the next, L1"
            ),
            staging(
                "DIRECTION",
                cmd.direction,
                "DIRECTION",
                "transfer direction",
                values=_enum_values(Direction, _DIRECTION_DESC),
                enum="DMA_DIRECTION",
            ),
        ),
    )


def _events(ports: Ports) -> tuple[tuple[str, PortBinding | InternalSignal, str], ...]:
    """The event flags, in bit order: (name, binding, description)."""
    return (
        ("ENGINE_DONE", Internal.ENGINE_DONE, "an engine job finished or was rejected"),
        ("ENGINE_ERROR", Internal.ENGINE_ERROR, "an engine job was rejected"),
        ("DMA_DONE", Internal.DMA_DONE, "a DMA transfer completed or was rejected"),
        ("DMA_ERROR", Internal.DMA_ERROR, "a DMA descriptor was rejected"),
        ("BUS_ERROR", Internal.BUS_ERROR, "an access to an unmapped register address"),
        ("SEQ_DONE", ports.seq.done, "the command sequencer stopped: its list ended, or an error"),
    )


def _events_block(ports: Ports) -> Block:
    events = _events(ports)
    status = tuple(Field(n, i, 1, W1C, 0, d, hw) for i, (n, hw, d) in enumerate(events))
    enable = tuple(Field(n, i, 1, RW, 0, f"enable {n}") for i, (n, _, _) in enumerate(events))
    return Block(
        "EVENTS",
        "Event flags and the interrupt line: irq = OR of (IRQ_STATUS & IRQ_ENABLE).",
        (
            Register(
                "IRQ_STATUS",
                "sticky event flags; write 1 to clear (an event in the same cycle wins)",
                status,
            ),
            Register("IRQ_ENABLE", "interrupt enables, one per IRQ_STATUS flag", enable),
        ),
    )


def _host_block(ports: Ports) -> Block:
    host = ports.host
    return Block(
        "HOST",
        "The host side of a run: a console and the end-of-run register. In simulation "
        "the testbench collects the console and stops at HOST_EXIT; in an SoC they are "
        "the cluster's console_* and ended/exit_code ports.",
        (
            Register(
                "CONSOLE",
                "console output: each write sends the byte CHAR",
                (Field("CHAR", 0, 8, RW, 0, "the byte", host.console_char),),
                write_action=Internal.CONSOLE_WRITE,
            ),
            Register(
                "EXIT",
                "end of run: a write ends the run with exit code CODE (0 = success)",
                (Field("CODE", 0, REG_BITS, RW, 0, "the exit code", host.exit_code),),
                write_action=Internal.EXIT_WRITE,
            ),
        ),
    )


_SEQ_ERROR_DESC = {
    "NONE": "the list reached END (or none ran yet)",
    "BAD_COMMAND": "an unknown op, a WRITE of no words, a misaligned register offset",
    "BAD_ADDRESS": "a list, jump or stamp address outside L1 or misaligned",
    "TIMEOUT": "a WAIT took longer than WAIT_LIMIT cycles",
    "HW_ERROR": "an engine job or a DMA descriptor was rejected while the list ran",
    "ABORTED": "CTRL.ABORT",
}


def _seq_block(ports: Ports) -> Block:
    seq = ports.seq
    status = (
        _field("BUSY", 0, RO, seq.busy, "a command list runs"),
        _field(
            "ERROR",
            4,
            RO,
            seq.error,
            "why the last list stopped (until the next START)",
            values=_enum_values(SeqError, _SEQ_ERROR_DESC),
            enum="SEQ_ERROR",
        ),
    )
    ctrl = (
        _field("START", 0, W1P, seq.start, "run the list at LIST (ignored while BUSY)"),
        _field("ABORT", 1, W1P, seq.abort, "stop the running list after its bus access"),
    )

    def word(name: str, hw: PortBinding, desc: str, reset: int = 0) -> Register:
        f = Field("VALUE", 0, REG_BITS, RW, reset, desc, hw)
        return Register(name, desc, (f,))

    return Block(
        "SEQ",
        "The command sequencer: runs a list of register writes and waits from L1 "
        "(docs/sequencer.md).",
        (
            Register("STATUS", "sequencer status", status),
            Register("CTRL", "sequencer control", ctrl),
            word("LIST", seq.list_addr, "L1 byte address of the list's first command"),
            word("JOB_BASE", seq.job_base, "WAIT base JOB_BASE: set to the engine ticket count"),
            word("DMA_BASE", seq.dma_base, "WAIT base DMA_BASE: set to the DMA ticket count"),
            word(
                "WAIT_LIMIT",
                seq.wait_limit,
                "most cycles one WAIT may take before TIMEOUT (0: no limit)",
                reset=1 << 20,
            ),
            Register(
                "PC",
                "L1 address of the command that ran last (where the list stopped)",
                (_field("ADDR", 0, RO, seq.pc, "L1 byte address"),),
            ),
        ),
    )


def _check_payload_coverage(mm: MemoryMap, ports: Ports) -> None:
    """Every leaf of the job and descriptor payloads is driven by exactly one RW field."""
    driven = {f.hw for _, f in mm.fields() if f.access is Access.RW and f.hw is not None}
    for stream in (ports.engine.jobs, ports.dma.cmd):
        missing = [str(leaf) for leaf in payload_leaves(stream) if leaf not in driven]
        if missing:
            raise RegMapError(f"no staging register drives {', '.join(sorted(missing))}")
