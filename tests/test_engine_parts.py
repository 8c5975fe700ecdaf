"""Parts of the engine on their own, in Amaranth's simulator (no Verilog build).

The engine's bench covers the parts together; these check contracts of one part that
the bench reaches only by chance.
"""

from __future__ import annotations

import dataclasses

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.hw.engine_controller import Controller
from tinyattn.hw.engine_job_checker import JobChecker
from tinyattn.hw.engine_residual_fetcher import ResidualFetcher
from tinyattn.hw.job import FLAG_RESIDUAL, Job, Op
from tinyattn.verif.engine_model import check_job
from tinyattn.verif.job_layouts import useful_macs

CFG = ClusterConfig(
    engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64),
    memory=MemoryConfig(n_banks=8, bank_words=512),
    dma=DmaConfig(dma_bits=128),
)


def test_residual_fetcher_recovers_from_a_soft_clear() -> None:
    """Rows held when a clear drops them no longer count against the next job's room.

    The fetcher holds up to ``tile_m`` residual rows ahead of the writer. A soft clear
    (``ctrl.reset``) drops them; the next job must again fetch a whole tile ahead, not
    hang waiting for room that the dropped rows still took.
    """
    dut = ResidualFetcher(CFG)
    tile_m = CFG.engine.tile_m
    job = Job(op=Op.GEMM, m=4 * tile_m, n=16, k=16, flags=FLAG_RESIDUAL, d_stride=16)
    payload = job.payload()
    issued = []

    async def bench(ctx):
        for name, value in payload.items():
            field = getattr(dut.ctrl.jobs[0], name)  # job 0 of the sequence: slot 0
            if isinstance(value, dict):
                for sub, v in value.items():
                    ctx.set(getattr(field, sub), v)
            else:
                ctx.set(field, value)
        ctx.set(dut.outputs_full, 100)  # every earlier tile is in YBUF: fetch freely
        ctx.set(dut.request.ready, 1)
        for _job in range(2):
            ctx.set(dut.ctrl.accepted, 1)
            ctx.set(dut.ctrl.go, 1)
            count = 0
            for _ in range(4 * tile_m):
                ctx.set(dut.response.valid, ctx.get(dut.request.valid))  # one-cycle "memory"
                count += ctx.get(dut.request.valid)
                await ctx.tick()
            ctx.set(dut.response.valid, 0)
            issued.append(count)
            # The writer never took a row. Soft clear: stop, reset, no job accepted.
            ctx.set(dut.ctrl.go, 0)
            await ctx.tick()
            ctx.set(dut.ctrl.reset, 1)
            ctx.set(dut.ctrl.accepted, 0)
            await ctx.tick()
            ctx.set(dut.ctrl.reset, 0)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert issued == [tile_m, tile_m], issued


def test_write_fence_waits_for_the_requests_before_each_mark() -> None:
    """A mark's job has landed once every lane answered the requests issued up to it.

    Random traffic on 4 lanes, each answering in order after a random delay; two marks
    may be pending. The model: per lane, the index of the last request issued at the
    mark; the mark has landed when every lane has answered that many.
    """
    import random

    from tinyattn.hw.engine_write_fence import WriteFence

    lanes = 4
    dut = WriteFence(lanes)
    seed = 5
    rng = random.Random(seed)
    checked = []

    async def bench(ctx):
        issued = [0] * lanes
        answered = [0] * lanes
        in_flight: list[list[int]] = [[] for _ in range(lanes)]  # answer cycle per request
        marks: list[list[int]] = []
        for cycle in range(3000):
            issue = [rng.random() < 0.4 and len(in_flight[i]) < 6 for i in range(lanes)]
            respond = [bool(in_flight[i]) and in_flight[i][0] <= cycle for i in range(lanes)]
            mark = len(marks) < 2 and rng.random() < 0.05
            landed = bool(marks) and all(answered[i] >= marks[0][i] for i in range(lanes))
            assert ctx.get(dut.landed) == landed, (cycle, marks, answered, seed)
            retire = landed and rng.random() < 0.5
            ctx.set(dut.issued, sum(b << i for i, b in enumerate(issue)))
            ctx.set(dut.responded, sum(b << i for i, b in enumerate(respond)))
            ctx.set(dut.mark, mark)
            ctx.set(dut.retire, retire)
            for i in range(lanes):
                if respond[i]:
                    in_flight[i].pop(0)
                    answered[i] += 1
                if issue[i]:
                    issued[i] += 1
                    last = in_flight[i][-1] if in_flight[i] else cycle
                    in_flight[i].append(max(last, cycle) + rng.randint(1, 6))
            if retire:
                marks.pop(0)
                checked.append(cycle)
            if mark:
                marks.append(list(issued))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(checked) > 20, f"only {len(checked)} marks retired (seed {seed})"


