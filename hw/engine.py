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

Six processes run concurrently and meet through monotonic counters (a
producer runs at most two units of work ahead; every buffer has two slots):

- the **weight fetcher** loads block after block into the core's two banks;
- the **X fetcher** loads each chunk of X or Q rows into XBUF;
- the **parameter fetcher** loads each GEMM tile's per-channel records;
- the **issuer** streams operand beats into the core, one a cycle, and the
  **collector** takes results: partial sums to ACC, logits to LOGITS and
  ITAMax, output bytes to YBUF;
- the **residual fetcher** and the **writer** finish output rows (residual
  add, per-channel affine, ReLU) and write them to L1.

The fetchers and the writer share the port through a fixed-priority arbiter
(weights, the issuer's tile's parameters, X, later tiles' parameters,
residual, writes).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig, ConfigError

from .compute_core import PIPELINE_DEPTH, ComputeCore
from .itamax import ItaMax, probabilities
from .job import (
    FLAG_AFFINE,
    FLAG_PER_ROW,
    FLAG_RELU,
    FLAG_RESIDUAL,
    FLAGS_ALL,
    PARAM_RECORD_BYTES,
    JobError,
    Op,
)
from .job_layout import job_layout
from .obi import obi_signature
from .wide_port import MAX_READS, WidePort

__all__ = ["Engine", "status_layout"]

#: Port priority, highest first. Weights and the parameters of the tile the
#: issuer is on are short and the array starves without them; X comes next (the
#: issuer starts on its first rows); the parameters of a later tile can wait for
#: X (else a job's first X row waits for the second tile's records), and residual
#: rows and output writes for a free cycle.
PRIORITY = ("wf", "pf", "xf", "pf_ahead", "rf", "yw")

# Read-beat tags: which process a returning beat belongs to.
TAG_W, TAG_X, TAG_P, TAG_R = 0, 1, 2, 3

param_layout = data.StructLayout(
    {
        "bias": signed(32),
        "mult": unsigned(8),
        "shift": unsigned(5),
        "add": signed(8),
        "gamma": signed(16),
        "beta": signed(32),
    }
)


def status_layout() -> data.StructLayout:
    return data.StructLayout(
        {
            "busy": unsigned(1),
            "error": unsigned(3),  # JobError of the last job (0: it succeeded)
            "queued": unsigned(5),  # jobs waiting in the queue
        }
    )


def _sat8(v: object) -> object:
    return Mux(v > 127, 127, Mux(v < -128, -128, v))


def _ceil_div_pow2(value: object, divisor: int) -> object:
    shift = divisor.bit_length() - 1
    return (value + divisor - 1) >> shift


class _Shape:
    """Job-wide values every unit walker needs (combinational, from the running job)."""

    def __init__(self, m: Module, job: object, e: object) -> None:
        self.job = job
        self.attention = Signal(name="is_attention")
        m.d.comb += self.attention.eq(job.op == Op.ATTENTION)
        lanes, vec_len = e.port_lanes, e.vec_len

        def chunks_and_last(dim):
            chunks = Signal(16)
            last = Signal(range(lanes + 1))
            m.d.comb += [
                chunks.eq(_ceil_div_pow2(dim, vec_len)),
                last.eq((((dim - 1) & (vec_len - 1)) >> 2) + 1),
            ]
            return chunks, last

        self.k_chunks, self.k_last_words = chunks_and_last(job.k)
        self.n_chunks, self.n_last_words = chunks_and_last(job.n)


class _UnitWalker:
    """One process's position in the job's sequence of units.

    GEMM: tiles, m0 outer and n0 inner. ATTENTION: heads, then query tiles,
    then the QK and PV units of each. ``out_index`` counts the units that
    produce output rows (GEMM tiles, PV units); their YBUF slot is its low bit.
    """

    def __init__(self, m: Module, name: str, shape: _Shape, e: object) -> None:
        job = shape.job
        self.shape = shape
        self.e = e
        self.m0 = Signal(job.m.shape(), name=f"{name}_m0")
        self.n0 = Signal(job.n.shape(), name=f"{name}_n0")
        self.head = Signal(8, name=f"{name}_head")
        self.phase = Signal(name=f"{name}_phase")  # attention: 0 = QK, 1 = PV
        self.index = Signal(16, name=f"{name}_unit")
        self.out_index = Signal(16, name=f"{name}_out")
        self.done = Signal(name=f"{name}_done")
        self.rows = Signal(range(e.tile_m + 1), name=f"{name}_rows")
        self.cols = Signal(range(max(e.vec_len, e.max_seq) + 1), name=f"{name}_cols")
        self.chunks = Signal(16, name=f"{name}_chunks")
        self.last_words = Signal(range(e.port_lanes + 1), name=f"{name}_last_words")
        self.is_qk = Signal(name=f"{name}_is_qk")
        self.is_pv = Signal(name=f"{name}_is_pv")
        self.outputs = Signal(name=f"{name}_outputs")  # this unit writes output rows
        att = shape.attention
        left_m = job.m - self.m0
        left_n = job.n - self.n0
        gemm_cols = Mux(left_n > e.vec_len, e.vec_len, left_n)
        m.d.comb += [
            self.rows.eq(Mux(left_m > e.tile_m, e.tile_m, left_m)),
            self.is_qk.eq(att & ~self.phase),
            self.is_pv.eq(att & self.phase),
            self.outputs.eq(~self.is_qk),
            self.cols.eq(Mux(self.is_qk, job.n, Mux(self.is_pv, job.k, gemm_cols))),
            self.chunks.eq(Mux(self.is_qk, 1, Mux(self.is_pv, shape.n_chunks, shape.k_chunks))),
            self.last_words.eq(
                Mux(self.is_qk, job.k >> 2, Mux(self.is_pv, shape.n_last_words, shape.k_last_words))
            ),
        ]
        self.blocks = _ceil_div_pow2(self.cols, e.n_pe)

    def reset(self) -> list:
        return [
            s.eq(0)
            for s in (
                self.m0,
                self.n0,
                self.head,
                self.phase,
                self.index,
                self.out_index,
                self.done,
            )
        ]

    def advance_in(self, m: Module) -> None:
        """Step to the next unit (call inside the condition that steps)."""
        job, e = self.shape.job, self.e
        last_n = self.n0 + e.vec_len >= job.n
        last_m = self.m0 + e.tile_m >= job.m
        last_head = self.head == job.heads - 1
        m.d.sync += [
            self.index.eq(self.index + 1),
            self.out_index.eq(self.out_index + self.outputs),
        ]
        with m.If(self.shape.attention):
            m.d.sync += [
                self.phase.eq(~self.phase),
                self.m0.eq(Mux(self.phase, Mux(last_m, 0, self.m0 + e.tile_m), self.m0)),
                self.head.eq(Mux(self.phase & last_m, self.head + 1, self.head)),
                self.done.eq(self.phase & last_m & last_head),
            ]
        with m.Else():
            m.d.sync += [
                self.n0.eq(Mux(last_n, 0, self.n0 + e.vec_len)),
                self.m0.eq(Mux(last_n, self.m0 + e.tile_m, self.m0)),
                self.done.eq(last_n & last_m),
            ]


