"""Mutation testing: break the design on purpose and check that a bench notices.

Each :class:`Mutant` replaces one exact snippet of one design source with a plausible
bug. :func:`run_mutant` copies the package sources into a scratch tree laid out as the
installed package, applies the change there (the checkout is never touched), and runs
the mutant's pytest cases against that tree. The mutant is *killed* when a bench fails
its check; it *survives* when every case passes, and it is *stillborn* when the design
does not even build (a broken mutant, not a verified bug).

Netlists and simulator builds of mutants go into their own build root (``mutants/``
inside the normal one): their source hash differs from the design's, and keeping them
apart means a clean of the normal cache is never poisoned by a mutant.

``tinyattn mutants`` runs the catalogue and prints which case killed each mutant;
``docs/verification.md`` publishes the table.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MUTANTS",
    "Mutant",
    "MutantError",
    "MutantResult",
    "apply_mutant",
    "format_table",
    "run_mutant",
    "run_mutants",
    "scratch_tree",
]


class MutantError(ValueError):
    """A mutant that no longer applies (its snippet changed): update the catalogue."""


@dataclass(frozen=True)
class Mutant:
    """One plausible bug: ``original`` (exactly once in ``path``) becomes ``mutated``.

    ``cases`` are pytest node ids relative to the checkout (``tests/...::test[...]``);
    they run in order and the first failure kills the mutant.
    """

    name: str
    description: str
    path: str
    original: str
    mutated: str
    cases: tuple[str, ...]


def _dma(*configs: str) -> tuple[str, ...]:
    return tuple(f"tests/test_dma_rtl.py::test_dma[icarus-{c}]" for c in configs)


def _interconnect(*configs: str) -> tuple[str, ...]:
    return tuple(f"tests/test_interconnect_rtl.py::test_interconnect[icarus-{c}]" for c in configs)


_CORE = ("tests/test_compute_core_rtl.py::test_compute_core[icarus-4x8]",)
_ENGINE = (
    "tests/test_engine_rtl.py::test_engine[verilator-4x16]",
    "tests/test_engine_rtl.py::test_engine[icarus-4x16]",
)
#: The engine's controller alone, in Amaranth's simulator (seconds, no build); the engine
#: bench's soft-clear trials (a full queue at the early clear) follow.
_CONTROLLER_CLEAR = (
    "tests/test_engine_parts.py::test_controller_soft_clear_waits_for_the_port_and_drops_every_job",
)
_CONTROLLER_ORDER = (
    "tests/test_engine_parts.py::"
    "test_controller_reports_in_queue_order_and_waits_for_what_a_job_reads",
)
_ITAMAX = (
    "tests/test_itamax_unit.py::test_itamax_unit_matches_golden[4-8-64-20]",
    "tests/test_itamax_unit.py::test_itamax_unit_matches_golden[4-3-16-128]",
)
_REGBLOCK = (
    "tests/test_regblock_rtl.py::test_regblock[icarus-small]",
    "tests/test_regblock_rtl.py::test_regblock_no_idle_cycles[icarus]",
)

#: The catalogue. Small configurations under Icarus: a build takes seconds.
MUTANTS: tuple[Mutant, ...] = (
    # -- compute core: requantization ------------------------------------------------
    Mutant(
        "requant-no-rounding",
        "requantization drops its rounding bit (truncates instead of rounding half up)",
        "hw/compute_core.py",
        "shifted = (s2_prod[i] + half) >> rq.shift",
        "shifted = s2_prod[i] >> rq.shift",
        _CORE,
    ),
    Mutant(
        "requant-saturate-128",
        "saturation lets +128 through (wraps to -128 in int8)",
        "hw/compute_core.py",
        "sat = Mux(total > 127, 127,",
        "sat = Mux(total > 128, 127,",
        _CORE,
    ),
    Mutant(
        "relu-keeps-minus-one",
        "ReLU passes -1",
        "hw/compute_core.py",
        "Mux(s2_relu & (total < 0), 0, sat)",
        "Mux(s2_relu & (total < -1), 0, sat)",
        _CORE,
    ),
    Mutant(
        "core-ignores-backpressure",
        "the compute core's last stage moves on while the result is not taken",
        "hw/compute_core.py",
        "m.d.comb += load[-1].eq(~valid[-1] | self.results.ready)",
        "m.d.comb += load[-1].eq(1)",
        _CORE,
    ),
    # -- engine ------------------------------------------------------------------------
    Mutant(
        "ragged-mask-off-by-one",
        "a ragged output tile writes one word more than its columns",
        "hw/engine_writer.py",
        "request.payload.mask.eq(word_mask(m, (walker.cols + 3) >> 2, e.port_lanes)),",
        "request.payload.mask.eq(word_mask(m, (walker.cols + 4) >> 2, e.port_lanes)),",
        _ENGINE,
    ),
    Mutant(
        "clear-keeps-queue",
        "a soft clear does not flush the job queue",
        "hw/engine_job_queue.py",
        "m.submodules.queue = ResetInserter(self.reset)(queue)",
        "m.submodules.queue = queue",
        _CONTROLLER_CLEAR + _ENGINE,
    ),
    Mutant(
        "clear-ignored",
        "the engine ignores a soft clear",
        "hw/engine_job_queue.py",
        "        with m.If(self.clear):\n            m.d.sync += self.clearing.eq(1)\n",
        "        with m.If(self.clear & 0):\n            m.d.sync += self.clearing.eq(1)\n",
        _CONTROLLER_CLEAR + _ENGINE,
    ),
    Mutant(
        "residual-no-rounding",
        "the residual add drops its rounding term",
        "hw/engine_writer.py",
        "(job.res_y_mult * y_in[c] + job.res_r_mult * res_in[c] + half_res) >> job.res_shift",
        "(job.res_y_mult * y_in[c] + job.res_r_mult * res_in[c]) >> job.res_shift",
        _ENGINE,
    ),
    Mutant(
        "affine-no-rounding",
        "the per-channel affine drops its rounding term",
        "hw/engine_writer.py",
        "af.eq((record.gamma * v1 + record.beta + half_aff) >> job.aff_shift)",
        "af.eq((record.gamma * v1 + record.beta) >> job.aff_shift)",
        _ENGINE,
    ),
    Mutant(
        "range-check-one-word-short",
        "the range check lets a tensor's last word lie past L1",
        "hw/engine_job_checker.py",
        "last = addr + (rows - 1) * stride + row_bytes - 1",
        "last = addr + (rows - 1) * stride + row_bytes - 5",
        _ENGINE,
    ),
    Mutant(
        "granule-check-halved",
        "n and k need only be even, not multiples of 4",
        "hw/engine_job_checker.py",
        "(job.n[:2] != 0)",
        "(job.n[:1] != 0)",
        _ENGINE,
    ),
    Mutant(
        "per-head-record-of-head-0",
        "an attention job with FLAG_PER_HEAD requantizes every head with head 0's record",
        "hw/engine_param_fetcher.py",
        "base = Mux(attention, walker.head, Mux(per_row, walker.m0, walker.n0))",
        "base = Mux(attention, 0, Mux(per_row, walker.m0, walker.n0))",
        _ENGINE,
    ),
    Mutant(
        "raw-wait-skipped",
        "a job that reads the previous job's output starts before that job is done "
        "(the read-after-write wait is skipped)",
        "hw/engine_controller.py",
        "with m.Elif((in_flight == 0) | ((in_flight == 1) & ~checker.reads_written)):",
        "with m.Elif((in_flight == 0) | (in_flight == 1)):",
        _CONTROLLER_ORDER + _ENGINE,
    ),
    # -- ITAMax (the streaming softmax) ----------------------------------------------
    Mutant(
        "itamax-numerator",
        "the softmax normalisation divides 65024 instead of 65280",
        "hw/itamax.py",
        "ITAMAX_NUMERATOR = 65280",
        "ITAMAX_NUMERATOR = 65024",
        _ITAMAX,
    ),
    Mutant(
        "itamax-sum-not-rescaled",
        "the running sum is not shifted when the row maximum grows",
        "hw/itamax.py",
        "s_new.eq(_shr_sat(s_old, grow, sb) + total)",
        "s_new.eq(s_old + total)",
        _ITAMAX,
    ),
    Mutant(
        "itamax-max-starts-at-127",
        "a row's running maximum starts at -127, not -128",
        "hw/itamax.py",
        "m_old.eq(Mux(self.first, -128, ms[self.row])),",
        "m_old.eq(Mux(self.first, -127, ms[self.row])),",
        _ITAMAX,
    ),
    # -- interconnect and L1 ---------------------------------------------------------
    Mutant(
        "rr-pointer-stuck",
        "round-robin pointer never advances",
        "hw/interconnect.py",
        "m.d.sync += prio.eq(~(grant | (grant - 1)))",
        "m.d.sync += prio.eq(prio)",
        _interconnect("b4-c2-d32-v8-s2"),
    ),
    Mutant(
        "response-from-next-bank",
        "a read response is routed from the next bank",
        "hw/interconnect.py",
        "p.rdata.eq(bank_rdata[resp_bank])",
        "p.rdata.eq(bank_rdata[resp_bank + 1])",
        _interconnect("b4-c2-d32-v8-s2"),
    ),
    Mutant(
        "stall-never-fires",
        "the starvation counter never reaches its bound: wide always wins",
        "hw/interconnect.py",
        "(~w_req.any() | (stall == max_stall))",
        "(~w_req.any() | (stall == max_stall + 1))",
        _interconnect("b2-c1-d32-v4-s1", "b4-c2-d32-v8-s2"),
    ),
    Mutant(
        "stall-never-saturates",
        "the starvation counter wraps to 0 one short of its bound",
        "hw/interconnect.py",
        "stall.eq(Mux(n_req.any() & w_win, stall + 1, 0))",
        "stall.eq(Mux(n_req.any() & w_win & (stall < max_stall - 1), stall + 1, 0))",
        _interconnect("b4-c2-d32-v8-s2", "b2-c1-d32-v4-s1"),
    ),
    Mutant(
        "stall-one-early",
        "the starvation counter fires one cycle early",
        "hw/interconnect.py",
        "(~w_req.any() | (stall == max_stall))",
        "(~w_req.any() | (stall == max_stall - 1))",
        _interconnect("b4-c2-d32-v8-s2"),
    ),
    Mutant(
        "narrow-over-wide",
        "the narrow side wins over the wide port",
        "hw/interconnect.py",
        "n_win.eq(n_req.any() & (~w_req.any() | (stall == max_stall))),",
        "n_win.eq(n_req.any()),",
        _interconnect("b4-c2-d32-v8-s2"),
    ),
    Mutant(
        "write-responses-dropped",
        "writes get no response",
        "hw/interconnect.py",
        "m.d.sync += resp.eq(p.req & p.gnt)",
        "m.d.sync += resp.eq(p.req & p.gnt & ~p.we)",
        _interconnect("b4-c2-d32-v8-s2"),
    ),
    Mutant(
        "l1-ignores-byte-enables",
        "L1 writes all four bytes whatever the byte enables",
        "hw/l1.py",
        "wr.en.eq(Mux(port.en & port.we, port.be, 0))",
        "wr.en.eq(Mux(port.en & port.we, 0b1111, 0))",
        _interconnect("b4-c2-d32-v8-s2"),
    ),
    # -- DMA -------------------------------------------------------------------------
    Mutant(
        "dma-rotator-off-by-one",
        "the word rotator is one word off",
        "hw/dma.py",
        "r_idx.eq(ld_soff - ld_doff - 1),",
        "r_idx.eq(ld_soff - ld_doff),",
        _dma("64b-16KiB"),
    ),
    Mutant(
        "dma-last-mask-widened",
        "the last beat of a row writes the whole beat",
        "hw/dma.py",
        "d_mask.eq(word_mask(Mux(d_first, woff(d_row), 0), Mux(d_last, woff(d_end_m1), N - 1))),",
        "d_mask.eq(word_mask(Mux(d_first, woff(d_row), 0), N - 1)),",
        _dma("64b-16KiB"),
    ),
    Mutant(
        "dma-drops-last-beat",
        "a transfer into L1 drops its last beat",
        "hw/dma.py",
        "lane_req[j].w_stream.valid.eq(emit & d_mask[j]),",
        "lane_req[j].w_stream.valid.eq(emit & d_mask[j] & ~(d_last & (wr_rows == 1))),",
        _dma("32b-4KiB", "64b-16KiB"),
    ),
    Mutant(
        "dma-done-before-acks",
        "done is raised before the last write acknowledgements",
        "hw/dma.py",
        "m.If(~rd_active & ~wr_active & bus_idle):",
        "m.If(~rd_active & ~wr_active):",
        _dma("32b-4KiB", "64b-16KiB"),
    ),
    Mutant(
        "dma-l1-range-plus-4",
        "the L1 range check lets a transfer end 4 bytes past L1",
        "hw/dma.py",
        "l1_bad = l1_end > cfg.memory.size_bytes",
        "l1_bad = l1_end > cfg.memory.size_bytes + 4",
        _dma("32b-4KiB"),
    ),
    Mutant(
        "dma-stride-alignment-unchecked",
        "a misaligned L2 stride is not rejected",
        "hw/dma.py",
        "desc.l1_addr | desc.l2_addr | desc.row_bytes | desc.l1_stride | desc.l2_stride",
        "desc.l1_addr | desc.l2_addr | desc.row_bytes | desc.l1_stride",
        _dma("32b-4KiB"),
    ),
    Mutant(
        "dma-error-priority-swapped",
        "the DMA reports an L1 range error before a misalignment",
        "hw/dma.py",
        "        with m.Elif(misaligned):\n            m.d.comb += code.eq(DmaError.MISALIGNED)\n"
        "        with m.Elif(l1_bad):\n            m.d.comb += code.eq(DmaError.L1_RANGE)\n",
        "        with m.Elif(l1_bad):\n            m.d.comb += code.eq(DmaError.L1_RANGE)\n"
        "        with m.Elif(misaligned):\n            m.d.comb += code.eq(DmaError.MISALIGNED)\n",
        _dma("32b-4KiB"),
    ),
    Mutant(
        "dma-obi-req-dropped",
        "an L1 lane drops its request before the grant",
        "hw/dma.py",
        "port.req.eq(rq.r_stream.valid),",
        "port.req.eq(rq.r_stream.valid & ~inflight[0]),",
        _dma("64b-16KiB", "32b-4KiB"),
    ),
    Mutant(
        "dma-l2-valid-dropped",
        "the L2 request's valid drops before ready",
        "hw/dma.py",
        "self.l2_req.valid.eq(l2_fifo.r_stream.valid),",
        "self.l2_req.valid.eq(l2_fifo.r_stream.valid & ~l2_fifo.w_stream.valid),",
        _dma("64b-16KiB", "32b-4KiB"),
    ),
    Mutant(
        "dma-l2-read-be-all-ones",
        "L2 reads enable every byte of the beat",
        "hw/dma.py",
        "l2_push.be.eq(Cat(*[rd_mask[j].replicate(4) for j in range(N)])),",
        "l2_push.be.eq(-1),",
        _dma("64b-16KiB"),
    ),
    Mutant(
        "dma-clear-skips-drain",
        "a clear goes idle without draining the buses",
        "hw/dma.py",
        '                m.next = "DRAIN"\n',
        '                m.next = "IDLE"\n',
        _dma("64b-16KiB", "32b-4KiB"),
    ),
    # -- register block -----------------------------------------------------------
    Mutant(
        "w1c-clear-beats-event",
        "a W1C clear wins over an event in the same cycle",
        "hw/regblock.py",
        "m.d.sync += flag.eq((flag & ~cleared) | self._resolve(f.hw, internal))",
        "m.d.sync += flag.eq((flag | self._resolve(f.hw, internal)) & ~cleared)",
        _REGBLOCK,
    ),
    Mutant(
        "rw-ignores-byte-enables",
        "a RW field takes every byte of a write",
        "hw/regblock.py",
        "m.d.sync += store.eq((store & ~wm) | (wd & wm))",
        "m.d.sync += store.eq(wd)",
        _REGBLOCK,
    ),
    Mutant(
        "w1p-ignores-byte-enables",
        "a W1P pulse fires for bytes the write did not enable",
        "hw/regblock.py",
        "m.d.sync += pulse.eq(Mux(written, wd & wm, 0))",
        "m.d.sync += pulse.eq(Mux(written, wd, 0))",
        _REGBLOCK,
    ),
    Mutant(
        "write-hold-dropped",
        "a write to a staging register is granted while its push is pending",
        "hw/regblock.py",
        "m.d.comb += bus.gnt.eq(~(bus.we & stall))",
        "m.d.comb += bus.gnt.eq(1)",
        _REGBLOCK,
    ),
    Mutant(
        "clear-keeps-pending-push",
        "CLEAR does not drop a pending engine push",
        "hw/regblock.py",
        "        with m.If(eng.clear):\n            m.d.sync += e_pending.eq(0)\n",
        "        with m.If(Const(0)):\n            m.d.sync += e_pending.eq(0)\n",
        _REGBLOCK,
    ),
    Mutant(
        "push-during-drain",
        "a push is offered while the engine drains a clear",
        "hw/regblock.py",
        "eng.jobs.valid.eq(e_offer & ~eng.clear & ~e_clear_wait),",
        "eng.jobs.valid.eq(e_offer & ~eng.clear),",
        _REGBLOCK,
    ),
    Mutant(
        "pending-push-lost",
        "an engine push against a full queue is dropped instead of held",
        "hw/regblock.py",
        "        with m.Elif(internal[Internal.ENGINE_PUSH]):\n"
        "            m.d.sync += e_pending.eq(1)\n",
        "        with m.Elif(internal[Internal.ENGINE_PUSH]):\n"
        "            m.d.sync += e_pending.eq(0)\n",
        _REGBLOCK,
    ),
    Mutant(
        "engine-error-event-missed",
        "a job that ends with an error raises no error event",
        "hw/regblock.py",
        "internal[Internal.ENGINE_ERROR].eq(eng.done & (eng.status.error != 0)),",
        "internal[Internal.ENGINE_ERROR].eq(0),",
        _REGBLOCK,
    ),
    Mutant(
        "irq-ignores-enable",
        "irq follows a status bit whose enable is off",
        "hw/regblock.py",
        'storage[("EVENTS", "IRQ_STATUS", f.name)] & storage[("EVENTS", "IRQ_ENABLE", f.name)]',
        'storage[("EVENTS", "IRQ_STATUS", f.name)]',
        _REGBLOCK,
    ),
    Mutant(
        "jobs-done-counter-stuck",
        "the jobs-done counter never counts",
        "hw/regblock.py",
        "internal[Internal.JOBS_DONE].eq(internal[Internal.JOBS_DONE] + eng.done)",
        "internal[Internal.JOBS_DONE].eq(internal[Internal.JOBS_DONE])",
        _REGBLOCK,
    ),
    Mutant(
        "bus-error-missed",
        "an unmapped access raises no bus error",
        "hw/regblock.py",
        "m.d.comb += internal[Internal.BUS_ERROR].eq(accept & ~any_hit)",
        "m.d.comb += internal[Internal.BUS_ERROR].eq(0)",
        _REGBLOCK,
    ),
    Mutant(
        "rdata-on-writes",
        "a write response carries read data",
        "hw/regblock.py",
        "bus.rdata.eq(Mux(rd, read_value, 0)),",
        "bus.rdata.eq(read_value),",
        _REGBLOCK,
    ),
    Mutant(
        "macs-latch-always",
        "the MACS high word follows the counter instead of latching",
        "hw/regblock.py",
        "with m.If(internal[Internal.MACS_LATCH]):",
        "with m.If(1):",
        _REGBLOCK,
    ),
)


def _package_dirs(checkout: Path) -> dict[str, str]:
    """``package -> source folder`` from pyproject's ``[tool.setuptools.package-dir]``."""
    meta = tomllib.loads((checkout / "pyproject.toml").read_text())
    return dict(meta["tool"]["setuptools"]["package-dir"])


