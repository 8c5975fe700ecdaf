"""cocotb bench of the attention engine (``hw/engine.py``) against the golden job model.

The engine's wide port is served by :class:`tinyattn.verif.obi.ObiTarget`, a
model L1 that withholds each lane's grant at random (``TINYATTN_WITHHOLD``,
default 0.3), under the OBI protocol checker. After every job the *whole* L1
image is compared with :func:`tinyattn.verif.engine_model.run_job` applied to
the same image, so a stray write anywhere fails the test.
"""

from __future__ import annotations

import os
import random
from collections import deque
from typing import Any

import cocotb
import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.hw.engine import status_layout
from tinyattn.hw.job import (
    FLAG_PER_HEAD,
    FLAG_RELU,
    FLAG_RESIDUAL,
    PARAM_RECORD_BYTES,
    Job,
    JobError,
    Op,
)
from tinyattn.hw.job_layout import job_layout
from tinyattn.verif.benches.common import (
    bench_config,
    bench_seed,
    env_float,
    env_int,
    start_clock_and_reset,
    write_metrics,
)
from tinyattn.verif.bits import unpack
from tinyattn.verif.coverage import engine_coverage, occupancy_label
from tinyattn.verif.engine_jobs import (
    Allocator,
    attention_dims,
    gemm_dims,
    random_attention,
    random_gemm,
)
from tinyattn.verif.engine_model import run_job
from tinyattn.verif.job_layouts import job_inputs_outputs
from tinyattn.verif.obi import CycleLoop, ObiChecker, ObiTarget, obi_ports
from tinyattn.verif.streams import StreamSource

#: TINYATTN_WITHHOLD given: every job runs at that withholding probability.
_WITHHOLD_SET = "TINYATTN_WITHHOLD" in os.environ


class EventMonitor:
    """Records every ``done`` event with the error code the ``status`` port reports."""

    def __init__(self, done: Any, status: Any) -> None:
        self.done = done
        self.status_port = status
        self.layout = status_layout()
        self.events: list[tuple[int, int]] = []  # (cycle, error code)
        self.status: dict[str, int] = {}

    def drive(self, cycle: int) -> None:
        pass

    def sample(self, cycle: int) -> None:
        self.status = unpack(self.layout, self.status_port.value.to_unsigned())
        if self.done.value:
            self.events.append((cycle, self.status["error"]))


class PinDriver:
    """Drives plain input pins from the cycle loop (writes outside it would land in read-only).

    ``pins`` maps a name to (signal handle, initial value); ``next[name]`` is the value
    driven from the next cycle on.
    """

    def __init__(self, **pins: tuple[Any, int]) -> None:
        self.handles = {name: handle for name, (handle, _) in pins.items()}
        self.next: dict[str, int] = {name: value for name, (_, value) in pins.items()}

    def drive(self, cycle: int) -> None:
        for name, value in self.next.items():
            self.handles[name].value = value

    def sample(self, cycle: int) -> None:
        pass


class JobCoverage:
    """Samples the coverage model (``verif/coverage.py``) at every job's ``done``.

    A job is recorded when the source pushes it, with the grant-withholding probability
    of the model L1 and the engine's status (idle, or busy with n jobs queued, as the
    monitor sampled it in that cycle); its ``done`` (with its error code)
    samples it, since jobs finish in queue order. A soft clear drops the jobs pending
    after the cycle that follows it (a job that ended on the clear's own edge reports
    its ``done`` then). The database goes to ``coverage.xml`` in the run folder after
    every sample. Runs last in the cycle loop, after the source and the monitor.
    """

    def __init__(self, cfg: ClusterConfig, tb: EngineTB) -> None:
        self.model = engine_coverage(cfg)
        self.tb = tb
        self.pending: deque[tuple[Job, float, str]] = deque()
        self.pushed = len(tb.accepted)
        self.events = len(tb.monitor.events)
        self.flush_at: int | None = None

    def directed_shape(self, kind: str, rng: np.random.Generator) -> tuple[bool, bool, bool] | None:
        """(m, n, k) raggedness of a shape bin not hit yet (``pick_shape``); None (any
        shape) with TINYATTN_SMALL, the smoke runs of slow simulators at large engines,
        where an aligned job costs minutes."""
        return None if env_int("TINYATTN_SMALL", 0) else self.model.pick_shape(kind, rng)

    def drive(self, cycle: int) -> None:
        pass

    def sample(self, cycle: int) -> None:
        tb = self.tb
        accepted = tb.accepted
        if len(accepted) > self.pushed:
            status = tb.monitor.status
            occupancy = occupancy_label(status["busy"], status["queued"])
            for _, job in accepted[self.pushed :]:
                self.pending.append((job, float(tb.l1.withhold), occupancy))
            self.pushed = len(accepted)
        events = tb.monitor.events
        if len(events) > self.events:
            for _, error in events[self.events :]:
                if self.pending:
                    job, withhold, occupancy = self.pending.popleft()
                    self.model.sample(job, error, withhold, occupancy)
            self.events = len(events)
            self.model.export()
        if self.flush_at == cycle:
            self.pending.clear()
            self.flush_at = None
        if tb.pins.next.get("clear"):
            self.flush_at = cycle + 1