class _ControllerTop(Elaboratable):
    """The controller with the job checker it asks, as the engine connects them."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.controller = Controller(cfg)
        self.checker = JobChecker(cfg)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.controller = self.controller
        m.submodules.checker = self.checker
        wiring.connect(m, self.controller.checker, self.checker)
        return m


def _set_job(ctx, view, job: Job) -> None:
    for name, value in job.payload().items():
        field = getattr(view, name)
        for sub, v in value.items() if isinstance(value, dict) else [(None, value)]:
            ctx.set(field if sub is None else getattr(field, sub), v)


def _gemm(x: int, y: int) -> Job:
    """An 8 x 16 x 16 GEMM reading X at ``x`` (weights at 0x100, records at 0x200),
    writing Y at ``y``."""
    return Job(op=Op.GEMM, m=8, n=16, k=16, a_addr=x, b_addr=0x100, c_addr=y, p_addr=0x200,
               a_stride=16, b_stride=16, c_stride=16)  # fmt: skip


def _run_controller(jobs: list[Job], run: int, clear_at: int | None = None, cycles: int = 400):
    """Queue ``jobs`` into the controller and play the writer: it finishes an accepted job
    ``run`` cycles after its acceptance at the earliest, in order, never while held. The
    port answers at once, so the fence lands right after each finish. With ``clear_at``,
    a soft clear at that cycle, with the port busy for 10 cycles after it.

    Returns the cycles of the acceptances, of the ``done`` events with ``status.error``,
    and of the clear's reset, and the final ``macs``, ``status`` and ``accepted``.
    """
    top = _ControllerTop(CFG)
    dut = top.controller
    trace = {"accepted": [], "done": [], "reset": []}

    async def bench(ctx):
        pending = list(jobs)
        accept_cycles: list[int] = []  # of the jobs accepted since the last reset
        finished = 0
        ctx.set(dut.compute_idle, 1)
        for cycle in range(cycles):
            ctx.set(dut.control.clear, cycle == clear_at)
            busy_port = clear_at is not None and clear_at < cycle <= clear_at + 10
            ctx.set(dut.port_idle, not busy_port)
            if pending:
                _set_job(ctx, dut.control.jobs.payload, pending[0])
            ctx.set(dut.control.jobs.valid, bool(pending))
            reset = ctx.get(dut.context.reset)
            if reset:  # every accepted job is dropped
                trace["reset"].append(cycle)
                accept_cycles, finished = [], 0
            finish = (
                finished < len(accept_cycles)
                and cycle >= accept_cycles[finished] + run
                and not ctx.get(dut.writer_hold)
            )
            ctx.set(dut.writer_finished, finish)
            if ctx.get(dut.control.done):
                trace["done"].append((cycle, ctx.get(dut.control.status.error)))
            pushed = pending and ctx.get(dut.control.jobs.ready)
            accepted_before = ctx.get(dut.context.accepted)
            await ctx.tick()
            if pushed:
                pending.pop(0)
            finished += finish
            if not reset and ctx.get(dut.context.accepted) != accepted_before:
                accept_cycles.append(cycle + 1)
                trace["accepted"].append(cycle + 1)
        trace["macs"] = ctx.get(dut.control.macs)
        trace["busy"] = ctx.get(dut.control.status.busy)
        trace["queued"] = ctx.get(dut.control.status.queued)
        trace["in_slots"] = ctx.get(dut.context.accepted)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return trace


def test_controller_reports_in_queue_order_and_waits_for_what_a_job_reads() -> None:
    """Jobs overlap unless one reads the output of the job before it; rejected jobs wait
    for the jobs before them; every job is reported once, in queue order.

    A and C are independent: C is accepted while A runs. D reads C's output: it is
    accepted only after C's ``done``. E is rejected (k = 0): reported after D. The
    expected codes are the golden model's (``check_job``), the MACs ``useful_macs``.
    """
    a, c, d = _gemm(0x000, 0x400), _gemm(0x000, 0x800), _gemm(0x800, 0xC00)
    e = dataclasses.replace(a, k=0)
    jobs = [a, c, d, e]
    trace = _run_controller(jobs, run=30)

    assert [code for _, code in trace["done"]] == [check_job(j, CFG) for j in jobs], trace
    done = [cycle for cycle, _ in trace["done"]]
    accepted = trace["accepted"]
    assert len(accepted) == 3, trace
    assert accepted[1] < done[0], trace  # C overlaps A
    assert accepted[2] > done[1], trace  # D waits for C's done (read after write)
    assert done[3] > done[2], trace  # E after D
    assert trace["macs"] == sum(useful_macs(j) for j in (a, c, d)), trace
    assert (trace["busy"], trace["queued"]) == (0, 0), trace


def test_controller_soft_clear_waits_for_the_port_and_drops_every_job() -> None:
    """A clear while two jobs are accepted, one is in CHECK and one queued: no ``done``
    follows; the reset comes in the first cycle the port is idle again; the queue is
    empty and the slots free. Jobs queued after it run and are reported."""
    jobs = [_gemm(0x000, y) for y in (0x400, 0x800, 0xC00, 0x1000)]
    clear_at = 20  # the first two jobs are accepted, not finished (run = 100)
    trace = _run_controller(jobs, run=100, clear_at=clear_at, cycles=60)
    assert trace["done"] == [] and trace["accepted"] == [3, 5], trace
    assert trace["reset"] == [clear_at + 11], trace
    assert (trace["busy"], trace["queued"], trace["in_slots"]) == (0, 0, 0), trace

    # A clear in the cycle the first job is accepted: the jobs offered during the drain
    # wait (``ready`` low), then run.
    after = _run_controller(jobs + jobs[:1], run=5, clear_at=2, cycles=120)
    assert after["reset"] == [13], after
    assert [code for _, code in after["done"]] == [0, 0], after
    assert after["macs"] == 2 * useful_macs(jobs[0]), after