def scratch_tree(checkout: Path, dest: Path) -> Path:
    """Copy the package sources of ``checkout`` into ``dest``, laid out as installed.

    ``dest`` on ``PYTHONPATH`` then imports ``tinyattn`` (and every subpackage) from
    the copy. Returns ``dest``.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dirs = _package_dirs(checkout)
    # Parents before children: a child folder is copied into its parent's copy.
    for package in sorted(dirs, key=lambda p: p.count(".")):
        target = dest.joinpath(*package.split("."))
        source = checkout / dirs[package]
        if target.exists():
            # A child package laid out inside its parent's folder is already there.
            continue
        shutil.copytree(source, target, ignore=ignore)
    return dest


def _module_of(mutant: Mutant, checkout: Path) -> str:
    """The dotted module name of ``mutant.path`` (a checkout-relative source file)."""
    rel = Path(mutant.path)
    for package, folder in _package_dirs(checkout).items():
        if rel.parent == Path(folder):
            return f"{package}.{rel.stem}"
    raise MutantError(f"mutant {mutant.name}: {mutant.path} is not in a package folder")


def apply_mutant(mutant: Mutant, tree: Path, checkout: Path) -> None:
    """Write ``mutant`` into the scratch ``tree`` (``mutant.path`` is checkout-relative)."""
    target = tree.joinpath(*_module_of(mutant, checkout).split(".")).with_suffix(".py")
    text = target.read_text()
    count = text.count(mutant.original)
    if count != 1:
        raise MutantError(
            f"mutant {mutant.name}: its snippet occurs {count} times in {mutant.path} "
            f"(want exactly 1): update the snippet in tinyattn/sim/mutants.py\n"
            f"  snippet: {mutant.original!r}"
        )
    target.write_text(text.replace(mutant.original, mutant.mutated))


@dataclass(frozen=True)
class MutantResult:
    """Outcome of one mutant: ``killed``, ``survived``, ``stillborn`` or ``error``."""

    mutant: Mutant
    outcome: str
    case: str  # the pytest case that failed, or "" when none did
    message: str  # the bench's first failure line, or why the run went wrong
    seconds: float


# The bench's own complaint inside a failure report: an assertion other than the
# launcher's summary ("failed: <tests> (seed N); log: ...").
_COMPLAINT = re.compile(r"(?:AssertionError|Exception|Error):[ \t]*(?!failed: )(?=\S|\n)")


def _failure(junit: Path) -> tuple[str, str] | None:
    """``(kind, text)`` of the first failed case in a JUnit report, or None if all passed.

    ``kind`` is ``"failure"`` for a failed check and ``"error"`` for a crash outside it.
    """
    if not junit.exists():
        return ("error", "pytest wrote no report")
    for case in ET.parse(junit).getroot().iter("testcase"):
        for child in case:
            if child.tag in ("failure", "error"):
                return (child.tag, (child.get("message") or "") + "\n" + (child.text or ""))
    return None


_LOG_LINE = re.compile(r"\d[\d.]*\s*ns\s")


_SIM_LOG = re.compile(r"log: (\S+sim\.log)")


def _complaint(text: str) -> str:
    """The bench's message: up to three lines after the first exception name, as one.

    When the launcher's report only names the failed tests and the simulator's log,
    the message comes from that log.
    """
    log = _SIM_LOG.search(text)
    if log and Path(log.group(1)).is_file():
        logged = Path(log.group(1)).read_text(errors="replace")
        if _COMPLAINT.search(logged):
            text = logged
    found = _COMPLAINT.search(text)
    rest = text[found.end() :] if found else text
    lines = []
    for line in (raw.lstrip("E").strip() for raw in rest.splitlines()):
        if _LOG_LINE.match(line) or len(lines) == 3:
            break  # the simulator's log follows the message
        if line:
            lines.append(line)
    words = " / ".join(lines) or "?"
    return " ".join(words.split())[:160]


def run_mutant(
    mutant: Mutant, checkout: Path, build_root: Path, *, timeout: float = 900.0
) -> MutantResult:
    """Apply ``mutant`` in a scratch tree and run its cases until one fails."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as scratch:
        tree = scratch_tree(checkout, Path(scratch) / "src")
        apply_mutant(mutant, tree, checkout)
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "TINYATTN_BUILD_DIR": str(build_root),
            "SIM": "all",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.pop("PYTEST_ADDOPTS", None)
        # Syntax and elaboration errors are the mutant's fault, not a bench's kill.
        module = _module_of(mutant, checkout)
        check = subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            last = (check.stderr.strip().splitlines() or ["?"])[-1]
            return MutantResult(mutant, "stillborn", "", last, time.monotonic() - start)
        for case in mutant.cases:
            junit = Path(scratch) / "report.xml"
            junit.unlink(missing_ok=True)
            command = [sys.executable, "-m", "pytest", str(checkout / case), "-q", "-x"]
            command += ["-p", "no:cacheprovider", "-p", "no:xdist", f"--junit-xml={junit}"]
            try:
                subprocess.run(
                    command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                seconds = time.monotonic() - start
                return MutantResult(mutant, "killed", case, f"no end in {timeout:.0f} s", seconds)
            failure = _failure(junit)
            if failure is None:
                continue
            kind, text = failure
            # The launcher asserts the bench's result: an AssertionError is a kill;
            # anything else (an elaboration error of the mutated design) is not.
            killed = kind == "failure" and text.startswith("AssertionError")
            outcome = "killed" if killed else "stillborn"
            return MutantResult(mutant, outcome, case, _complaint(text), time.monotonic() - start)
    return MutantResult(mutant, "survived", "", "every case passed", time.monotonic() - start)


def run_mutants(
    mutants: Iterable[Mutant],
    checkout: Path,
    build_root: Path,
    *,
    jobs: int = 1,
    on_result: Callable[[MutantResult], None] | None = None,
) -> list[MutantResult]:
    """Run ``mutants`` (``jobs`` at a time); results in catalogue order."""
    todo = list(mutants)

    def one(mutant: Mutant) -> MutantResult:
        result = run_mutant(mutant, checkout, build_root)
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, todo))


def format_table(results: Sequence[MutantResult]) -> str:
    """A Markdown table: mutant, file, outcome, the case that killed it, its message."""
    lines = [
        "| mutant | what it breaks | file | outcome | killed by | first failure |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        case = r.case.split("::", 1)[-1] if r.case else ""
        message = r.message.replace("|", "\\|")
        lines.append(
            f"| `{r.mutant.name}` | {r.mutant.description} | `{r.mutant.path}` | {r.outcome} "
            f"| `{case}` | {message} |"
        )
    return "\n".join(lines)
