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

- the :class:`~tinyattn.hw.engine_controller.Controller` takes jobs from its
  :class:`~tinyattn.hw.engine_job_queue.JobQueue`, accepts them into the job slots
  the other parts read, reports them done in queue order and counts cycles and MACs;
  the :class:`~tinyattn.hw.engine_job_checker.JobChecker` validates a job for it;
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
buffers and the wiring.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig, ConfigError

from .compute_core import PIPELINE_DEPTH, ComputeCore
from .engine_buffers import engine_buffers
from .engine_collector import Collector
from .engine_controller import Controller, engine_control_signature, status_layout
from .engine_issuer import Issuer
from .engine_job_checker import JobChecker
from .engine_param_fetcher import ParamFetcher
from .engine_port import PortArbiter, ReadTag
from .engine_residual_fetcher import ResidualFetcher
from .engine_weight_fetcher import WeightFetcher
from .engine_writer import Writer
from .engine_x_fetcher import XFetcher
from .itamax import ItaMax
from .obi import obi_signature
from .wide_port import WidePort

__all__ = ["Engine", "engine_control_signature", "status_layout"]


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

        # The controller: the job queue, the soft clear, the job slots every part reads,
        # the reports and the counters (see hw/engine_controller.py).
        m.submodules.controller = controller = Controller(cfg)
        m.submodules.checker = checker = JobChecker(cfg)
        wiring.connect(m, wiring.flipped(self.control), controller.control)
        wiring.connect(m, controller.checker, checker)

        # ---------------------------------------------------------------- parts
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
        wiring.connect(m, controller.context, *(part.ctrl for part in parts))

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
        # What the controller needs of the datapath: the writer's progress, the traffic
        # on each lane (for the write fence), and whether work is still in flight (a soft
        # clear completes once nothing is: on the port, in stage B of the issuer or in
        # the core).
        beats = arbiter.beats
        m.d.comb += [
            controller.writer_finished.eq(writer.finished),
            writer.hold.eq(controller.writer_hold),
            controller.port_requests.eq(Mux(beats.valid & beats.ready, beats.payload.mask, 0)),
            controller.port_responses.eq(Cat(lane.rvalid for lane in self.mem)),
            controller.port_idle.eq(port.idle),
            controller.compute_idle.eq(~issuer.beats.valid & ~collector.pending),
            controller.stalled.eq(issuer.stalled),
        ]
        return m
