"""The engine's controller: take a job, check it, run it, report it.

The controller (its ``ctrl`` FSM) takes the oldest job from the
:class:`~tinyattn.hw.engine_job_queue.JobQueue` (IDLE) and has the
:class:`~tinyattn.hw.engine_job_checker.JobChecker` check it (CHECK), where the job
waits for its turn:

- a rejected job waits until every job before it is reported, then is reported with
  its error code (L1 untouched);
- a valid job is *accepted* into one of the two job slots every part reads as soon as
  one is free, while the job before it still runs, unless it reads a byte that job
  writes (read after write): then it waits until that job is done.

A job is done once the writer has issued its last row and the
:class:`~tinyattn.hw.engine_write_fence.WriteFence` says those writes have landed.
Jobs are reported in queue order, rejected ones included.

The controller owns the engine's control port (:func:`engine_control_signature`): the
queue and its soft clear, the status and the performance counters.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

from .engine_job_checker import job_check_signature
from .engine_job_queue import JobQueue
from .engine_walker import JOB_SEQ_BITS, job_context_signature
from .engine_write_fence import WriteFence
from .job import JobError
from .job_layout import JobOp, job_layout

__all__ = ["Controller", "engine_control_signature", "status_layout"]


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
    bits) and ``macs`` (in, 64 bits): the counters. :class:`~tinyattn.hw.engine.Engine`
    has it as ``control : In(...)``. A function of ``cfg`` alone, so that the register
    map exists for configurations the engine cannot elaborate (``vec_len < 16``).
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


def _useful_macs(job: data.View) -> object:
    """The multiply-accumulates ``job`` is worth (as ``verif/job_layouts.py``'s
    ``useful_macs``): ``m * n * k`` for a GEMM, twice that per head for an attention
    job (QK and PV)."""
    gemm = job.m * job.n * job.k
    return Mux(job.op == JobOp.ATTENTION, (gemm * job.heads) << 1, gemm)


class Controller(wiring.Component):
    """The engine's job controller.

    Ports
    -----
    control : In(:func:`engine_control_signature`)
        The engine's control port, as :class:`~tinyattn.hw.engine.Engine` describes it
        (the engine passes its own through).
    context : Out(:func:`~tinyattn.hw.engine_walker.job_context_signature`)
        The accepted jobs, to every part. A job is in its slot, and counted in
        ``accepted``, from the cycle after its acceptance.
    checker : Out(:func:`~tinyattn.hw.engine_job_checker.job_check_signature`)
        The job in CHECK and the range the last accepted job writes, to the checker;
        its verdict back.
    writer_finished : In(1)
        The writer issued a job's last row this cycle.
    writer_hold : Out(1)
        The writer may not write yet: the previous job's writes have not all landed
        (write after write).
    port_requests : In(port_lanes)
        Lane ``i`` of the wide port took a request (read or write) this cycle.
    port_responses : In(port_lanes)
        Lane ``i`` of the wide port answered a request (``rvalid``) this cycle.
    port_idle : In(1)
        No request is queued or outstanding on the port.
    compute_idle : In(1)
        No beat is in the issuer's second stage or in the core's pipeline.
    stalled : In(1)
        The issuer had beats of an accepted job left and issued none (``stall_cycles``).
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        self._cfg = cfg
        lanes = cfg.engine.port_lanes
        super().__init__(
            {
                "control": In(engine_control_signature(cfg)),
                "context": Out(job_context_signature(cfg)),
                "checker": Out(job_check_signature(cfg)),
                "writer_finished": In(1),
                "writer_hold": Out(1),
                "port_requests": In(lanes),
                "port_responses": In(lanes),
                "port_idle": In(1),
                "compute_idle": In(1),
                "stalled": In(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        cfg = self._cfg
        control, context, checker = self.control, self.context, self.checker
        m = Module()

        # A soft clear completes once nothing is in flight: on the port, in stage B of
        # the issuer or in the core. Until then no part starts new work.
        m.submodules.queue = queue = JobQueue(cfg)
        wiring.connect(m, wiring.flipped(control.jobs), queue.jobs)
        clearing, internal_reset = queue.clearing, queue.reset
        m.d.comb += [
            queue.clear.eq(control.clear),
            queue.drained.eq(self.port_idle & self.compute_idle),
            control.status.queued.eq(queue.level),
            context.go.eq(~clearing),
            context.reset.eq(internal_reset),
        ]

        job = Signal(job_layout(cfg))  # the job being checked
        accepted = context.accepted
        reported = Signal(JOB_SEQ_BITS)  # accepted jobs reported done
        written = Signal(JOB_SEQ_BITS)  # accepted jobs whose writes are all issued
        in_flight = Signal(range(3))  # accepted, not yet reported
        running = Signal()
        m.d.comb += [
            checker.job.eq(job),
            in_flight.eq((accepted - reported)[:JOB_SEQ_BITS]),
            running.eq(in_flight != 0),
        ]
        slot_macs = Array(Signal(64, name=f"slot_macs{s}") for s in range(2))
        error = Signal(3)  # the JobError of the last job reported
        m.d.comb += control.status.error.eq(error)

        # A job is done once the writer has issued its last row and those writes have
        # landed (the port is busy with the next job's reads by then).
        fence = ResetInserter(internal_reset)(WriteFence(cfg.engine.port_lanes))
        m.submodules.fence = fence
        m.d.comb += [
            fence.issued.eq(self.port_requests),
            fence.responded.eq(self.port_responses),
            fence.mark.eq(self.writer_finished),
        ]
        with m.If(self.writer_finished):
            m.d.sync += written.eq(written + 1)
        # Write after write: a job writes once the previous job's writes have landed.
        m.d.comb += self.writer_hold.eq(written != reported)
        report = Signal()
        m.d.comb += [
            report.eq((written != reported) & fence.landed & ~clearing),
            fence.retire.eq(report),
        ]
        # done is registered: it rises in the cycle after the job's end, with the error
        # code and the MAC counter.
        m.d.sync += control.done.eq(0)
        with m.If(report):
            m.d.sync += [
                control.done.eq(1),
                error.eq(JobError.NONE),
                reported.eq(reported + 1),
                control.macs.eq(control.macs + slot_macs[reported[0]]),
            ]

        with m.FSM(name="ctrl") as ctrl_fsm:
            with m.State("IDLE"):
                with m.If(queue.head.valid & ~clearing):
                    m.d.comb += queue.head.ready.eq(1)
                    m.d.sync += job.eq(queue.head.payload)
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
                        m.d.sync += [control.done.eq(1), error.eq(checker.error)]
                        m.next = "IDLE"
                with m.Elif((in_flight == 0) | ((in_flight == 1) & ~checker.reads_written)):
                    for slot in range(2):
                        with m.If(accepted[0] == slot):
                            m.d.sync += [
                                context.jobs[slot].eq(job),
                                slot_macs[slot].eq(_useful_macs(job)),
                            ]
                    m.d.sync += [
                        accepted.eq(accepted + 1),
                        # The next job may not read this range early.
                        checker.written_first.eq(checker.output_first),
                        checker.written_last.eq(checker.output_last),
                    ]
                    m.next = "IDLE"
        # A soft clear abandons the jobs (later statements win).
        with m.If(internal_reset):
            m.d.sync += [accepted.eq(0), reported.eq(0), written.eq(0), control.done.eq(0)]

        # The counters, and busy: a job in a slot, in the queue or in CHECK, a clear
        # draining, or requests still on the port.
        m.d.sync += [
            control.busy_cycles.eq(control.busy_cycles + running),
            control.stall_cycles.eq(control.stall_cycles + self.stalled),
            control.idle_cycles.eq(control.idle_cycles + ~running),
        ]
        m.d.comb += control.status.busy.eq(
            running | queue.head.valid | clearing | ~self.port_idle | ctrl_fsm.ongoing("CHECK")
        )
        return m