class Engine(wiring.Component):
    """The attention engine top.

    Ports
    -----
    jobs : In(stream of :func:`tinyattn.hw.job.job_layout`)
        The job queue's input; ``ready`` is low while the queue is full.
    mem : Out(OBI).array(port_lanes)
        The wide L1 port; lane ``i`` carries word ``i`` of a beat.
    clear : In(1)
        Soft clear: drops queued jobs and the running one. Requests already
        queued on the port lanes still complete and their responses are
        drained; then the engine is idle (``status.busy`` low).
    done : Out(1)
        One-cycle event per finished job, successful or rejected.
    status : Out(:func:`status_layout`)
    busy_cycles, stall_cycles, idle_cycles : Out(32)
        Cycles with a job running; of those, cycles in which the array had
        work left but issued no beat (waiting for operands or for the
        writer); cycles with no job running. Only ``rst`` clears them.
    macs : Out(64)
        Useful multiply-accumulates of the finished jobs.
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
                "jobs": In(stream.Signature(job_layout(cfg))),
                "mem": Out(obi_signature(addr_bits)).array(e.port_lanes),
                "clear": In(1),
                "done": Out(1),
                "status": Out(status_layout()),
                "busy_cycles": Out(32),
                "stall_cycles": Out(32),
                "idle_cycles": Out(32),
                "macs": Out(64),
            }
        )

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        e = cfg.engine
        n_pe, vec_len, lanes, tile_m = e.n_pe, e.vec_len, e.port_lanes, e.tile_m
        acc_blocks = vec_len // n_pe  # blocks of a GEMM tile or a PV unit
        blocks_max = max(vec_len, e.max_seq) // n_pe  # QK: all keys
        groups_per_word = vec_len // n_pe  # logit groups in one LOGITS word
        logit_words = max(1, e.max_seq // vec_len)  # LOGITS words per row
        records_per_beat = lanes // 4
        entries = max(tile_m, vec_len)
        m = Module()

        m.submodules.core = core = ComputeCore(e)
        m.submodules.port = port = WidePort(cfg)
        m.submodules.itamax = itamax = ItaMax(cfg)
        for i in range(lanes):
            wiring.connect(m, wiring.flipped(self.mem[i]), port.lanes[i])

        # ---------------------------------------------------------------- job queue
        jl = job_layout(cfg)
        queue = SyncFIFO(width=jl.size, depth=e.job_queue_depth)
        # Soft clear: stop issuing, let the port and the core drain, then reset.
        # No job is taken while a clear drains (it would be dropped at the reset).
        clearing = Signal()
        m.d.comb += [
            queue.w_data.eq(self.jobs.payload.as_value()),
            queue.w_en.eq(self.jobs.valid & ~clearing),
            self.jobs.ready.eq(queue.w_rdy & ~clearing),
            self.status.queued.eq(queue.level),
        ]
        job = Signal(jl)  # the running job, latched from the queue head

        internal_reset = Signal()
        with m.If(self.clear):
            m.d.sync += clearing.eq(1)
        with m.Elif(internal_reset):
            m.d.sync += clearing.eq(0)
        m.submodules.queue = ResetInserter(internal_reset)(queue)
        m.d.comb += queue.r_en.eq(0)  # default; the controller pops

        # ---------------------------------------------------------------- controller
        shape = _Shape(m, job, e)
        attention = shape.attention
        per_row = (job.flags & FLAG_PER_ROW) != 0
        residual_en = (job.flags & FLAG_RESIDUAL) != 0
        affine_en = (job.flags & FLAG_AFFINE) != 0
        relu_en = (job.flags & FLAG_RELU) != 0
        post_en = residual_en | affine_en

        running = Signal()  # the fetchers, issuer and writer are active
        err_code = Signal(3)
        macs_job = Signal(64)
        writer_done = Signal()

        # Validation: every check in the one CHECK cycle (the tensor extents are
        # computed side by side anyway; only their comparators are added).
        l1_size = cfg.memory.size_bytes
        queued_job = jl(queue.r_data)

        def extent(addr, stride, rows, row_bytes, hstride=None):
            last = addr + (rows - 1) * stride + row_bytes - 1
            if hstride is not None:
                last = last + (job.heads - 1) * hstride
            return last

        channels = Mux(per_row, job.m, job.n)
        gemm_last = [
            extent(job.a_addr, job.a_stride, job.m, job.k),
            extent(job.b_addr, job.b_stride, job.n, job.k),
            extent(job.c_addr, job.c_stride, job.m, job.n),
            extent(job.p_addr, PARAM_RECORD_BYTES, channels, PARAM_RECORD_BYTES),
            Mux(residual_en, extent(job.d_addr, job.d_stride, job.m, job.n), 0),
        ]
        attention_last = [
            extent(job.a_addr, job.a_stride, job.m, job.k, job.a_hstride),
            extent(job.b_addr, job.b_stride, job.n, job.k, job.b_hstride),
            extent(job.c_addr, job.c_stride, job.m, job.k, job.c_hstride),
            extent(job.d_addr, job.d_stride, job.k, job.n, job.d_hstride),
            Const(0),
        ]
        out_of_range = Signal()
        m.d.comb += out_of_range.eq(
            Cat(
                *[
                    Mux(attention, a, g) >= l1_size
                    for g, a in zip(gemm_last, attention_last, strict=True)
                ]
            ).any()
        )

        # Alignment of exactly the tensors the job touches (as verif/engine_model.py).
        def low(*values):
            return Cat(*[v[:2] for v in values]).any()

        common = low(job.a_addr, job.b_addr, job.c_addr, job.a_stride, job.b_stride, job.c_stride)
        d_used = low(job.d_addr, job.d_stride)
        heads_used = low(job.a_hstride, job.b_hstride, job.c_hstride, job.d_hstride)
        misaligned = Signal()
        m.d.comb += misaligned.eq(
            common
            | Mux(
                attention,
                d_used | ((job.heads > 1) & heads_used),
                low(job.p_addr) | (residual_en & d_used),
            )
        )
        bad_op = (job.op != Op.GEMM) & (job.op != Op.ATTENTION)
        bad_flags = Mux(attention, job.flags != 0, (job.flags & ~FLAGS_ALL) != 0)
        zero = (job.m == 0) | (job.n == 0) | (job.k == 0) | (attention & (job.heads == 0))
        too_big = (
            (job.m > e.max_dim)
            | (job.n > e.max_dim)
            | (job.k > e.max_dim)
            | (attention & ((job.k > vec_len) | (job.n > e.max_seq)))
        )
        off_granule = (
            (job.n[:2] != 0)
            | (job.k[:2] != 0)
            | (attention & (job.n[: (n_pe - 1).bit_length()] != 0))
        )

        # The first failing check gives the job's error code (later statements win).
        check_err = Signal(3)
        checks = [
            (bad_op | bad_flags, JobError.UNKNOWN_OP),
            (zero, JobError.ZERO_DIM),
            (too_big, JobError.DIM_LIMIT),
            (off_granule, JobError.GRANULE),
            (misaligned, JobError.MISALIGNED),
            (out_of_range, JobError.OUT_OF_RANGE),
        ]
        for fails, code in reversed(checks):
            with m.If(fails):
                m.d.comb += check_err.eq(code)

        # done is registered: it rises in the cycle after the job's end, with the
        # error code and the MAC counter, while the controller is already back in
        # IDLE and may take the next job (no FINISH bubble between queued jobs).
        m.d.sync += self.done.eq(0)

        def abandon_on_clear() -> None:
            # A soft clear abandons the job; later statements win.
            with m.If(internal_reset):
                m.d.sync += [running.eq(0), self.done.eq(0)]
                m.next = "IDLE"

        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                with m.If(queue.r_rdy & ~clearing):
                    m.d.comb += queue.r_en.eq(1)
                    m.d.sync += job.eq(queued_job)
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += err_code.eq(check_err)
                with m.If(check_err != 0):
                    m.d.sync += self.done.eq(1)  # rejected: done at once, L1 untouched
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [running.eq(1), macs_job.eq(job.m * job.n * job.k)]
                    m.next = "RUN"
                abandon_on_clear()
            with m.State("RUN"):
                with m.If(writer_done & port.idle):
                    m.d.sync += [
                        self.done.eq(1),
                        running.eq(0),
                        self.macs.eq(
                            self.macs + Mux(attention, (macs_job * job.heads) << 1, macs_job)
                        ),
                    ]
                    m.next = "IDLE"
                abandon_on_clear()
        m.d.comb += self.status.error.eq(err_code)

        # ---------------------------------------------------------------- buffers
        m.submodules.xbuf = xbuf = Memory(shape=unsigned(vec_len * 8), depth=2 * tile_m, init=[])
        m.submodules.accbuf = accbuf = Memory(
            shape=unsigned(n_pe * e.acc_bits), depth=tile_m * acc_blocks, init=[]
        )
        m.submodules.ybuf = ybuf = Memory(shape=unsigned(vec_len * 8), depth=2 * tile_m, init=[])
        m.submodules.logits = logits = Memory(
            shape=unsigned(vec_len * 8), depth=tile_m * logit_words, init=[]
        )
        xbuf_w, xbuf_r = xbuf.write_port(), xbuf.read_port()
        acc_w, acc_r = accbuf.write_port(), accbuf.read_port()
        ybuf_w, ybuf_r = ybuf.write_port(granularity=n_pe * 8), ybuf.read_port()
        lg_w, lg_r = logits.write_port(granularity=n_pe * 8), logits.read_port()
        params = [
            [Signal(param_layout, name=f"param{s}_{i}") for i in range(entries)] for s in range(2)
        ]

        # Monotonic hand-over counters, reset per job.
        names = (
            "w_loaded", "w_used", "x_loaded", "x_used", "p_loaded", "p_freed",
            "y_full", "y_freed", "qk_done",
        )  # fmt: skip
        cnt = {name: Signal(20, name=name) for name in names}

        # Destination queues: what each outstanding read beat is for, in issue order.
        def dest_queue(name: str, layout: data.StructLayout):
            q = SyncFIFOBuffered(width=layout.size, depth=MAX_READS + 1)
            m.submodules[name] = q
            entry = Signal(layout, name=f"{name}_in")
            m.d.comb += q.w_data.eq(entry.as_value())
            return q, entry, layout(q.r_data)

        wq, w_dest, wd = dest_queue(
            "w_dest", data.StructLayout({"unit": range(n_pe), "bank": 1, "last": 1})
        )
        xq, x_dest, xd = dest_queue(
            "x_dest", data.StructLayout({"row": range(2 * tile_m), "last": 1})
        )
        pq, p_dest, pd = dest_queue(
            "p_dest", data.StructLayout({"slot": 1, "first": range(entries), "last": 1})
        )

        # Port arbitration: each requester offers a beat; the highest-priority one wins.
        offers = []  # (priority, valid, fields, accepted)

        def requester(name: str, valid, ahead=None, **fields):
            # Fields are expressions muxed onto the port payload by the arbiter
            # (no intermediate Signal: its unused write data would be undriven).
            # With ``ahead``, the beat is offered at the priority of
            # ``<name>_ahead`` while ``ahead`` holds.
            v = Signal(name=f"{name}_valid")
            a = Signal(name=f"{name}_accepted")
            if ahead is None:
                m.d.comb += v.eq(valid)
                offers.append((PRIORITY.index(name), v, fields, a))
                return a
            va = Signal(name=f"{name}_ahead_valid")
            aa = Signal(name=f"{name}_ahead_accepted")
            m.d.comb += [v.eq(valid & ~ahead), va.eq(valid & ahead)]
            offers.append((PRIORITY.index(name), v, fields, a))
            offers.append((PRIORITY.index(f"{name}_ahead"), va, fields, aa))
            return a | aa

        def word_mask(words):
            n = Signal(range(lanes + 1))
            m.d.comb += n.eq(words)
            return ((Const(1, lanes + 1) << n) - 1)[:lanes]

        go = running & ~clearing

        # ---------------------------------------------------------------- weight fetcher
        wt = _UnitWalker(m, "wf", shape, e)
        wf_kc = Signal(16, name="wf_kc")
        wf_nb = Signal(range(blocks_max), name="wf_nb")
        wf_u = Signal(range(n_pe), name="wf_u")
        wf_block = Signal(20, name="wf_block")  # global block index
        wf_units = Mux(wt.cols - wf_nb * n_pe > n_pe, n_pe, wt.cols - wf_nb * n_pe)
        wf_words = Mux(wf_kc == wt.chunks - 1, wt.last_words, lanes)
        wf_last = wf_u == wf_units - 1
        wf_row = wf_nb * n_pe + wf_u
        wf_addr = Mux(
            wt.is_qk,
            job.b_addr + wt.head * job.b_hstride + wf_row * job.b_stride,
            Mux(
                wt.is_pv,
                job.d_addr + wt.head * job.d_hstride + wf_row * job.d_stride + wf_kc * vec_len,
                job.b_addr + (wt.n0 + wf_row) * job.b_stride + wf_kc * vec_len,
            ),
        )
        w_acc = requester(
            "wf",
            go & ~wt.done & (wf_block < cnt["w_used"] + 2) & wq.w_rdy,
            addr=wf_addr,
            we=0,
            mask=word_mask(wf_words),
            tag=TAG_W,
        )
        m.d.comb += [
            w_dest.unit.eq(wf_u),
            w_dest.bank.eq(wf_block[0]),
            w_dest.last.eq(wf_last),
            wq.w_en.eq(w_acc),
        ]
        with m.If(w_acc):
            with m.If(wf_last):
                m.d.sync += [wf_u.eq(0), wf_block.eq(wf_block + 1)]
                with m.If(wf_nb == wt.blocks - 1):
                    m.d.sync += wf_nb.eq(0)
                    with m.If(wf_kc == wt.chunks - 1):
                        m.d.sync += wf_kc.eq(0)
                        wt.advance_in(m)
                    with m.Else():
                        m.d.sync += wf_kc.eq(wf_kc + 1)
                with m.Else():
                    m.d.sync += wf_nb.eq(wf_nb + 1)
            with m.Else():
                m.d.sync += wf_u.eq(wf_u + 1)

        # ---------------------------------------------------------------- X fetcher
        xt = _UnitWalker(m, "xf", shape, e)
        xf_kc = Signal(16, name="xf_kc")
        xf_r = Signal(range(tile_m), name="xf_r")
        xf_chunk = Signal(20, name="xf_chunk")  # X chunks fetched (GEMM and QK units)
        xf_words = Mux(xf_kc == xt.chunks - 1, xt.last_words, lanes)
        xf_last = xf_r == xt.rows - 1
        xf_addr = Mux(
            xt.is_qk,
            job.a_addr + xt.head * job.a_hstride + (xt.m0 + xf_r) * job.a_stride,
            job.a_addr + (xt.m0 + xf_r) * job.a_stride + xf_kc * vec_len,
        )
        x_acc = requester(
            "xf",
            go & ~xt.done & ~xt.is_pv & (xf_chunk < cnt["x_used"] + 2) & xq.w_rdy,
            addr=xf_addr,
            we=0,
            mask=word_mask(xf_words),
            tag=TAG_X,
        )
        m.d.comb += [
            x_dest.row.eq(Cat(xf_r, xf_chunk[0])),
            x_dest.last.eq(xf_last),
            xq.w_en.eq(x_acc),
        ]
        with m.If(go & ~xt.done & xt.is_pv):
            xt.advance_in(m)  # PV units take their operands from LOGITS
        with m.If(x_acc):
            with m.If(xf_last):
                m.d.sync += [xf_r.eq(0), xf_chunk.eq(xf_chunk + 1)]
                with m.If(xf_kc == xt.chunks - 1):
                    m.d.sync += xf_kc.eq(0)
                    xt.advance_in(m)
                with m.Else():
                    m.d.sync += xf_kc.eq(xf_kc + 1)
            with m.Else():
                m.d.sync += xf_r.eq(xf_r + 1)

        # ---------------------------------------------------------------- parameter fetcher
        pt = _UnitWalker(m, "pf", shape, e)
        pf_rec = Signal(
            range(entries + records_per_beat), name="pf_rec"
        )  # next beat's first record
        p_count = Mux(per_row, pt.rows, pt.cols)
        p_base = Mux(per_row, pt.m0, pt.n0)
        p_left = Signal(range(entries + 1))
        m.d.comb += p_left.eq(p_count - pf_rec)
        p_words = Mux(p_left >= records_per_beat, lanes, p_left * 4)
        pf_last = pf_rec + records_per_beat >= p_count
        pf_ahead = Signal(name="pf_ahead")  # a tile the issuer is not on yet (see PRIORITY)
        p_acc = requester(
            "pf",
            go & ~attention & ~pt.done & (pt.index < cnt["p_freed"] + 2) & pq.w_rdy,
            ahead=pf_ahead,
            addr=job.p_addr + (p_base + pf_rec) * PARAM_RECORD_BYTES,
            we=0,
            mask=word_mask(p_words),
            tag=TAG_P,
        )
        m.d.comb += [
            p_dest.slot.eq(pt.index[0]),
            p_dest.first.eq(pf_rec),
            p_dest.last.eq(pf_last),
            pq.w_en.eq(p_acc),
        ]
        with m.If(p_acc):
            with m.If(pf_last):
                m.d.sync += pf_rec.eq(0)
                pt.advance_in(m)
            with m.Else():
                m.d.sync += pf_rec.eq(pf_rec + records_per_beat)

        # ---------------------------------------------------------------- read responses
        rd = port.reads.payload
        rd_bits = rd.rdata.as_value()
        m.d.comb += port.reads.ready.eq(1)
        resp_w = port.reads.valid & (rd.tag == TAG_W)
        resp_x = port.reads.valid & (rd.tag == TAG_X)
        resp_p = port.reads.valid & (rd.tag == TAG_P)
        resp_r = port.reads.valid & (rd.tag == TAG_R)
        m.d.comb += [
            core.weights.valid.eq(resp_w),
            core.weights.payload.w.eq(rd_bits),
            core.weights.payload.unit.eq(wd.unit),
            core.weights.payload.bank.eq(wd.bank),
            wq.r_en.eq(resp_w),
            xbuf_w.addr.eq(xd.row),
            xbuf_w.data.eq(rd_bits),
            xbuf_w.en.eq(resp_x),
            xq.r_en.eq(resp_x),
            pq.r_en.eq(resp_p),
        ]
        with m.If(resp_w & wd.last):
            m.d.sync += cnt["w_loaded"].eq(cnt["w_loaded"] + 1)
        # Rows of the X chunk being filled (chunk number x_loaded): the issuer may
        # start on a chunk's first rows before its last ones arrive.
        x_rows = Signal(range(tile_m + 1), name="x_rows")
        with m.If(resp_x):
            m.d.sync += x_rows.eq(Mux(xd.last, 0, x_rows + 1))
        with m.If(resp_x & xd.last):
            m.d.sync += cnt["x_loaded"].eq(cnt["x_loaded"] + 1)
        with m.If(resp_p):
            for j in range(records_per_beat):
                words = rd_bits[j * 128 : (j + 1) * 128]
                for slot in range(2):
                    for i in range(0, entries, records_per_beat):
                        # Records land at first + j; first is a multiple of records_per_beat.
                        with m.If((pd.slot == slot) & (pd.first == i)):
                            rec = params[slot][i + j]
                            m.d.sync += [
                                rec.bias.eq(words[0:32]),
                                rec.mult.eq(words[32:40]),
                                rec.shift.eq(words[40:45]),
                                rec.add.eq(words[48:56]),
                                rec.gamma.eq(words[64:80]),
                                rec.beta.eq(words[96:128]),
                            ]
            with m.If(pd.last):
                m.d.sync += cnt["p_loaded"].eq(cnt["p_loaded"] + 1)

        # ---------------------------------------------------------------- issuer
        it = _UnitWalker(m, "is", shape, e)
        is_kc = Signal(16, name="is_kc")
        is_nb = Signal(range(blocks_max), name="is_nb")
        is_r = Signal(range(tile_m), name="is_r")
        is_block = Signal(20, name="is_block")
        is_chunk = Signal(20, name="is_chunk")  # X chunks consumed
        is_qk_units = Signal(16, name="is_qk_units")  # QK units fully issued
        is_last_chunk = is_kc == it.chunks - 1
        is_final = is_last_chunk & it.outputs  # results go to YBUF
        inflight = Signal(range(tile_m * blocks_max + PIPELINE_DEPTH + 8), name="inflight")
        # A beat reading ACC must come after the result it reads was written:
        # the same (row, block) comes around every rows * blocks beats.
        depth_ok = inflight < it.rows * it.blocks
        operands_ready = Mux(
            it.is_pv,
            cnt["qk_done"] == is_qk_units,  # the unit's logits and inv are complete
            (is_chunk < cnt["x_loaded"]) | ((is_chunk == cnt["x_loaded"]) & (is_r < x_rows)),
        )
        ready_block = (
            (is_block < cnt["w_loaded"])
            & operands_ready
            & (attention | (it.out_index < cnt["p_loaded"]))
            & (~is_final | (it.out_index < cnt["y_freed"] + 2))
        )
        issue = Signal()
        m.d.comb += [
            pf_ahead.eq(pt.index != it.out_index),
            issue.eq(go & ~it.done & ready_block & depth_ok),
            xbuf_r.addr.eq(Cat(is_r, is_chunk[0])),
            acc_r.addr.eq(is_r * acc_blocks + is_nb[: (acc_blocks - 1).bit_length() or 1]),
            lg_r.addr.eq(is_r * logit_words + is_kc[: (logit_words - 1).bit_length() or 1]),
        ]
        # Stage B, one cycle later: buffer data is out, the beat goes to the core.
        b_valid, b_first = Signal(name="b_valid"), Signal(name="b_first")
        b_bank, b_slot = Signal(name="b_bank"), Signal(name="b_slot")
        b_final, b_tile_last = Signal(name="b_final"), Signal(name="b_tile_last")
        b_qk, b_pv = Signal(name="b_qk"), Signal(name="b_pv")
        b_block_first, b_block_last = Signal(name="b_block_first"), Signal(name="b_block_last")
        b_row = Signal(range(tile_m), name="b_row")
        b_nb = Signal(range(blocks_max), name="b_nb")
        m.d.sync += [
            b_valid.eq(issue),
            b_first.eq(is_kc == 0),
            b_bank.eq(is_block[0]),
            b_row.eq(is_r),
            b_nb.eq(is_nb),
            b_slot.eq(it.out_index[0]),
            b_final.eq(is_final),
            b_qk.eq(it.is_qk),
            b_pv.eq(it.is_pv),
            b_block_first.eq(is_nb == 0),
            b_block_last.eq(is_nb == it.blocks - 1),
            b_tile_last.eq(is_last_chunk & (is_nb == it.blocks - 1) & (is_r == it.rows - 1)),
        ]
        with m.If(issue):
            with m.If(is_r == it.rows - 1):
                m.d.sync += [
                    is_r.eq(0),
                    is_block.eq(is_block + 1),
                    cnt["w_used"].eq(cnt["w_used"] + 1),
                ]
                with m.If(is_nb == it.blocks - 1):
                    m.d.sync += is_nb.eq(0)
                    with m.If(~it.is_pv):
                        m.d.sync += [
                            is_chunk.eq(is_chunk + 1),
                            cnt["x_used"].eq(cnt["x_used"] + 1),
                        ]
                    with m.If(is_last_chunk):
                        m.d.sync += is_kc.eq(0)
                        with m.If(it.is_qk):
                            m.d.sync += is_qk_units.eq(is_qk_units + 1)
                        it.advance_in(m)
                    with m.Else():
                        m.d.sync += is_kc.eq(is_kc + 1)
                with m.Else():
                    m.d.sync += is_nb.eq(is_nb + 1)
            with m.Else():
                m.d.sync += is_r.eq(is_r + 1)

        op = core.operands.payload
        acc_words = data.ArrayLayout(signed(e.acc_bits), n_pe)(acc_r.data)
        row_rec = Signal(param_layout)  # per-row parameters: one record for all units
        m.d.comb += row_rec.eq(Array([Array(params[0]), Array(params[1])])[b_slot][b_row])
        qk_rq, av_rq = job.qk, job.av
        for u in range(n_pe):
            chan = Array(
                [
                    Mux(
                        b_slot,
                        params[1][nb * n_pe + u].as_value(),
                        params[0][nb * n_pe + u].as_value(),
                    )
                    for nb in range(acc_blocks)
                ]
            )[b_nb[: (acc_blocks - 1).bit_length() or 1]]
            rec = param_layout(Mux(per_row, row_rec.as_value(), chan))
            m.d.comb += [
                op.acc_in[u].eq(Mux(b_first, Mux(attention, 0, rec.bias), acc_words[u])),
                op.requant[u].mult.eq(Mux(b_qk, qk_rq.mult, Mux(b_pv, av_rq.mult, rec.mult))),
                op.requant[u].shift.eq(Mux(b_qk, qk_rq.shift, Mux(b_pv, av_rq.shift, rec.shift))),
                op.requant[u].add.eq(Mux(b_qk, qk_rq.add, Mux(b_pv, av_rq.add, rec.add))),
            ]
        # PV operands: probabilities from the logits read back, lane by lane.
        m.d.comb += itamax.read_row.eq(b_row)
        lg_lanes = data.ArrayLayout(signed(8), vec_len)(lg_r.data)
        probs = probabilities(itamax.read_m, itamax.read_inv, list(lg_lanes))
        m.d.comb += [
            op.x.eq(Mux(b_pv, Cat(*probs), xbuf_r.data)),
            op.x_signed.eq(~b_pv),
            op.bank.eq(b_bank),
            op.relu.eq(relu_en & ~post_en & ~attention),
            core.operands.valid.eq(b_valid),
        ]

        # ---------------------------------------------------------------- collector
        rq_l = data.StructLayout(
            {
                "row": range(tile_m),
                "nb": range(blocks_max),
                "slot": 1,
                "final": 1,
                "qk": 1,
                "block_first": 1,
                "block_last": 1,
                "tile_last": 1,
            }
        )
        m.submodules.res_q = res_q = SyncFIFOBuffered(width=rq_l.size, depth=PIPELINE_DEPTH + 4)
        r_desc_in = Signal(rq_l)
        m.d.comb += [
            r_desc_in.row.eq(b_row),
            r_desc_in.nb.eq(b_nb),
            r_desc_in.slot.eq(b_slot),
            r_desc_in.final.eq(b_final),
            r_desc_in.qk.eq(b_qk),
            r_desc_in.block_first.eq(b_block_first),
            r_desc_in.block_last.eq(b_block_last),
            r_desc_in.tile_last.eq(b_tile_last),
            res_q.w_data.eq(r_desc_in.as_value()),
            res_q.w_en.eq(b_valid),
        ]
        rdesc = rq_l(res_q.r_data)
        result = core.results
        y_bits = result.payload.y.as_value()
        group_sel = (
            rdesc.nb[: (groups_per_word - 1).bit_length() or 1] if groups_per_word > 1 else 0
        )
        word_sel = rdesc.nb >> (groups_per_word.bit_length() - 1)
        m.d.comb += [
            result.ready.eq(1),
            res_q.r_en.eq(result.valid),
            internal_reset.eq(clearing & port.idle & ~b_valid & ~res_q.r_rdy),
            acc_w.addr.eq(rdesc.row * acc_blocks + rdesc.nb[: (acc_blocks - 1).bit_length() or 1]),
            acc_w.data.eq(result.payload.acc.as_value()),
            acc_w.en.eq(result.valid & ~rdesc.final & ~rdesc.qk),
            ybuf_w.addr.eq(Cat(rdesc.row, rdesc.slot)),
            ybuf_w.data.eq(Cat(*([y_bits] * acc_blocks))),
            ybuf_w.en.eq(Mux(result.valid & rdesc.final, Const(1, acc_blocks) << rdesc.nb, 0)),
            lg_w.addr.eq(rdesc.row * logit_words + word_sel),
            lg_w.data.eq(Cat(*([y_bits] * groups_per_word))),
            lg_w.en.eq(Mux(result.valid & rdesc.qk, Const(1, groups_per_word) << group_sel, 0)),
            itamax.valid.eq(result.valid & rdesc.qk),
            itamax.row.eq(rdesc.row),
            itamax.first.eq(rdesc.block_first),
            itamax.last.eq(rdesc.block_last),
            itamax.logits.eq(result.payload.y),
        ]
        with m.If(result.valid & rdesc.final & rdesc.tile_last):
            m.d.sync += cnt["y_full"].eq(cnt["y_full"] + 1)
        # Complete rows of the output unit being filled (number y_full): a row is
        # complete with its last block of the last chunk, and rows complete in
        # order, so the writer may start on a unit's first rows before its last.
        y_rows = Signal(range(tile_m + 1), name="y_rows")
        with m.If(result.valid & rdesc.final & rdesc.block_last):
            m.d.sync += y_rows.eq(Mux(rdesc.tile_last, 0, y_rows + 1))
        with m.If(result.valid & rdesc.qk & rdesc.tile_last):
            m.d.sync += cnt["qk_done"].eq(cnt["qk_done"] + 1)
        # Beats between issue (stage A, which reads ACC) and their result (which writes it).
        with m.If(issue & ~result.valid):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(result.valid & ~issue):
            m.d.sync += inflight.eq(inflight - 1)

        # ---------------------------------------------------------------- residual fetcher
        rt = _UnitWalker(m, "rf", shape, e)
        rf_r = Signal(range(tile_m), name="rf_r")
        # A whole unit of residual rows: they are all fetched while the unit computes, so
        # that the writer then streams one output row a cycle, as without a residual
        # (a few rows of room made each residual row cost a read and a write at the end).
        res_data = SyncFIFOBuffered(width=vec_len * 8, depth=tile_m + 1)
        m.submodules.res_data = ResetInserter(internal_reset)(res_data)
        rf_pending = Signal(range(tile_m + 2), name="rf_pending")  # fetched, not written out
        # A tile's residual rows are fetched while the tile computes (tiles before it are full).
        r_acc = requester(
            "rf",
            go
            & residual_en
            & ~attention
            & ~rt.done
            & (rt.index <= cnt["y_full"])
            & (rf_pending < tile_m),
            addr=job.d_addr + (rt.m0 + rf_r) * job.d_stride + rt.n0,
            we=0,
            mask=word_mask((rt.cols + 3) >> 2),
            tag=TAG_R,
        )
        with m.If(r_acc):
            with m.If(rf_r == rt.rows - 1):
                m.d.sync += rf_r.eq(0)
                rt.advance_in(m)
            with m.Else():
                m.d.sync += rf_r.eq(rf_r + 1)
        m.d.comb += [res_data.w_data.eq(rd_bits), res_data.w_en.eq(resp_r)]
        with m.If(r_acc & ~res_data.r_en):
            m.d.sync += rf_pending.eq(rf_pending + 1)
        with m.Elif(res_data.r_en & ~r_acc):
            m.d.sync += rf_pending.eq(rf_pending - 1)

        # ---------------------------------------------------------------- writer
        yt = _UnitWalker(m, "yw", shape, e)
        yw_r = Signal(range(tile_m), name="yw_r")
        yw_loaded = Signal(name="yw_loaded")  # ybuf_r.data holds row yw_r
        yw_last = yw_r == yt.rows - 1

        # Row r of the writer's unit is complete in YBUF (written in an earlier cycle).
        def row_full(r):
            return (yt.out_index < cnt["y_full"]) | ((yt.out_index == cnt["y_full"]) & (r < y_rows))

        # While row r is being written, read row r + 1 if it is complete: one row
        # a cycle within a unit, and as fast as the rows complete in its last block.
        yw_next = Signal(name="yw_next")
        y_slot = yt.out_index[0]
        row_rec_w = Signal(param_layout)
        m.d.comb += [
            row_rec_w.eq(Array([Array(params[0]), Array(params[1])])[y_slot][yw_r]),
            ybuf_r.addr.eq(Cat(Mux(yw_next, yw_r + 1, yw_r)[: len(yw_r)], y_slot)),
            ybuf_r.en.eq(~yw_loaded | yw_next),
        ]
        with m.If(go & ~yt.done & yt.is_qk):
            yt.advance_in(m)  # QK units write nothing
        have_row = running & ~yt.done & yt.outputs & row_full(yw_r)
        with m.If(have_row & ~yw_loaded):
            m.d.sync += yw_loaded.eq(1)
        res_ok = ~residual_en | res_data.r_rdy
        y_in = data.ArrayLayout(signed(8), vec_len)(ybuf_r.data)
        res_in = data.ArrayLayout(signed(8), vec_len)(res_data.r_data)
        y_out = Signal(data.ArrayLayout(signed(8), vec_len))
        half_res = (Const(1, unsigned(32)) << job.res_shift) >> 1
        half_aff = (Const(1, unsigned(32)) << job.aff_shift) >> 1
        for c in range(vec_len):
            v1 = Signal(signed(8), name=f"post_res{c}")
            v2 = Signal(signed(8), name=f"post_aff{c}")
            # Named intermediates: each is used three times by the saturation.
            rs = Signal(signed(20), name=f"post_rsum{c}")
            m.d.comb += rs.eq(
                (job.res_y_mult * y_in[c] + job.res_r_mult * res_in[c] + half_res) >> job.res_shift
            )
            m.d.comb += v1.eq(Mux(residual_en, _sat8(rs), y_in[c]))
            chan_w = Mux(y_slot, params[1][c].as_value(), params[0][c].as_value())
            prec = param_layout(Mux(per_row, row_rec_w.as_value(), chan_w))
            af = Signal(signed(35), name=f"post_asum{c}")
            m.d.comb += af.eq((prec.gamma * v1 + prec.beta + half_aff) >> job.aff_shift)
            m.d.comb += v2.eq(Mux(affine_en, _sat8(af), v1))
            m.d.comb += y_out[c].eq(Mux(post_en & relu_en & (v2 < 0), 0, v2))
        y_addr = Mux(
            yt.is_pv,
            job.c_addr + yt.head * job.c_hstride + (yt.m0 + yw_r) * job.c_stride,
            job.c_addr + (yt.m0 + yw_r) * job.c_stride + yt.n0,
        )
        y_acc = requester(
            "yw",
            go & have_row & yw_loaded & res_ok,
            addr=y_addr,
            we=1,
            mask=word_mask((yt.cols + 3) >> 2),
            wdata=y_out.as_value(),
        )
        m.d.comb += [
            res_data.r_en.eq(y_acc & residual_en),
            yw_next.eq(y_acc & ~yw_last & row_full(yw_r + 1)),
        ]
        with m.If(y_acc):
            # Still loaded if the next row of the unit was read in this cycle.
            m.d.sync += yw_loaded.eq(yw_next)
            with m.If(yw_last):
                m.d.sync += [
                    yw_r.eq(0),
                    cnt["y_freed"].eq(cnt["y_freed"] + 1),
                    cnt["p_freed"].eq(cnt["p_freed"] + 1),
                ]
                yt.advance_in(m)
            with m.Else():
                m.d.sync += yw_r.eq(yw_r + 1)
        m.d.comb += writer_done.eq(yt.done)

        # ---------------------------------------------------------------- arbiter
        taken = Const(0)
        for _, valid, fields, accepted in sorted(offers, key=lambda offer: offer[0]):
            win = valid & ~taken
            with m.If(win):
                for name, value in fields.items():
                    m.d.comb += getattr(port.beats.payload, name).eq(value)
            m.d.comb += accepted.eq(win & port.beats.ready)
            taken = taken | valid
        m.d.comb += port.beats.valid.eq(taken)

        # ---------------------------------------------------------------- between jobs
        with m.If(~running):
            m.d.sync += [c.eq(0) for c in cnt.values()]
            m.d.sync += [s for w in (wt, xt, pt, it, yt, rt) for s in w.reset()]
            m.d.sync += [
                sig.eq(0)
                for sig in (
                    wf_kc, wf_nb, wf_u, wf_block, xf_kc, xf_r, xf_chunk, pf_rec,
                    is_kc, is_nb, is_r, is_block, is_chunk, is_qk_units, rf_r, yw_r, yw_loaded,
                    x_rows, y_rows,
                )
            ]  # fmt: skip

        # ---------------------------------------------------------------- counters
        stalled = running & ~it.done & ~issue
        m.d.sync += [
            self.busy_cycles.eq(self.busy_cycles + running),
            self.stall_cycles.eq(self.stall_cycles + stalled),
            self.idle_cycles.eq(self.idle_cycles + ~running),
        ]
        m.d.comb += self.status.busy.eq(running | queue.r_rdy | clearing | ~port.idle)
        return m