class EngineTB:
    """Clock, reset, the model L1 with its checker, the job source and the event monitor.

    Every Verilog port name of the engine appears here and nowhere else in the bench
    (the class constants and :meth:`__init__`), so a renamed port changes one spot.
    """

    #: The engine's job stream and its wide L1 port (Verilog name prefixes).
    JOBS = "control__jobs"
    L1_LANES = "mem"

    def __init__(self, dut: Any, cfg: ClusterConfig, seed: int, withhold: float) -> None:
        self.dut = dut
        self.cfg = cfg
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        # The engine's control, status and counter pins (its `control` signature).
        self.clear_pin, self.done_pin = dut.control__clear, dut.control__done
        self.status_pin = dut.control__status
        self.counter_pins = {
            "busy_cycles": dut.control__busy_cycles,
            "stall_cycles": dut.control__stall_cycles,
            "macs": dut.control__macs,
        }
        self.mem = bytearray(cfg.memory.size_bytes)
        self.image = np.frombuffer(self.mem, dtype=np.uint8)  # a view: writes go to mem
        self.loop = CycleLoop(dut.clk)
        self.lanes = obi_ports(dut, self.L1_LANES, cfg.engine.port_lanes)
        self.l1 = ObiTarget(self.lanes, self.mem, rng=random.Random(seed), withhold=withhold)
        self.checker = ObiChecker(self.lanes, latency=1)
        #: (acceptance cycle, job) of every job the engine took, in order.
        self.accepted: list[tuple[int, Job]] = []
        self.source: StreamSource[Job] = StreamSource(
            dut,
            self.JOBS,
            job_layout(cfg),
            encode=lambda job: job.payload(),
            on_accept=lambda job, cycle: self.accepted.append((cycle, job)),
        )
        self.monitor = EventMonitor(self.done_pin, self.status_pin)
        self.pins = PinDriver(clear=(self.clear_pin, 0))
        self.loop.add(self.l1, self.checker, self.source, self.monitor, self.pins)
        self.coverage = JobCoverage(cfg, self)
        self.loop.add(self.coverage)
        #: The withholding probability TINYATTN_WITHHOLD set explicitly, else None (then
        #: tests may pick one per job to reach every stall class of the coverage model).
        self.fixed_withhold = env_float("TINYATTN_WITHHOLD", 0) if _WITHHOLD_SET else None

    @classmethod
    async def started(cls, dut: Any, seed_offset: int, withhold: float = 0.3) -> EngineTB:
        """A bench on ``bench_config()``, seeded ``bench_seed() + seed_offset`` (one offset
        per test, so tests draw different jobs), out of reset. ``withhold`` is the model
        L1's grant-withholding probability unless TINYATTN_WITHHOLD sets it."""
        tb = cls(
            dut,
            bench_config(),
            bench_seed() + seed_offset,
            env_float("TINYATTN_WITHHOLD", withhold),
        )
        await tb.reset()
        return tb

    def randomize_image(self) -> None:
        """Fill the model L1 with random bytes from the bench's generator."""
        self.image[:] = self.rng.integers(0, 256, self.image.size, dtype=np.uint8)

    def direct_stall(self, kind: str) -> None:
        """Set the model L1's withholding for the next ``kind`` job: a stall class of
        the coverage model not hit yet, else the default (0.3); never when
        TINYATTN_WITHHOLD or TINYATTN_SMALL is set."""
        if self.fixed_withhold is None and not env_int("TINYATTN_SMALL", 0):
            self.l1.withhold = self.coverage.model.pick_stall(kind, self.rng, 0.3)

    async def reset(self) -> None:
        self.clear_pin.value = 0
        await start_clock_and_reset(self.dut)

    def counters(self) -> dict[str, int]:
        """The engine's counter outputs now (name -> value)."""
        return {name: int(pin.value) for name, pin in self.counter_pins.items()}

    async def run_jobs(self, jobs: list[Job], *, timeout: int) -> list[tuple[int, int]]:
        """Queue ``jobs``, wait for their done events; returns (cycles, error) per job."""
        first_event = len(self.monitor.events)
        start = self.loop.cycle
        self.source.push(*jobs)
        await self.loop.run_until(
            lambda: len(self.monitor.events) >= first_event + len(jobs),
            timeout=timeout,
            what=f"done events of {len(jobs)} jobs (seed {self.seed})",
        )
        return [(c - start, err) for c, err in self.monitor.events[first_event:]]

    async def run_checked(self, job: Job, what: str, *, timeout: int) -> int:
        """Run the valid ``job`` alone: no error, L1 equal to the golden model's after it
        (``what`` names it in a failure). Returns its cycles, queueing to done event."""
        want = self.image.copy()
        assert run_job(want, job, self.cfg) == JobError.NONE, f"{what}: not a valid job"
        [(cycles, err)] = await self.run_jobs([job], timeout=timeout)
        assert err == 0, f"{what}: {job} reported error {JobError(err).name} (seed {self.seed})"
        self.check_image(want, what, job)
        return cycles

    def check_image(self, want: np.ndarray, what: str, job: Job | None = None) -> None:
        diff = np.flatnonzero(self.image != want)
        if diff.size:
            a = int(diff[0])
            where = ""
            if job is not None and job.c_stride:
                row, col = divmod(a - job.c_addr, job.c_stride)
                where = f" = output row {row}, column {col}"
            raise AssertionError(
                f"{what}: {diff.size} bytes differ from the golden model, first at {a:#x}{where} "
                f"(got {self.image[a].view(np.int8)}, want {want[a].view(np.int8)}) "
                f"(seed {self.seed})"
            )


