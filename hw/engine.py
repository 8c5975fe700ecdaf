"""The attention engine: GEMM and multi-head attention jobs over a wide L1 port.

A job is cut into *units*, each a small GEMM the compute core runs
weight-stationary::

    unit   = up to tile_m rows x up to a few blocks of output channels
    chunk  = vec_len of the reduction axis: one operand beat per row
    block  = n_pe output channels: their weight vectors fill one core weight bank

    for unit:  for chunk:  for block:  for row:
        core(x = row chunk, w = bank[block], acc_in = bias | 0 | ACC[row][block])

- ``GEMM``: a unit is a tile of tile_m rows x vec_len channels of Y; X rows
  come from L1 through XBUF, weights are rows of Wᵀ.
- ``ATTENTION``: for every head and every tile of tile_m queries, two units.
  **QK**: X = the query rows, weights = key rows (all ``n`` keys, one chunk of
  ``k <= vec_len``); the requantized logits go to LOGITS and, group by
  group, into the ITAMax unit. **PV**: X = probabilities computed on the fly
  from LOGITS (``inv >> (m - x)``), weights = rows of Vᵀ (chunks of
  vec_len keys); the requantized output rows go to L1 like a GEMM tile's.

The engine is composed of parts, each a component in its own module
(``docs/engine.md`` has the table of their ports and how they connect):

- the :class:`~tinyattn.hw.engine_job_checker.JobChecker` validates a job;
- the :class:`~tinyattn.hw.engine_weight_fetcher.WeightFetcher` loads block
  after block into the core's two banks;
- the :class:`~tinyattn.hw.engine_x_fetcher.XFetcher` loads each chunk of X or
  Q rows into XBUF;
- the :class:`~tinyattn.hw.engine_param_fetcher.ParamFetcher` loads each GEMM
  tile's per-channel records;
- the :class:`~tinyattn.hw.engine_issuer.Issuer` streams operand beats into the
  core, one a cycle, and the :class:`~tinyattn.hw.engine_collector.Collector`
  takes results: partial sums to ACC, logits to LOGITS and ITAMax, output
  bytes to YBUF;
- the :class:`~tinyattn.hw.engine_residual_fetcher.ResidualFetcher` and the
  :class:`~tinyattn.hw.engine_writer.Writer` finish output rows (residual add,
  per-channel affine, ReLU) and write them to L1.

They run concurrently and meet through monotonic counters (a producer runs at
most two units of work ahead; every buffer has two slots). The fetchers and
the writer share the port through a fixed-priority
:class:`~tinyattn.hw.engine_port.PortArbiter`. This module holds the top: the
job queue, the controller (take a job, check it, run it, report it), the
buffers and the wiring.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig, ConfigError

from .compute_core import PIPELINE_DEPTH, ComputeCore
from .engine_buffers import engine_buffers
from .engine_collector import Collector
from .engine_issuer import Issuer
from .engine_job_checker import JobChecker
from .engine_param_fetcher import ParamFetcher
from .engine_port import PortArbiter, ReadTag
from .engine_residual_fetcher import ResidualFetcher
from .engine_walker import JOB_SEQ_BITS, job_context_signature
from .engine_weight_fetcher import WeightFetcher
from .engine_write_fence import WriteFence
from .engine_writer import Writer
from .engine_x_fetcher import XFetcher
from .itamax import ItaMax
from .job import JobError
from .job_layout import JobOp, job_layout
from .obi import obi_signature
from .wide_port import WidePort

__all__ = ["Engine", "engine_control_signature", "status_layout"]


def status_layout() -> data.StructLayout:
    return data.StructLayout(
        {
            "busy": unsigned(1),
            "error": unsigned(3),  # JobError of the last job (0: it succeeded)
            "queued": unsigned(5),  # jobs waiting in the queue
        }
    )


def engine_control_signature(cfg: ClusterConfig) -> wiring.Signature:
    """The engine's control ports, seen from the controller (the register block).

    ``jobs`` (out): stream of :func:`~tinyattn.hw.job_layout.job_layout`; ``clear``
    (out): soft clear; ``done`` (in): one-cycle event per finished job; ``status`` (in):
    :func:`status_layout`; ``busy_cycles``, ``stall_cycles``, ``idle_cycles`` (in, 32
    bits) and ``macs`` (in, 64 bits): the counters. :class:`Engine` has it as
    ``control : In(...)``. A function of ``cfg`` alone, so that the register map exists
    for configurations the engine cannot elaborate (``vec_len < 16``).
    """
    return wiring.Signature(
        {
            "jobs": Out(stream.Signature(job_layout(cfg))),
            "clear": Out(1),
            "done": In(1),
            "status": In(status_layout()),
            "busy_cycles": In(32),
            "stall_cycles": In(32),
            "idle_cycles": In(32),
            "macs": In(64),
        }
    )


class Engine(wiring.Component):
    """The attention engine top.

    Ports
    -----
    control : In(:func:`engine_control_signature`)
        The controller's side, flipped. ``control.jobs``: the job queue's input;
        ``ready`` is low while the queue is full. ``control.clear``: soft clear,
        drops queued jobs and the running one; requests already queued on the port
        lanes still complete and their responses are drained; then the engine is
        idle (``status.busy`` low). ``control.done``: one-cycle event per finished
        job, successful or rejected. ``control.status``: :func:`status_layout`.
        ``control.busy_cycles``, ``stall_cycles``, ``idle_cycles``: cycles with a
        job running; of those, cycles in which the array had work left but issued
        no beat (waiting for operands or for the writer); cycles with no job
        running. Only ``rst`` clears them. ``control.macs``: useful
        multiply-accumulates of the finished jobs.
    mem : Out(OBI).array(port_lanes)
        The wide L1 port; lane ``i`` carries word ``i`` of a beat.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        e = cfg.engine
        if e.vec_len < 16:
            raise ConfigError(
                "engine.vec_len",
                e.vec_len,
                "the engine needs at least 16 lanes (a 16-byte record a beat)",
            )
        if e.tile_m < PIPELINE_DEPTH + 2:
            raise ConfigError("engine.tile_m", e.tile_m, f"must be at least {PIPELINE_DEPTH + 2}")
        self.cfg = cfg
        addr_bits = cfg.memory.size_bytes.bit_length() - 1
        super().__init__(
            {
                "control": In(engine_control_signature(cfg)),
                "mem": Out(obi_signature(addr_bits)).array(e.port_lanes),
            }
        )

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        e = cfg.engine
        m = Module()

        m.submodules.core = core = ComputeCore(e)
        m.submodules.port = port = WidePort(cfg)
        m.submodules.itamax = itamax = ItaMax(cfg)
        for i in range(e.port_lanes):
            wiring.connect(m, wiring.flipped(self.mem[i]), port.lanes[i])

        # ---------------------------------------------------------------- job queue
        layout = job_layout(cfg)
        queue = SyncFIFO(width=layout.size, depth=e.job_queue_depth)
        # Soft clear: stop issuing, let the port and the core drain, then reset.
        # No job is taken while a clear drains (it would be dropped at the reset).
        clearing = Signal()
        internal_reset = Signal()
        m.submodules.queue = ResetInserter(internal_reset)(queue)
        m.d.comb += [
            queue.w_stream.payload.eq(self.control.jobs.payload),
            queue.w_stream.valid.eq(self.control.jobs.valid & ~clearing),
            self.control.jobs.ready.eq(queue.w_stream.ready & ~clearing),
            self.control.status.queued.eq(queue.level),
        ]
        with m.If(self.control.clear):
            m.d.sync += clearing.eq(1)
        with m.Elif(internal_reset):
            m.d.sync += clearing.eq(0)

        # ---------------------------------------------------------------- parts
        # The accepted jobs (two slots) and what every part sees of them.
        context = job_context_signature(cfg).create()
        accepted = context.accepted
        m.d.comb += [context.go.eq(~clearing), context.reset.eq(internal_reset)]

        m.submodules.checker = checker = JobChecker(cfg)
        m.submodules.weight_fetcher = weight_fetcher = WeightFetcher(cfg)
        m.submodules.x_fetcher = x_fetcher = XFetcher(cfg)
        m.submodules.param_fetcher = param_fetcher = ParamFetcher(cfg)
        m.submodules.residual_fetcher = residual_fetcher = ResidualFetcher(cfg)
        m.submodules.issuer = issuer = Issuer(cfg)
        m.submodules.collector = collector = Collector(cfg)
        m.submodules.writer = writer = Writer(cfg)
        parts = (
            weight_fetcher, x_fetcher, param_fetcher, residual_fetcher, issuer, collector, writer,
        )  # fmt: skip
        wiring.connect(m, context, *(part.ctrl for part in parts))

        # The buffers between the parts (see hw/engine_buffers.py).
        buffers = engine_buffers(cfg)
        for name, buffer in buffers.items():
            m.submodules[name] = buffer.memory()
        xbuf, acc, logits, ybuf = (m.submodules[name] for name in ("xbuf", "acc", "logits", "ybuf"))
        wiring.connect(m, x_fetcher.xbuf, xbuf.write_port())
        wiring.connect(m, issuer.xbuf, xbuf.read_port())
        wiring.connect(m, collector.acc, acc.write_port())
        wiring.connect(m, issuer.acc, acc.read_port())
        wiring.connect(m, collector.logits, logits.write_port(granularity=e.n_pe * 8))
        wiring.connect(m, issuer.logits, logits.read_port())
        wiring.connect(m, collector.ybuf, ybuf.write_port(granularity=e.n_pe * 8))
        wiring.connect(m, writer.ybuf, ybuf.read_port())

        # Operands in, results out of the core.
        wiring.connect(m, weight_fetcher.weights, core.weights)
        wiring.connect(m, issuer.operands, core.operands)
        wiring.connect(m, issuer.beats, collector.beats)
        wiring.connect(m, core.results, collector.results)
        wiring.connect(m, residual_fetcher.rows, writer.residual)
        m.d.comb += [
            issuer.retired.eq(collector.retired),
            # The softmax: logits in from the collector, max and 1/sum out to the issuer.
            itamax.valid.eq(collector.softmax_valid),
            itamax.row.eq(collector.softmax_row),
            itamax.first.eq(collector.softmax_first),
            itamax.last.eq(collector.softmax_last),
            itamax.groups.eq(collector.softmax_groups),
            itamax.logits.eq(collector.softmax_logits),
            itamax.read_row.eq(issuer.softmax_row),
            issuer.softmax_max.eq(itamax.read_m),
            issuer.softmax_inv.eq(itamax.read_inv),
            # The hand-over counters: each consumer waits for its producer's count.
            issuer.weights_loaded.eq(weight_fetcher.loaded),
            weight_fetcher.used.eq(issuer.weights_used),
            issuer.x_loaded.eq(x_fetcher.loaded),
            issuer.x_rows.eq(x_fetcher.rows),
            x_fetcher.used.eq(issuer.x_used),
            issuer.params_loaded.eq(param_fetcher.loaded),
            param_fetcher.issuer_unit.eq(issuer.unit),
            param_fetcher.freed.eq(writer.freed),
            issuer.records.eq(param_fetcher.records),
            writer.records.eq(param_fetcher.records),
            issuer.qk_done.eq(collector.qk_done),
            issuer.outputs_freed.eq(writer.freed),
            residual_fetcher.outputs_full.eq(collector.outputs_full),
            writer.outputs_full.eq(collector.outputs_full),
            writer.output_rows.eq(collector.output_rows),
        ]

        # ---------------------------------------------------------------- the port
        # Priority, highest first. Weights and the parameters of the tile the issuer
        # is on are short and the array starves without them; X comes next (the
        # issuer starts on its first rows); the parameters of a later tile can wait
        # for X (else a job's first X row waits for the second tile's records), and
        # residual rows and output writes for a free cycle.
        requests = (
            weight_fetcher.request,
            param_fetcher.request,
            x_fetcher.request,
            param_fetcher.request_ahead,
            residual_fetcher.request,
            writer.request,
        )
        m.submodules.arbiter = arbiter = PortArbiter(cfg, len(requests))
        for i, request in enumerate(requests):
            wiring.connect(m, request, arbiter.requests[i])
        wiring.connect(m, arbiter.beats, port.beats)
        # Read beats return in order, tagged with the part they are for.
        reads = port.reads
        m.d.comb += reads.ready.eq(1)
        for part, tag in (
            (weight_fetcher, ReadTag.WEIGHTS),
            (x_fetcher, ReadTag.X),
            (param_fetcher, ReadTag.PARAMS),
            (residual_fetcher, ReadTag.RESIDUAL),
        ):
            m.d.comb += [
                part.response.valid.eq(reads.valid & (reads.payload.tag == tag)),
                part.response.payload.eq(reads.payload.rdata),
            ]
        # A clear completes once nothing is in flight: on the port, in stage B of the
        # issuer or in the core.
        m.d.comb += internal_reset.eq(
            clearing & port.idle & ~issuer.beats.valid & ~collector.pending
        )

        # ---------------------------------------------------------------- controller
        # The controller takes a job from the queue (IDLE), checks it (CHECK) and, as
        # soon as a slot is free, accepts it into the slots the parts read, while the
        # jobs before it still run: each part moves on to it when it has finished its
        # share of the previous job. A job that reads what the job still in flight
        # before it writes waits until that job is done. Jobs are reported in order.
        job = Signal(layout)  # the job being checked
        m.d.comb += checker.job.eq(job)
        reported = Signal(JOB_SEQ_BITS)  # accepted jobs reported done
        writer_finished = Signal(JOB_SEQ_BITS)  # accepted jobs whose writes are all issued
        in_flight = Signal(range(3))  # accepted, not yet reported
        m.d.comb += in_flight.eq((accepted - reported)[:JOB_SEQ_BITS])
        running = Signal()
        m.d.comb += running.eq(in_flight != 0)
        # The byte range the last accepted job writes: the next one may not read it early.
        written_first = Signal(32)
        written_last = Signal(32)
        m.d.comb += [checker.written_first.eq(written_first), checker.written_last.eq(written_last)]
        slot_macs = Array(Signal(64, name=f"slot_macs{s}") for s in range(2))
        err_code = Signal(3)
        # done is registered: it rises in the cycle after the job's end, with the
        # error code and the MAC counter.
        m.d.sync += self.control.done.eq(0)

        # A job is done once the writer has issued its last row and those writes have
        # landed (the port is busy with the next job's reads by then).
        m.submodules.fence = fence = ResetInserter(internal_reset)(WriteFence(e.port_lanes))
        beats = arbiter.beats
        issued = beats.valid & beats.ready
        m.d.comb += [
            fence.issued.eq(Mux(issued, beats.payload.mask, 0)),
            fence.responded.eq(Cat(lane.rvalid for lane in self.mem)),
            fence.mark.eq(writer.finished),
        ]
        with m.If(writer.finished):
            m.d.sync += writer_finished.eq(writer_finished + 1)
        # Write after write: a job writes once the previous job's writes have landed.
        m.d.comb += writer.hold.eq(writer_finished != reported)
        report = Signal()
        m.d.comb += [
            report.eq((writer_finished != reported) & fence.landed & ~clearing),
            fence.retire.eq(report),
        ]
        with m.If(report):
            m.d.sync += [
                self.control.done.eq(1),
                err_code.eq(JobError.NONE),
                reported.eq(reported + 1),
                self.control.macs.eq(self.control.macs + slot_macs[reported[0]]),
            ]

        macs_job = job.m * job.n * job.k
        attention = job.op == JobOp.ATTENTION
        attention_macs = (macs_job * job.heads) << 1  # QK and PV
        with m.FSM(name="ctrl") as ctrl_fsm:
            with m.State("IDLE"):
                with m.If(queue.r_stream.valid & ~clearing):
                    m.d.comb += queue.r_stream.ready.eq(1)
                    m.d.sync += job.eq(queue.r_stream.payload)
                    m.next = "CHECK"
            with m.State("CHECK"):
                # Every check in this one cycle; the job waits here for its turn.
                with m.If(internal_reset):
                    m.next = "IDLE"  # a soft clear drops the job
                with m.Elif(clearing):
                    pass  # dropped at the clear's reset
                with m.Elif(checker.error != 0):
                    # Rejected: reported in order, after the jobs before it; L1 untouched.
                    with m.If(in_flight == 0):
                        m.d.sync += [self.control.done.eq(1), err_code.eq(checker.error)]
                        m.next = "IDLE"
                with m.Elif((in_flight == 0) | ((in_flight == 1) & ~checker.reads_written)):
                    for slot in range(2):
                        with m.If(accepted[0] == slot):
                            m.d.sync += [
                                context.jobs[slot].eq(job),
                                slot_macs[slot].eq(Mux(attention, attention_macs, macs_job)),
                            ]
                    m.d.sync += [
                        accepted.eq(accepted + 1),
                        written_first.eq(checker.output_first),
                        written_last.eq(checker.output_last),
                    ]
                    m.next = "IDLE"
        # A soft clear abandons the jobs (later statements win).
        with m.If(internal_reset):
            m.d.sync += [
                accepted.eq(0),
                reported.eq(0),
                writer_finished.eq(0),
                self.control.done.eq(0),
            ]
        m.d.comb += self.control.status.error.eq(err_code)

        # ---------------------------------------------------------------- counters
        m.d.sync += [
            self.control.busy_cycles.eq(self.control.busy_cycles + running),
            self.control.stall_cycles.eq(self.control.stall_cycles + issuer.stalled),
            self.control.idle_cycles.eq(self.control.idle_cycles + ~running),
        ]
        m.d.comb += self.control.status.busy.eq(
            running | queue.r_stream.valid | clearing | ~port.idle | ctrl_fsm.ongoing("CHECK")
        )
        return m