def _small_dims(
    cfg: ClusterConfig, rng: np.random.Generator, ragged: tuple[bool, bool, bool] | None = None
) -> tuple[int, int, int]:
    """Random GEMM dims: up to two tiles and a ragged third in each direction, each
    ragged or aligned as ``ragged`` asks (m, n, k; see ``gemm_dims``).

    With TINYATTN_SMALL=1 (slow simulators at large configurations), up to one
    tile and a ragged second.
    """
    tiles = 1 if env_int("TINYATTN_SMALL", 0) else 2
    return gemm_dims(cfg, rng, ragged or (None, None, None), tiles=tiles)


@cocotb.test()
async def gemm_random(dut: Any) -> None:
    """Random GEMM jobs (all flag combinations, ragged tiles) one after another."""
    tb = await EngineTB.started(dut, 0)
    cfg = tb.cfg
    for i in range(env_int("TINYATTN_JOBS", 6)):
        tb.randomize_image()
        # Shape, flags and stall class: a random one among those the run has not hit yet.
        m, n, k = _small_dims(cfg, tb.rng, tb.coverage.directed_shape("gemm", tb.rng))
        flags = tb.coverage.model.pick_flags(tb.rng)
        tb.direct_stall("gemm")
        job = random_gemm(tb.image, cfg, tb.rng, m=m, n=n, k=k, flags=flags)
        what = f"job {i} (m={m} n={n} k={k} flags={job.flags:#x})"
        cycles = await tb.run_checked(job, what, timeout=200 * (m * n * k // 64 + 200))
        dut._log.info("job %d m=%d n=%d k=%d flags=%#x: %d cycles", i, m, n, k, job.flags, cycles)
    tb.checker.finish()


@cocotb.test()
async def gemm_queue(dut: Any) -> None:
    """Three jobs queued back to back: done events in order, all results right."""
    tb = await EngineTB.started(dut, 1)
    cfg, seed = tb.cfg, tb.seed
    tb.randomize_image()
    alloc = Allocator(tb.image.size, tb.rng)
    e = cfg.engine
    jobs = [
        random_gemm(
            tb.image, cfg, tb.rng, m=e.tile_m + 1, n=e.vec_len, k=2 * e.vec_len, alloc=alloc,
            flags=tb.coverage.model.pick_flags(tb.rng),
        )
        for _ in range(3)
    ]  # fmt: skip
    want = tb.image.copy()
    for job in jobs:
        assert run_job(want, job, cfg) == JobError.NONE
    # The third job comes once the second has left the queue (pushed while the engine
    # is busy with nothing queued; the second was pushed with the first still queued).
    results = await _run_last_late(tb, jobs, f"gemm_queue (seed {seed})", timeout=400_000)
    assert [err for _, err in results] == [0, 0, 0], results
    # The queue took the second job while the first ran.
    assert tb.accepted[1][0] < tb.monitor.events[-3][0], "second job not queued early"
    tb.check_image(want, "three queued jobs")
    tb.checker.finish()


async def _run_last_late(
    tb: EngineTB, jobs: list[Job], what: str, *, timeout: int
) -> list[tuple[int, int]]:
    """Queue ``jobs`` but the last, push the last once they have all left the engine's
    queue (the engine busy with nothing queued), and wait for every done event; returns
    (cycles, error) per job, as ``run_jobs``."""
    first_event = len(tb.monitor.events)
    start = tb.loop.cycle
    tb.source.push(*jobs[:-1])
    await tb.loop.run_until(
        lambda: tb.source.idle and not tb.monitor.status["queued"],
        timeout=timeout,
        what=f"{what}: the first {len(jobs) - 1} jobs out of the queue",
    )
    tb.source.push(jobs[-1])
    await tb.loop.run_until(
        lambda: len(tb.monitor.events) >= first_event + len(jobs),
        timeout=timeout,
        what=f"{what}: done events of {len(jobs)} jobs",
    )
    return [(c - start, err) for c, err in tb.monitor.events[first_event:]]


def _att(good: Job, cfg: ClusterConfig) -> Job:
    """A valid one-head attention job over the GEMM job's buffers (all fit in them)."""
    e = cfg.engine
    return good.replace(
        op=Op.ATTENTION, flags=0, m=4, n=e.n_pe, k=4, heads=1,
        d_addr=good.b_addr, d_stride=good.b_stride,
    )  # fmt: skip


def invalid_jobs(cfg: ClusterConfig, good: Job) -> list[tuple[str, Job, JobError]]:
    """One job per error class, each a small edit of a valid job."""
    size = cfg.memory.size_bytes
    e = cfg.engine
    return [
        ("op 0", good.replace(op=0), JobError.UNKNOWN_OP),
        ("op 3", good.replace(op=3), JobError.UNKNOWN_OP),
        ("m = 0", good.replace(m=0), JobError.ZERO_DIM),
        ("k = 0", good.replace(k=0), JobError.ZERO_DIM),
        ("n > max_dim", good.replace(n=e.max_dim + 4), JobError.DIM_LIMIT),
        ("k % 4", good.replace(k=good.k - 2), JobError.GRANULE),
        ("n % 4", good.replace(n=good.n - 2), JobError.GRANULE),
        ("a_addr % 4", good.replace(a_addr=good.a_addr + 2), JobError.MISALIGNED),
        ("c_stride % 4", good.replace(c_stride=good.c_stride + 1), JobError.MISALIGNED),
        ("Y beyond L1", good.replace(c_addr=size - 4), JobError.OUT_OF_RANGE),
        # The exact edge: Y's last word is the first word past L1.
        (
            "Y one word beyond L1",
            good.replace(c_addr=size + 4 - (good.m - 1) * good.c_stride - good.n),
            JobError.OUT_OF_RANGE,
        ),
        ("W beyond L1", good.replace(b_stride=size // 2), JobError.OUT_OF_RANGE),
        ("attention with a flag", _att(good, cfg).replace(flags=FLAG_RELU), JobError.UNKNOWN_OP),
        ("heads = 0", _att(good, cfg).replace(heads=0), JobError.ZERO_DIM),
        ("head dim > vec_len", _att(good, cfg).replace(k=e.vec_len + 4), JobError.DIM_LIMIT),
        ("keys > max_seq", _att(good, cfg).replace(n=e.max_seq + e.n_pe), JobError.DIM_LIMIT),
        (
            "keys % n_pe",
            _att(good, cfg).replace(n=e.n_pe + 4) if e.n_pe > 4 else _att(good, cfg).replace(n=6),
            JobError.GRANULE,
        ),
        ("head stride % 4", _att(good, cfg).replace(heads=2, b_hstride=2), JobError.MISALIGNED),
        (
            "last head beyond L1",
            _att(good, cfg).replace(heads=2, c_hstride=size - good.c_addr),
            JobError.OUT_OF_RANGE,
        ),
        (
            "residual beyond L1",
            good.replace(flags=good.flags | FLAG_RESIDUAL, d_addr=size - 8, d_stride=4),
            JobError.OUT_OF_RANGE,
        ),
        (
            "per-head table % 4",
            _att(good, cfg).replace(flags=FLAG_PER_HEAD, p_addr=good.p_addr + 2),
            JobError.MISALIGNED,
        ),
        (  # the second head's record reaches one word past L1
            "per-head table beyond L1",
            _att(good, cfg).replace(flags=FLAG_PER_HEAD, heads=2, p_addr=size - 28),
            JobError.OUT_OF_RANGE,
        ),
    ]


@cocotb.test()
async def gemm_errors(dut: Any) -> None:
    """Every invalid-job class: an event with the right code, L1 untouched, no hang."""
    tb = await EngineTB.started(dut, 2)
    cfg, seed = tb.cfg, tb.seed
    tb.randomize_image()
    good = random_gemm(
        tb.image, cfg, tb.rng, m=5, n=8, k=8, flags=tb.coverage.model.pick_flags(tb.rng)
    )
    cases = invalid_jobs(cfg, good)
    before = tb.image.copy()
    results = await tb.run_jobs([job for _, job, _ in cases], timeout=100 * len(cases) + 100)
    for (name, job, want), (_, got) in zip(cases, results, strict=True):
        assert run_job(before.copy(), job, cfg) == want, f"golden model disagrees on {name}"
        assert got == want, (
            f"{name}: engine reported {got}, want {want.name}={int(want)} (seed {seed})"
        )
    tb.check_image(before, "after rejected jobs")
    # And the engine still works.
    await tb.run_checked(good, "valid job after rejected ones", timeout=100_000)
    tb.checker.finish()


def _output_mask(size: int, job: Job) -> np.ndarray:
    """True on every byte of ``job``'s declared output (its Y rectangle(s))."""
    mask = np.zeros(size, dtype=bool)
    for r in job_inputs_outputs(job)[1]:
        for i in range(r.rows):
            a = r.addr + i * r.stride
            mask[a : a + r.cols] = True
    return mask


#: Where a trial of ``gemm_soft_clear`` clears: "early" (within 40 cycles of the last
#: job's acceptance: the first job starting, the queue full), "running" (anywhere in the
#: first job), "second" (after the first job's done: the second running).
CLEAR_POINTS = ("early", "running", "second", "running")


@cocotb.test()
async def gemm_soft_clear(dut: Any) -> None:
    """Soft clears at random points (seeded), with jobs queued behind the running one.

    Per trial, on a fresh random L1, GEMM jobs fill the engine: two in the accepted
    slots, one in the check stage and ``job_queue_depth`` more in the queue (with fewer,
    the slots and the check stage hold them all and the queue is empty at the clear). The
    clear comes at a random cycle of the mode in :data:`CLEAR_POINTS`. Then:

    - no ``done`` between the clear and idle (and 20 cycles after), except in the
      cycle right after the clear for a job that finished on the clear's own edge;
    - idle: ``busy`` low, nothing queued;
    - the whole L1 equals the image taken in the clear cycle, except the declared
      output range of the aborted job (the oldest accepted job without a ``done``):
      queued jobs must leave no trace, the aborted job writes nowhere else;
    - that image itself equals the golden model of the jobs done before the clear,
      outside the same range;
    - the next trial's jobs (and a last job) run exact.

    Fails for a clear that is ignored, one that leaves a queued job, and stray writes.
    """
    tb = await EngineTB.started(dut, 3)
    cfg, seed = tb.cfg, tb.seed
    e = cfg.engine
    size = tb.image.size
    small = env_int("TINYATTN_SMALL", 0)
    trials = env_int("TINYATTN_CLEARS", len(CLEAR_POINTS))
    for trial in range(trials):
        mode = CLEAR_POINTS[trial % len(CLEAR_POINTS)]
        tb.randomize_image()
        alloc = Allocator(size, tb.rng)
        # Two tiles each way where the clear may hit the first job anywhere; one where
        # it must run to its end first.
        tiles = 1 if small or mode == "second" else 2
        jobs = [
            random_gemm(
                tb.image, cfg, tb.rng, m=tiles * e.tile_m, n=tiles * e.vec_len,
                k=2 * e.vec_len, alloc=alloc,
            ),
            random_gemm(tb.image, cfg, tb.rng, m=e.tile_m, n=e.vec_len, k=e.vec_len, alloc=alloc),
            *(
                random_gemm(tb.image, cfg, tb.rng, m=3, n=8, k=8, alloc=alloc)
                for _ in range(1 + e.job_queue_depth)
            ),
        ]  # fmt: skip
        initial = tb.image.copy()  # random_gemm wrote the operands
        first_event = len(tb.monitor.events)
        first_accept = len(tb.accepted)
        tb.source.push(*jobs)
        what = f"trial {trial} ({mode})"
        await tb.loop.run_until(
            lambda: tb.source.idle,
            timeout=10_000,
            what=f"{what}: jobs accepted (seed {seed})",
        )
        if mode == "early":
            await tb.loop.run(int(tb.rng.integers(0, 40)))
        elif mode == "running":
            # Up to twice the job's ideal cycles (it may end first: then the second runs).
            ideal = jobs[0].m * jobs[0].n * jobs[0].k // e.macs_per_cycle
            cut = int(tb.rng.integers(0, max(2, 2 * ideal)))
            for _ in range(cut):
                if len(tb.monitor.events) > first_event:
                    break
                await tb.loop.step()
        else:
            await tb.loop.run_until(
                lambda n=first_event: len(tb.monitor.events) > n,
                timeout=400_000,
                what=f"{what}: first done (seed {seed})",
            )
            await tb.loop.run(int(tb.rng.integers(0, 60)))
        queued = tb.monitor.status["queued"]
        if mode == "early":
            # The point of the trial: a clear must flush jobs still in the queue.
            assert queued > 0, f"{what}: nothing queued at the clear (seed {seed})"
        tb.pins.next["clear"] = 1
        await tb.loop.step()
        tb.pins.next["clear"] = 0
        clear_cycle = tb.loop.cycle
        snapshot = tb.image.copy()
        accepted = [job for _, job in tb.accepted[first_accept:]]
        assert len(accepted) == len(jobs), f"{what}: {len(accepted)} jobs accepted (seed {seed})"
        # A done sampled in the cycle after the clear is the registered done of a job that
        # ended on the clear's own edge: it finished.
        await tb.loop.step()
        done = [err for _, err in tb.monitor.events[first_event:]]
        n_done = len(done)
        for err in done:
            assert err == 0, f"{what}: job error {JobError(err).name} (seed {seed})"
        await tb.loop.run_until(
            lambda: not tb.monitor.status["busy"] and not tb.monitor.status["queued"],
            timeout=5000,
            what=f"{what}: idle after a soft clear at cycle {clear_cycle} (seed {seed})",
        )
        await tb.loop.run(20)
        late = tb.monitor.events[first_event + n_done :]
        assert not late, (
            f"{what}: done at cycles {[c for c, _ in late]} after a clear at cycle "
            f"{clear_cycle} ({n_done} jobs done before it; seed {seed})"
        )
        want = initial.copy()
        for job in accepted[:n_done]:
            assert run_job(want, job, cfg) == JobError.NONE
        keep = np.ones(size, dtype=bool)
        if n_done < len(accepted):
            keep &= ~_output_mask(size, accepted[n_done])
        for image, when in ((snapshot, "in the clear cycle"), (tb.image, "after the clear")):
            diff = np.flatnonzero((image != want) & keep)
            if diff.size:
                a = int(diff[0])
                owner = [i for i, j in enumerate(accepted) if _output_mask(size, j)[a]]
                raise AssertionError(
                    f"{what}, clear at cycle {clear_cycle} with {n_done} jobs done: L1 {when} "
                    f"differs at {diff.size} bytes outside the aborted job's output, first "
                    f"at {a:#x} (got {image[a]}, want {want[a]}; output of jobs {owner}) "
                    f"(seed {seed})"
                )
        dut._log.info(
            "%s: clear at cycle %d with %d jobs in the queue, %d of %d jobs done before it",
            what, clear_cycle, queued, n_done, len(accepted),
        )  # fmt: skip
    # And the engine still works.
    tb.randomize_image()
    job = random_gemm(tb.image, cfg, tb.rng, m=e.tile_m + 1, n=e.vec_len, k=e.vec_len)
    await tb.run_checked(job, "job after the soft clears", timeout=200_000)
    tb.checker.finish()


@cocotb.test()
async def job_perf(dut: Any) -> None:
    """One job of TINYATTN_PERF_KIND (gemm | attention) and size TINYATTN_PERF_M/N/K/HEADS.

    Records cycles from queueing to the done event, the ideal cycles at peak
    MAC rate, utilization (useful MACs / (cycles x peak)) and the counters.
    """
    tb = await EngineTB.started(dut, 4, withhold=0.0)
    cfg = tb.cfg
    e = cfg.engine
    withhold = tb.l1.withhold
    kind = os.environ.get("TINYATTN_PERF_KIND", "gemm")
    m = env_int("TINYATTN_PERF_M", 2 * e.tile_m)
    n = env_int("TINYATTN_PERF_N", 2 * e.vec_len)
    k = env_int("TINYATTN_PERF_K", 4 * e.vec_len if kind == "gemm" else min(32, e.vec_len))
    heads = env_int("TINYATTN_PERF_HEADS", 1)
    if kind == "gemm":
        job = random_gemm(
            tb.image, cfg, tb.rng, m=m, n=n, k=k, flags=env_int("TINYATTN_PERF_FLAGS", 0)
        )
        macs = m * n * k
    else:
        per_head = bool(env_int("TINYATTN_PERF_PER_HEAD", 0))
        job = random_attention(tb.image, cfg, tb.rng, m=m, n=n, k=k, heads=heads, per_head=per_head)
        macs = 2 * heads * m * n * k
    want = tb.image.copy()
    assert run_job(want, job, cfg) == JobError.NONE
    before = tb.counters()
    timeout = 40 * macs // e.macs_per_cycle + 20_000
    [(cycles, err)] = await tb.run_jobs([job], timeout=timeout)
    assert err == 0, f"error {JobError(err).name}"
    tb.check_image(want, f"{kind} perf job", job)
    after = tb.counters()
    counted = after["macs"] - before["macs"]
    assert counted == macs, f"MAC counter {counted}, want {macs}"
    write_metrics(
        "job_perf",
        {
            "kind": kind,
            "m": m,
            "n": n,
            "k": k,
            "heads": heads,
            "macs": macs,
            "cycles": cycles,
            "busy_cycles": after["busy_cycles"] - before["busy_cycles"],
            "stall_cycles": after["stall_cycles"] - before["stall_cycles"],
            "ideal_cycles": macs // e.macs_per_cycle,
            "utilization": macs / (cycles * e.macs_per_cycle),
            "withhold": withhold,
        },
    )
    tb.checker.finish()


def _attention_dims(
    cfg: ClusterConfig, rng: np.random.Generator, ragged: tuple[bool, bool, bool] | None = None
) -> tuple[int, int, int, int]:
    """Queries, keys, head dimension (ragged or aligned as ``ragged`` asks; see
    ``attention_dims``) and 1-3 heads; TINYATTN_SMALL=1: one query tile, max_seq / 2."""
    e = cfg.engine
    small = env_int("TINYATTN_SMALL", 0)
    m, n, k = attention_dims(
        cfg,
        rng,
        ragged or (None, None, None),
        tiles=1 if small else 2,
        max_keys=e.max_seq // (2 if small else 1),
    )
    return m, n, k, int(rng.integers(1, 4))


@cocotb.test()
async def attention_random(dut: Any) -> None:
    """Random multi-head attention jobs: ragged query tiles, any key count of the granule."""
    tb = await EngineTB.started(dut, 5)
    cfg = tb.cfg
    for i in range(env_int("TINYATTN_JOBS", 6)):
        tb.randomize_image()
        m, n, k, heads = _attention_dims(
            cfg, tb.rng, tb.coverage.directed_shape("attention", tb.rng)
        )
        k = tb.coverage.model.pick_head_dim(k, tb.rng)  # split-lane QK: small head dims
        tb.direct_stall("attention")
        per_head = tb.coverage.model.pick_per_head(tb.rng)
        job = random_attention(tb.image, cfg, tb.rng, m=m, n=n, k=k, heads=heads, per_head=per_head)
        what = f"attention {i} (m={m} n={n} k={k} heads={heads} per_head={per_head})"
        cycles = await tb.run_checked(job, what, timeout=50 * heads * (m + 8) * (n + 8) + 5000)
        dut._log.info("%s: %d cycles", what, cycles)
    tb.checker.finish()


@cocotb.test()
async def mixed_queue(dut: Any) -> None:
    """A random mix of GEMM and attention jobs (random kinds, shapes, flags) queued back to back.

    The jobs share one L1 image and run in queue order; the image after the last
    one must equal the golden model applying them in the same order.
    """
    tb = await EngineTB.started(dut, 6)
    cfg, seed = tb.cfg, tb.seed
    e = cfg.engine
    rng = tb.rng
    tb.randomize_image()
    alloc = Allocator(tb.image.size, rng)
    jobs = []
    mix = env_int("TINYATTN_MIX", 4)
    # The first job is pushed to an idle engine, the last once the queue is empty
    # (_run_last_late), the others behind one queued job. Each kind: one whose occupancy
    # bin is not hit yet, else a GEMM while a flag bin is not hit, else either; one of
    # each kind at least (a job whose bin either kind has hit changes kind).
    model = tb.coverage.model
    slots = [occupancy_label(i > 0, 0 if i in (0, mix - 1) else 1) for i in range(mix)]
    wanted: list[list[str]] = []
    kinds: list[str] = []
    for occupancy in slots:
        placed = {k for k, o in zip(kinds, slots, strict=False) if o == occupancy}
        wanted.append([k for k in model.occupancy_open(occupancy) if k not in placed])
        free = ["gemm"] if model.flags_open() else ["gemm", "attention"]
        kinds.append(str(rng.choice(wanted[-1] or free)))
    if mix > 1 and len(set(kinds)) == 1:
        j = next((i for i, w in enumerate(wanted) if len(w) != 1), 0)
        kinds[j] = "attention" if kinds[j] == "gemm" else "gemm"
    for i in range(mix):
        if kinds[i] == "gemm":
            m = int(rng.integers(1, e.tile_m + 3))
            n = 4 * int(rng.integers(1, e.vec_len // 2 + 3))
            k = 4 * int(rng.integers(1, e.vec_len // 2 + 3))
            flags = tb.coverage.model.pick_flags(rng)
            jobs.append(random_gemm(tb.image, cfg, rng, m=m, n=n, k=k, flags=flags, alloc=alloc))
        else:
            m = int(rng.integers(1, e.tile_m + 3))
            n = e.n_pe * int(rng.integers(1, max(2, 32 // e.n_pe) + 1))
            k = 4 * int(rng.integers(1, e.vec_len // 4 + 1))
            heads = int(rng.integers(1, 3))
            per_head = tb.coverage.model.pick_per_head(rng)
            jobs.append(
                random_attention(
                    tb.image, cfg, rng, m=m, n=n, k=k, heads=heads, per_head=per_head, alloc=alloc
                )
            )
    want = tb.image.copy()
    for job in jobs:
        assert run_job(want, job, cfg) == JobError.NONE
    results = await _run_last_late(tb, jobs, f"mixed queue (seed {seed})", timeout=400_000)
    assert [err for _, err in results] == [0] * len(jobs), f"{results} (seed {seed})"
    kinds = " ".join("G" if job.op == 1 else "A" for job in jobs)
    dut._log.info("mixed queue %s: %s", kinds, [c for c, _ in results])
    tb.check_image(want, "mixed queue")
    tb.checker.finish()


@cocotb.test()
async def job_chain(dut: Any) -> None:
    """Jobs that read what the job before them wrote, queued back to back.

    GEMM, a GEMM on its output, a residual GEMM adding that output, an attention job
    whose queries are that output, a GEMM on the attention output; a rejected job sits
    in the chain, and an independent GEMM follows. Each dependent job must wait for the
    writes of the one before (``docs/engine.md``, "Jobs back to back"); the L1 image
    after the chain must equal the golden model applying the jobs in order, and the
    done events must come in queue order with the rejected job's error in its place.
    """
    tb = await EngineTB.started(dut, 7)
    cfg, seed = tb.cfg, tb.seed
    e = cfg.engine
    rng = tb.rng
    tb.randomize_image()
    alloc = Allocator(tb.image.size, rng)
    m = e.tile_m + 1
    width = e.vec_len + 8  # two output tiles, the second ragged

    def gemm(n: int, k: int, flags: int = 0) -> Job:
        return random_gemm(tb.image, cfg, rng, m=m, n=n, k=k, flags=flags, alloc=alloc)

    first = gemm(width, 2 * e.vec_len, FLAG_RELU)
    second = gemm(width, width).replace(a_addr=first.c_addr, a_stride=first.c_stride)
    residual = gemm(width, e.vec_len, FLAG_RESIDUAL).replace(
        d_addr=second.c_addr, d_stride=second.c_stride
    )
    head_dim = min(32, e.vec_len)
    attention = random_attention(
        tb.image, cfg, rng, m=m, n=2 * e.n_pe, k=head_dim, heads=1, alloc=alloc
    ).replace(a_addr=residual.c_addr, a_stride=residual.c_stride)
    last = gemm(e.vec_len, head_dim).replace(a_addr=attention.c_addr, a_stride=attention.c_stride)
    rejected = first.replace(op=3)
    independent = gemm(e.vec_len, e.vec_len)
    jobs = [first, second, rejected, residual, attention, last, independent]
    want = tb.image.copy()
    codes = [int(run_job(want, job, cfg)) for job in jobs]
    assert codes == [0, 0, int(JobError.UNKNOWN_OP), 0, 0, 0, 0], codes
    results = await tb.run_jobs(jobs, timeout=400_000)
    assert [err for _, err in results] == codes, f"{results} (seed {seed})"
    tb.check_image(want, "chain of dependent jobs")
    tb.checker.finish()


def _queue_shapes() -> list[tuple[int, int, int]]:
    """TINYATTN_QUEUE_SHAPES: ``MxNxK`` GEMM shapes (job dimensions), comma-separated."""
    text = os.environ.get("TINYATTN_QUEUE_SHAPES", "")
    try:
        return [tuple(int(d) for d in shape.split("x")) for shape in text.split(",") if shape]
    except ValueError:
        raise ValueError(
            f"TINYATTN_QUEUE_SHAPES={text!r}: give job shapes as MxNxK,MxNxK (e.g. 64x64x128)"
        ) from None


@cocotb.test()
async def queue_perf(dut: Any) -> None:
    """TINYATTN_QUEUE_JOBS independent GEMMs pushed at once, shapes cycling through
    TINYATTN_QUEUE_SHAPES (default: a tile and two tiles of the engine).

    Records cycles from the first push to the last done, against the ideal at peak MAC
    rate. The shapes share one X and one weight region (each job reads them with its
    own strides, so the MobileBERT FFN shapes fit in L1), and each shape writes its own
    output with its own parameters; the image after the queue must be the golden model's.
    """
    tb = await EngineTB.started(dut, 8, withhold=0.0)
    cfg, seed = tb.cfg, tb.seed
    e = cfg.engine
    withhold = tb.l1.withhold
    rng = tb.rng
    shapes = _queue_shapes() or [
        (e.tile_m, e.vec_len, 2 * e.vec_len),
        (2 * e.tile_m, 2 * e.vec_len, e.vec_len),
    ]
    count = env_int("TINYATTN_QUEUE_JOBS", 8)
    alloc = Allocator(tb.image.size, rng)
    x_addr, x_stride = alloc.matrix(max(s[0] for s in shapes), max(s[2] for s in shapes))
    w_bytes = max(n * k for _, n, k in shapes)
    w_addr = alloc.take(w_bytes)
    operands = slice(x_addr, w_addr + w_bytes)  # X, the gap, W: all random
    tb.image[operands] = rng.integers(0, 256, operands.stop - operands.start, dtype=np.uint8)
    templates = []
    for m, n, k in shapes:
        # A random GEMM of the shape laid out in a scratch image: its parameters are
        # copied next to the shared operands, its operands replaced by them.
        scratch = np.zeros_like(tb.image)
        job = random_gemm(scratch, cfg, rng, m=m, n=n, k=k, flags=0)
        p_bytes = n * PARAM_RECORD_BYTES
        p_addr = alloc.take(p_bytes)
        tb.image[p_addr : p_addr + p_bytes] = scratch[job.p_addr : job.p_addr + p_bytes]
        c_addr, c_stride = alloc.matrix(m, n)
        templates.append(
            job.replace(
                a_addr=x_addr, a_stride=x_stride, b_addr=w_addr, b_stride=k,
                c_addr=c_addr, c_stride=c_stride, p_addr=p_addr,
            )
        )  # fmt: skip
    jobs = [templates[i % len(templates)] for i in range(count)]
    want = tb.image.copy()
    for job in jobs:
        assert run_job(want, job, cfg) == JobError.NONE
    macs = sum(job.m * job.n * job.k for job in jobs)
    macs0 = tb.counters()["macs"]
    timeout = 40 * macs // e.macs_per_cycle + 20_000
    results = await tb.run_jobs(jobs, timeout=timeout)
    assert [err for _, err in results] == [0] * count, f"{results} (seed {seed})"
    tb.check_image(want, f"{count} queued GEMMs")
    counted = tb.counters()["macs"] - macs0
    assert counted == macs, f"MAC counter {counted}, want {macs}"
    # run_jobs counts from the cycle the jobs were handed to the source; the first push
    # (valid with the first job) is in that cycle.
    cycles = results[-1][0]
    write_metrics(
        "queue_perf",
        {
            "jobs": count,
            "shapes": ",".join("x".join(str(d) for d in s) for s in shapes),
            "macs": macs,
            "cycles": cycles,
            "done_cycles": [c for c, _ in results],
            "ideal_cycles": macs // e.macs_per_cycle,
            "utilization": macs / (cycles * e.macs_per_cycle),
            "withhold": withhold,
        },
    )
    tb.checker.finish()
