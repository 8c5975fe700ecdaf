"""The ``tinyattn`` command line.

Exit status (:data:`EXIT_STATUS`): 0 on success, 1 when a check fails (a simulation
mismatch, a lint warning, firmware that exits non-zero), 2 for bad input or usage (an
invalid configuration, an unknown top, a bad number, a missing input file, an output path
that cannot be written), always as one line on stderr, ``tinyattn <command>: error: ...``,
that names what is wrong and how to fix it. Every input is checked before anything is
simulated or written. A closed stdout pipe (``tinyattn config | head -1``) ends the
command quietly with status 141, as a program stopped by SIGPIPE has in the shell.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import tinyattn
from tinyattn.config import ClusterConfig, ConfigError
from tinyattn.sim.benchmarks import BENCHMARKS  # names only: runners load when run

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
#: A closed stdout pipe: 128 + SIGPIPE, what the shell reports for ``yes | head -1``.
EXIT_PIPE = 141

EXIT_STATUS = (
    "exit status: 0 ok; 1 a check failed (a simulation mismatch, a lint warning, firmware "
    "exiting non-zero); 2 bad input or usage, with one line on stderr naming it; 141 stdout "
    "was a closed pipe (e.g. `| head`)."
)

#: Seeds: what NumPy and the simulators take (unsigned 32 bits).
MAX_SEED = 2**32 - 1
#: The L2 model's latency bound for ``run-firmware --l2-latency``, in cycles.
MAX_L2_LATENCY = 4096


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to ``--help``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As argparse, but an unknown option is blamed on the command it was given to."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            parser: argparse.ArgumentParser = self
            for action in self._actions:
                if isinstance(action, argparse._SubParsersAction):
                    parser = action.choices.get(getattr(ns, action.dest, None), self)
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns


class _CommandParser(OneLineParser):
    """A command's parser: its help ends with the exit status too."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("epilog", EXIT_STATUS)
        super().__init__(**kwargs)  # type: ignore[arg-type]


# -- argument types: each refuses a bad value before anything runs ----------------------------


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``lo..hi`` (no upper bound when ``hi`` is None)."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < lo or (hi is not None and value > hi):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{value} is out of range; use {span}")
        return value

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


positive_int = int_in(1)
seed_int = int_in(0, MAX_SEED)


def probability(text: str) -> float:
    """argparse type: a probability in ``[0, 1)`` (1 would stall forever)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is out of range; use 0 <= p < 1")
    return value


# -- inputs and outputs ----------------------------------------------------------------------


def _load_config(path: str | None, top: str | None = None) -> ClusterConfig:
    """The configuration in ``path`` (the default one when None), checked to build
    ``top`` when given (:meth:`ClusterConfig.check_for`)."""
    cfg = ClusterConfig.load(path) if path else ClusterConfig()
    if top is not None:
        cfg.check_for(top)
    return cfg


def _check_top(cfg: ClusterConfig, top: str) -> None:
    """The top exists and ``cfg`` builds it (:meth:`ClusterConfig.check_for`)."""
    from tinyattn.hw.tops import TOPS

    if top not in TOPS:
        raise UsageError(f"unknown top {top!r}; known tops: {', '.join(TOPS)}")
    cfg.check_for(top)


def _input_file(path: str, what: str) -> Path:
    """An existing, readable file ``path``; ``what`` names it (``--l2 FILE``)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what}: no such file")
    if p.is_dir():
        raise UsageError(f"{what}: is a folder, not a file")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{what}: cannot be read (permission denied)")
    return p


def check_output(path: str | Path, flag: str, *, folder: bool = False) -> Path:
    """Refuse an output path that cannot be written, before anything runs or is written.

    A missing folder on the way is fine: it is created at the write (like ``mkdir -p``).
    An existing file where a folder is wanted (or the reverse), a file on the way, or a
    place where no file can be made (probed with an unnamed temporary file, which leaves
    nothing behind) is a :class:`UsageError` naming ``flag``.
    """
    p = Path(path)
    where = f"{flag} {p}"
    try:
        if p.is_dir() and not folder:
            raise UsageError(f"{where}: is a folder; name a file")
        if p.exists() and not p.is_dir() and folder:
            raise UsageError(f"{where}: is a file; name a folder (created if missing)")
        base = p if p.is_dir() else p.parent
        while not base.exists() and base != base.parent:
            base = base.parent
        if not base.is_dir():
            raise UsageError(f"{where}: {base} is a file, so no folder can be made there")
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        raise UsageError(f"{where}: cannot write there: {exc.strerror or exc}") from None
    return p


def _ensure_folder(path: Path, flag: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create the folder: {exc.strerror}") from None


@contextlib.contextmanager
def _writing(flag: str, path: Path) -> Iterator[None]:
    """Writes to the output ``flag path``: an OSError inside is one line, a UsageError."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write: {exc.strerror}") from None


def _write(path: Path, data: str | bytes, flag: str) -> None:
    """Write ``data`` to ``path`` (parent folders created); an OSError is one line."""
    _ensure_folder(path.parent, flag)
    with _writing(flag, path):
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)


def _check_simulator(sim: str) -> None:
    """The simulator runs here; else one line saying why not (before any work)."""
    from tinyattn.sim.runner import simulator_missing

    missing = simulator_missing(sim)
    if missing:
        raise UsageError(f"--sim {sim}: {missing}")


def _check_rv32_gcc() -> None:
    """The firmware compiler is installed; else one line saying how to get it."""
    from tinyattn.sw.firmware import FirmwareError, rv32_gcc

    try:
        rv32_gcc()
    except FirmwareError as exc:
        raise UsageError(str(exc)) from None


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when inside it (as the README shows)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _tops_help() -> str:
    from tinyattn.hw.tops import TOPS

    return "; ".join(f"{name}: {top.description}" for name, top in TOPS.items())


def cmd_generate(args: argparse.Namespace) -> int:
    from tinyattn.hw.tops import verilog_module_name
    from tinyattn.sim.progress import building
    from tinyattn.sim.verilog import extra_verilog, generate_verilog

    cfg = _load_config(args.config)
    _check_top(cfg, args.top)
    out = check_output(args.out, "--out", folder=True)
    module = verilog_module_name(args.top)
    # Everything is made in memory first: a failure leaves no folder behind.
    with building(f"generating {args.top} ({cfg.stable_hash()})"):
        verilog = generate_verilog(args.top, cfg)
    files: list[tuple[Path, bytes | str, str]] = [
        (out / f"{module}.v", verilog, f"module {module}, config {cfg.stable_hash()}")
    ]
    for src in extra_verilog(args.top):
        note = f"instantiated by {module}; third-party, see its licence"
        files.append((out / src.name, src.read_bytes(), note))
    files.append((out / "config.json", cfg.to_json(), ""))
    for path, data, note in files:
        _write(path, data, "--out")
        print(f"wrote {path}" + (f" ({note})" if note else ""))
    _write_register_files(cfg, out)
    return EXIT_OK


def _write_register_files(cfg: ClusterConfig, out: Path) -> None:
    """The register map's C header, Markdown reference and SystemRDL, beside the Verilog."""
    from tinyattn.sw.regmap_emit import write_all

    with _writing("--out", out):
        written = write_all(cfg, out)
    for path in written:
        print(f"wrote {path}")


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    text = cfg.to_toml()
    if args.out:
        out = check_output(args.out, "--out")
        _write(out, text, "--out")
        print(f"wrote {out} (config {cfg.stable_hash()})")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_lint(args: argparse.Namespace) -> int:
    from tinyattn.hw.tops import TOPS, verilog_module_name
    from tinyattn.sim.tools import VENDOR_WAIVERS, VERILATOR_WAIVERS, verilator_lint
    from tinyattn.sim.verilog import verilog_sources

    cfg = _load_config(args.config)
    tops = [args.top] if args.top else list(TOPS)
    for top in tops:
        _check_top(cfg, top)
    _check_simulator("verilator")
    status = EXIT_OK
    for top in tops:
        files = verilog_sources(top, cfg)
        verdict = verilator_lint(files, verilog_module_name(top))
        command = f"verilator --lint-only -Wall {' '.join(map(str, files))}"
        kept = f" (kept verdict, same inputs: {verdict.path.name})" if verdict.kept else ""
        print(f"{'ok  ' if verdict.clean else 'FAIL'} {command}{kept}")
        if not verdict.clean:
            sys.stdout.write(verdict.stderr)
            status = EXIT_FAIL
    print(f"waived rules (sim/tools.py): {', '.join(VERILATOR_WAIVERS)}")
    for name, rules in VENDOR_WAIVERS.items():
        print(f"waived in {name} only: {', '.join(rules)}")
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    from tinyattn.sim.runner import failure_report, run_bench

    cfg = _load_config(args.config)
    e = cfg.engine
    if args.rows > e.max_dim:
        raise UsageError(
            f"--rows {args.rows}: more than engine.max_dim = {e.max_dim}, the largest M of a "
            f"job; use 1..{e.max_dim}"
        )
    _check_simulator(args.sim)
    k = 2 * e.vec_len
    print(
        f"tinyattn demo: compute core {e.n_pe} units x {e.vec_len} lanes "
        f"({e.macs_per_cycle} MAC/cycle), config {cfg.stable_hash()}"
    )
    print(
        f"GEMM tile Y[{args.rows}x{e.n_pe}] = ReLU(requant(X[{args.rows}x{k}] . W[{k}x{e.n_pe}]"
        f" + b)) on {args.sim}, seed {args.seed}"
    )
    print("generating Verilog and building the simulator (cached after the first run) ...")
    sys.stdout.flush()
    result = run_bench(
        "compute_core",
        cfg,
        "tinyattn.verif.benches.compute_core_bench",
        args.sim,
        testcase="gemm_tile",
        seed=args.seed,
        env={"TINYATTN_ROWS": str(args.rows)},
    )
    if not result.ok:
        print(failure_report(result, args.seed))
        return EXIT_FAIL
    m = result.metrics["gemm_tile"]
    print(f"bit-exact against the golden model: {m['checked']} outputs, 0 mismatches")
    print(
        f"cycles: {m['cycles']} (ideal {m['ideal_cycles']} at {e.macs_per_cycle} MAC/cycle, "
        f"{m['macs']} MACs) -> utilization {m['utilization']:.1%}"
    )
    print(f"run folder: {result.test_dir}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from tinyattn.sim.benchmarks import selected
    from tinyattn.sim.benchmarks.output import BenchmarkReport, write_json

    # Every benchmark runs the engine, and all but `engine` the whole cluster.
    cfg = _load_config(args.config, "cluster")
    json_out = check_output(args.json, "--json") if args.json else None
    _check_simulator(args.sim)
    report = BenchmarkReport(synthesize=not args.no_synth)
    try:
        for benchmark in selected(args.what):
            for runner in benchmark.runners():
                runner(cfg, args.sim, report)
        report.finish()
    except BaseException:
        report.abort()
        raise
    if json_out is not None:
        _ensure_folder(json_out.parent, "--json")
        with _writing("--json", json_out):
            write_json(json_out, report.records)
        print(f"wrote {json_out}")
    return EXIT_OK


def cmd_run_firmware(args: argparse.Namespace) -> int:
    from tinyattn.sim.cosim import FirmwareRunError, L2Timing, run_firmware
    from tinyattn.sw.firmware import FirmwareError

    cfg = _load_config(args.config, "cluster")
    program: object
    sources = [_input_file(p, p) for p in args.program]
    if len(sources) == 1 and sources[0].suffix not in (".c", ".S", ".s"):
        program = sources[0]  # an ELF
    else:
        program = sources
    l2_image = None
    if args.l2:
        path = _input_file(args.l2, f"--l2 {args.l2}")
        try:
            l2_image = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"--l2 {path}: cannot be read: {exc.strerror}") from None
    l2_out = check_output(args.l2_out, "--l2-out") if args.l2_out else None
    _check_simulator(args.sim)
    if isinstance(program, list):  # sources to build
        _check_rv32_gcc()
    print(
        f"running {' '.join(args.program)} on control core 0 of the cluster "
        f"(config {cfg.stable_hash()}) under {args.sim} ..."
    )
    sys.stdout.flush()
    timing = L2Timing(args.l2_stall, args.l2_stall, args.l2_latency)
    try:
        run = run_firmware(
            cfg,
            program,
            l2_image,
            args.sim,
            max_cycles=args.max_cycles,
            l2=timing,
            seed=args.seed,
            waves=args.waves or None,
        )
    except FirmwareRunError as exc:
        sys.stdout.write(exc.run.console)
        print(f"tinyattn run-firmware: {exc}", file=sys.stderr)
        print(f"run folder: {exc.run.run_dir}")
        return EXIT_FAIL
    except FirmwareError as exc:  # the program does not build, or is not an rv32 ELF
        raise UsageError(str(exc)) from None
    except RuntimeError as exc:  # the simulation itself failed: its report
        print(str(exc))
        print(f"tinyattn run-firmware: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAIL
    sys.stdout.write(run.console)
    if run.console and not run.console.endswith("\n"):
        print()
    print(
        f"exit code {run.exit_code} after {run.cycles} cycles "
        f"({run.cycles_per_second:.0f} cycles/s)"
    )
    if run.counters:
        c = run.counters
        print(
            f"engine: {c['engine_jobs_done']} jobs, {run.macs} MACs, "
            f"busy {c['engine_busy_cycles']}, stalled {c['engine_stall_cycles']}; "
            f"DMA: {c['dma_done_count']} transfers"
        )
    if l2_out is not None and run.l2 is not None:
        _write(l2_out, run.l2.tobytes(), "--l2-out")
        print(f"wrote {l2_out}")
    print(f"run folder: {run.run_dir}")
    return EXIT_OK if run.exit_code == 0 else EXIT_FAIL


#: The clock at which inferences/s are stated (the reference system's class of clock).
REPORT_CLOCK_HZ = 500e6


#: What the model side raises for bad user input (a checkpoint, its config, a model that
#: cannot be quantized, lowered, planned or streamed): module -> classes. Each is one line,
#: exit 2; other exceptions are bugs and keep their traceback.
MODEL_ERRORS = {
    "tinyattn.sw.mobilebert": ("CheckpointError", "ConfigError"),
    "tinyattn.sw.quantize": ("QuantizationError",),
    "tinyattn.sw.lowering": ("LoweringError",),
    "tinyattn.sw.memplan": ("PlanError",),
    "tinyattn.sw.stream": ("StreamError",),
    "tinyattn.sw.command_list": ("CommandListError",),
}


def _model_errors() -> tuple[type[BaseException], ...]:
    """The :data:`MODEL_ERRORS` classes of the modules loaded so far (none is imported
    here: an error can only come from a module that was)."""
    return tuple(
        getattr(sys.modules[module], name)
        for module, names in MODEL_ERRORS.items()
        if module in sys.modules
        for name in names
    )


def _check_model_args(args: argparse.Namespace) -> None:
    """MODEL, --layers and --seq against the model's geometry (its config.json only), before
    anything is loaded, quantized or written."""
    from tinyattn.sw.mobilebert import MobileBertConfig

    if args.model == "synthetic":
        geometry, what = MobileBertConfig.mobilebert_uncased(), "MobileBERT"
    else:
        folder = Path(args.model)
        if not folder.is_dir():
            raise UsageError(
                f"{args.model}: no such checkpoint folder (give a folder with config.json and "
                "model.safetensors, or the word 'synthetic')"
            )
        geometry = MobileBertConfig.from_json(folder / "config.json")
        what = f"the checkpoint {args.model}"
    n = geometry.num_hidden_layers
    if args.layers is not None and args.layers > n:
        raise UsageError(f"--layers {args.layers}: {what} has {n} layers; use 1..{n}")
    positions = geometry.max_position_embeddings
    if args.seq > positions:
        raise UsageError(
            f"--seq {args.seq}: the model has {positions} positions; use 1..{positions}"
        )


def _prepare(args: argparse.Namespace, cfg: ClusterConfig) -> object:
    from tinyattn.sw.deploy_flow import prepare

    return prepare(
        args.model, layers=args.layers, seq_len=args.seq, seed=args.seed, group=cfg.engine.n_pe
    )


def cmd_deploy(args: argparse.Namespace) -> int:
    from tinyattn.sw.deploy_flow import write_deployment
    from tinyattn.sw.firmware import FirmwareError

    cfg = _load_config(args.config, "cluster")
    _check_model_args(args)
    out = check_output(args.out, "--out", folder=True)
    _check_rv32_gcc()
    prepared = _prepare(args, cfg)
    try:
        with _writing("--out", out):
            dep = write_deployment(prepared, cfg, out)  # type: ignore[arg-type]
    except FirmwareError as exc:  # no rv32 gcc, or the runtime does not fit
        raise UsageError(str(exc).splitlines()[0]) from None
    s = dep.schedule
    print(
        f"deployed {args.model} ({prepared.qmodel.config.num_hidden_layers} layers, "  # type: ignore[attr-defined]
        f"S = {args.seq}) for config {cfg.stable_hash()}: {len(s.records)} records, "
        f"{s.program.macs.total:,} MACs, predicted {s.total.total:,} cycles "
        f"({s.utilization():.1%} of {cfg.engine.macs_per_cycle} MAC/cycle)"
    )
    for path in (dep.firmware.elf, dep.l2_image, dep.plan):
        print(f"wrote {path}")
    return EXIT_OK


#: Cycles per sample of the measured activity timeline in ``tinyattn run``'s PNG.
ACTIVITY_BIN = 128


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from tinyattn.sim.model_run import layers_bar, run_schedule
    from tinyattn.sim.verilog import build_root
    from tinyattn.sw.schedule import deploy

    cfg = _load_config(args.config, "cluster_l2")
    _check_model_args(args)
    default_png = build_root() / f"run-{Path(args.model).name}-S{args.seq}.png"
    png = check_output(args.png or default_png, "--png")
    _check_simulator(args.sim)
    _check_rv32_gcc()
    prepared = _prepare(args, cfg)
    q = prepared.qmodel  # type: ignore[attr-defined]
    schedule = deploy(q, cfg, args.seq)
    print(
        f"tinyattn run: {args.model}, {q.config.num_hidden_layers} layers, S = {args.seq}, "
        f"config {cfg.stable_hash()}, {len(schedule.records)} records, on {args.sim}"
    )
    sys.stdout.flush()
    with layers_bar(schedule) as progress:
        run = run_schedule(
            schedule, prepared.input_ids, prepared.token_type_ids, args.sim,  # type: ignore[attr-defined]
            progress=progress, activity_bin=ACTIVITY_BIN,
        )  # fmt: skip
    want = q.forward(prepared.input_ids, prepared.token_type_ids)  # type: ignore[attr-defined]
    mismatches = [
        f"{name}: {int(np.count_nonzero(got != w))} of {w.size} values differ"
        for name, got, (w, _) in zip(q.state_names, run.states, want, strict=True)
        if got.shape != w.shape or np.any(got != w)
    ]
    print(f"{'operation':<32} {'measured':>10} {'predicted':>10} {'error':>7}")
    for kind, (got, pred) in run.by_kind().items():
        print(f"{kind:<32} {got:>10,} {pred:>10,} {(got - pred) / pred:>+7.1%}")
    print(
        f"{'total':<32} {run.cycles:>10,} {run.predicted:>10,} "
        f"{(run.cycles - run.predicted) / run.predicted:>+7.1%}"
    )
    print(
        f"end to end: {run.cycles:,} cycles, {run.utilization:.1%} of "
        f"{cfg.engine.macs_per_cycle} MAC/cycle, {REPORT_CLOCK_HZ / run.cycles:.1f} inferences/s "
        f"at {REPORT_CLOCK_HZ / 1e6:.0f} MHz; firmware {run.code_bytes} bytes"
    )
    from tinyattn.sim.run_report import plot_run

    title = f"{args.model}, {q.config.num_hidden_layers} layers, S = {args.seq}"
    with _writing("--png", png):
        plot_run(run, png, title)
    print(f"wrote {_shown(png)}")
    if mismatches:
        print("NOT bit-exact against QuantizedMobileBert.forward: " + "; ".join(mismatches))
        return EXIT_FAIL
    print(f"bit-exact: all {len(want)} hidden states equal QuantizedMobileBert.forward")
    return EXIT_OK


def cmd_quantize_report(argv: list[str]) -> int:
    from tinyattn.sw.report import main as report_main

    return report_main(argv)


def cmd_sweep(args: argparse.Namespace) -> int:
    from tinyattn.sim import sweep

    try:
        spec = sweep.load_spec(_input_file(args.spec, f"SPEC {args.spec}"))
        if args.serial and (args.scheduler or args.workers):
            raise UsageError("--serial runs without Dask; drop --scheduler and --workers")
        if args.scheduler and args.workers:
            raise UsageError(
                "--workers sizes the LocalCluster; an existing --scheduler has its own"
            )
        out = check_output(args.out, "--out", folder=True)
        return sweep.command(
            spec, out, serial=args.serial, scheduler=args.scheduler, workers=args.workers
        )
    except sweep.SweepSpecError as exc:
        raise UsageError(str(exc)) from None


def _size(n: int) -> str:
    """``n`` bytes as ``"5.1 KB"`` (decimal units, as ``du --si``)."""
    if n < 1000:
        return f"{n} bytes"
    value = n / 1000
    for unit in ("KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{value:.1f} {unit}"


def cmd_mutants(args: argparse.Namespace) -> int:
    from tinyattn.cache import build_root, source_checkout
    from tinyattn.sim import mutants

    names = [m.name for m in mutants.MUTANTS]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        raise UsageError(
            f"no mutant named {', '.join(unknown)}; `tinyattn mutants --list` names them"
        )
    chosen = [m for m in mutants.MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {m.path:22} {m.description}")
        return EXIT_OK
    checkout = source_checkout()
    if checkout is None:
        raise UsageError(
            "mutants run the checkout's tests: run tinyattn from its source checkout "
            "(pip install -e .)"
        )
    markdown = check_output(args.markdown, "--markdown") if args.markdown else None
    print(f"{len(chosen)} mutants, {args.jobs} at a time; builds in {build_root() / 'mutants'}")

    def report(r: mutants.MutantResult) -> None:
        print(
            f"  {r.mutant.name:32} {r.outcome:9} {r.seconds:5.0f} s  {r.message[:70]}", flush=True
        )

    results = mutants.run_mutants(
        chosen, checkout, build_root() / "mutants", jobs=args.jobs, on_result=report
    )
    table = mutants.format_table(results)
    print(table)
    if markdown is not None:
        markdown.write_text(table + "\n")
    alive = [r.mutant.name for r in results if r.outcome != "killed"]
    if alive:
        print(f"NOT KILLED: {', '.join(alive)}", file=sys.stderr)
        return EXIT_FAIL
    print(f"all {len(results)} mutants killed")
    return EXIT_OK


#: Entries ``tinyattn cache info`` lists one by one (the largest).
CACHE_INFO_ENTRIES = 10


def cmd_cache(args: argparse.Namespace) -> int:
    from tinyattn.cache import build_location, cache_entries, tree_bytes

    root, why = build_location()
    ours, others = cache_entries(root)
    if args.action == "info":
        move = "" if why == "TINYATTN_BUILD_DIR" else "; set TINYATTN_BUILD_DIR to move it"
        print(f"location: {root} (from {why}{move})")
        sizes = {entry: tree_bytes(entry) for entry in ours}
        print(f"size: {_size(sum(sizes.values()))} in {len(ours)} entries")
        largest = sorted(ours, key=lambda e: (-sizes[e], e.name))
        for entry in largest[:CACHE_INFO_ENTRIES]:
            print(f"  {_size(sizes[entry]):>10}  {entry.name}")
        rest = largest[CACHE_INFO_ENTRIES:]
        if rest:
            print(f"  {_size(sum(sizes[e] for e in rest)):>10}  ... {len(rest)} smaller entries")
        if others:
            print(f"not tinyattn's (left alone by clear): {', '.join(e.name for e in others)}")
        return EXIT_OK
    freed = 0
    for entry in ours:
        freed += tree_bytes(entry)
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            raise UsageError(f"cannot remove {entry}: {exc.strerror}") from None
    print(f"removed {len(ours)} entries ({_size(freed)}) from {root}")
    if others:
        print(f"left alone, not tinyattn's: {', '.join(e.name for e in others)}")
    return EXIT_OK


#: The simulators a command can run on (``--sim``).
SIMULATORS = ("verilator", "icarus")


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="cluster configuration (TOML); default: the reference configuration",
    )


def _sim_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sim", default="verilator", choices=SIMULATORS, help="simulator (default: %(default)s)"
    )


def _seed_arg(p: argparse.ArgumentParser, default: int, what: str = "random seed") -> None:
    p.add_argument(
        "--seed",
        type=seed_int,
        default=default,
        help=f"{what}, 0..{MAX_SEED} (default: {default})",
    )


def _out_folder_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help=help)


def _model_args(p: argparse.ArgumentParser) -> None:
    """MODEL and its options, shared by ``deploy`` and ``run``."""
    p.add_argument("model", metavar="MODEL", help="HF checkpoint folder, or 'synthetic'")
    p.add_argument(
        "--layers", type=positive_int, help="keep only the first N layers, 1..the model's"
    )
    p.add_argument(
        "--seq",
        type=positive_int,
        default=128,
        help="sequence length, 1..the model's positions (default: 128)",
    )
    _seed_arg(p, 0, "ids and synthetic weights")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="tinyattn",
        description=(
            "Generator for a tinyML transformer cluster: an integer attention engine, "
            "a shared-memory cluster, a bit-exact golden model and cocotb benches."
        ),
        epilog=EXIT_STATUS,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {tinyattn.__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser
    )

    def command(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help: str,
        description: str,
        *,
        config: bool = True,
    ) -> argparse.ArgumentParser:
        """The parser of command ``name``, run by ``func``; with ``--config`` unless told."""
        p = sub.add_parser(name, help=help, description=description)
        if config:
            _config_arg(p)
        p.set_defaults(func=func)
        return p

    p = command(
        "generate",
        cmd_generate,
        "write the Verilog of a top and its resolved configuration",
        "Write <out>/tinyattn_<top>.v, <out>/config.json (the resolved "
        "configuration) and the register map files tinyattn_regs.h, registers.md and "
        "tinyattn.rdl. Output is byte-identical for equal inputs. Tops: " + _tops_help(),
    )
    p.add_argument(
        "--top", default="compute_core", help="design to generate (default: %(default)s)"
    )
    _out_folder_arg(
        p, "output folder (created, with missing parents, if needed; an existing file is refused)"
    )

    p = command(
        "config",
        cmd_config,
        "print or write the resolved configuration as TOML",
        "Print the configuration (the default one, or FILE after validation) as "
        "TOML; a starting point for your own.",
    )
    p.add_argument(
        "--out", metavar="FILE", help="write to FILE instead of stdout (missing folders are made)"
    )

    p = command(
        "lint",
        cmd_lint,
        "run verilator --lint-only -Wall on generated Verilog",
        "Generate each top (or --top) and lint it with Verilator, -Wall, with the "
        "reviewed waivers of sim/tools.py. Exit 1 on any warning.",
    )
    p.add_argument("--top", help="one top only (default: all)")

    p = command(
        "demo",
        cmd_demo,
        "run a random GEMM tile through the compute core RTL and check it",
        "Generate the compute core, run a random GEMM tile through it in a "
        "simulator (two K chunks accumulated through the core's partial-sum input), compare "
        "bit for bit with the golden model and print the cycle count.",
    )
    _sim_arg(p)
    p.add_argument(
        "--rows",
        type=positive_int,
        default=64,
        help="rows M of the tile, 1..engine.max_dim (default: %(default)s)",
    )
    _seed_arg(p, 1)

    p = command(
        "bench",
        cmd_bench,
        "measure cycles against the ideal (engine, interconnect) under Verilator",
        "Run the benchmarks and print a table of cycles, ideal cycles and "
        "utilization (useful MACs / (cycles x peak)); --json writes the records. engine: GEMM "
        "128x512x128 and 128x128x512; attention S=128 and S=64 (H=4, head dim 32), S=128 with "
        "per-head requantization in one job, and S=128 at head dim 16; 8 queued GEMMs (first "
        "push to last done); each with an ideal memory and with 10% random grant stalls, each "
        "with its bound; plus cells per MAC from yosys "
        "synth (in the background; about an hour for the default engine, then cached). "
        "interconnect: throughput and waits per port, and the engine's GEMM inside the "
        "cluster with 0/25/50% background core traffic. firmware: C firmware on the "
        "control core running queued jobs with DMA in and out; submit cost, simulation "
        "speed and code size. model (not in all): the 2-layer MobileBERT fixture at S=128 on "
        "the RTL, bit-exact; measured cycles per op kind against the tiler's prediction, "
        "utilization and inferences/s at 500 MHz. mobilebert: the same for the synthetic "
        "24-layer MobileBERT (a few minutes of simulation).",
    )
    p.add_argument("what", choices=(*BENCHMARKS, "all"))
    p.add_argument("--json", metavar="OUT", help="write the records as JSON")
    _sim_arg(p)
    p.add_argument("--no-synth", action="store_true", help="skip the yosys area measurement")

    p = command(
        "run-firmware",
        cmd_run_firmware,
        "build C firmware and run it on the cluster's RISC-V core in the RTL",
        "Build PROGRAM (C/assembly sources with the SDK of sw/firmware, or an "
        "ELF) for rv32imc, load it into control core 0's private memory and simulate the "
        "cluster until the firmware writes HOST_EXIT. Prints the console, the exit code, "
        "the cycles and the engine/DMA counters. Exit status: 0 when the firmware exits "
        "with 0, 1 when it exits otherwise, traps or times out, 2 for bad input.",
    )
    p.add_argument("program", nargs="+", metavar="PROGRAM", help="C/assembly sources or one ELF")
    _sim_arg(p)
    p.add_argument("--l2", metavar="FILE", help="bytes placed at L2 address 0 before the run")
    p.add_argument("--l2-out", metavar="FILE", help="write that L2 range after the run")
    p.add_argument(
        "--l2-latency",
        type=int_in(0, MAX_L2_LATENCY),
        default=0,
        help=f"extra L2 latency, each response 0..N cycles later, N in 0..{MAX_L2_LATENCY} "
        "(default: 0)",
    )
    p.add_argument(
        "--l2-stall",
        type=probability,
        default=0.0,
        help="probability, 0 <= p < 1, of L2 back-pressure and of a response gap in a cycle "
        "(default: 0)",
    )
    p.add_argument(
        "--max-cycles",
        type=positive_int,
        default=2_000_000,
        help="cycle limit, >= 1 (default: %(default)s)",
    )
    _seed_arg(p, 1)
    p.add_argument("--waves", action="store_true", help="write dump.fst in the run folder")

    p = command(
        "deploy",
        cmd_deploy,
        "quantize, lower, plan and tile MODEL; write firmware, L2 image and plan report",
        "Write OUT/firmware (the runtime's sources, tinyattn_regs.h, link.ld, "
        "the ELF, .bin and .hex), OUT/l2.bin (the schedule image with the input ids) and "
        "OUT/plan.txt (per operation: tiles, buffers, predicted cycles). Needs the rv32 gcc, "
        "no simulator. A model that cannot fit is refused with one line.",
    )
    _model_args(p)
    _out_folder_arg(p, "output folder")

    p = command(
        "run",
        cmd_run,
        "deploy MODEL and run it on the cluster RTL; bit-exact check and cycles",
        "Deploy MODEL, run the firmware on the cluster RTL, read every hidden "
        "state back from L2 and compare it with QuantizedMobileBert.forward; print measured "
        "against predicted cycles per operation, utilization and inferences/s at 500 MHz.",
    )
    _model_args(p)
    _sim_arg(p)
    p.add_argument(
        "--png",
        metavar="FILE",
        help="utilization per record and a timeline of layer 0 (default: "
        "run-<model>-S<seq>.png in the build folder, see `tinyattn cache info`)",
    )

    p = command(
        "mutants",
        cmd_mutants,
        "break the design on purpose (one mutant at a time) and check a bench fails",
        "Apply each mutant of the catalogue (tinyattn/sim/mutants.py) to a "
        "scratch copy of the sources and run its benches (Icarus, small configurations); "
        "prints which case killed each one. Fails when a mutant survives.",
        config=False,
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    p.add_argument("--list", action="store_true", help="list the mutants and stop")
    p.add_argument("--jobs", "-j", type=positive_int, default=2, help="mutants at a time")
    p.add_argument("--markdown", metavar="PATH", help="also write the table to PATH")

    p = command(
        "cache",
        cmd_cache,
        "show or clear the build cache (netlists, simulator builds, firmware)",
        "The build cache: the checkout's build/ when tinyattn runs from its "
        "source checkout (an editable install), else $XDG_CACHE_HOME/tinyattn (default "
        "~/.cache/tinyattn); $TINYATTN_BUILD_DIR overrides both. info: location, size and "
        "entries; clear: remove what tinyattn made there (anything else is left alone).",
        config=False,
    )
    p.add_argument("action", choices=("info", "clear"))

    p = command(
        "sweep",
        cmd_sweep,
        "sweep configurations on Dask: cycles, utilization, inferences/s, area per point",
        "Evaluate every point of SPEC (TOML: fields to vary, workload predict | "
        "engine | run, metrics; docs/sweep.md) as one Dask task each. Rows are appended to "
        "OUT/rows.jsonl as points finish, so a rerun resumes; then a table on stdout, "
        "OUT/results.csv and OUT/pareto.png (throughput against area). Exit 1 when a point "
        "failed; invalid points are rows with their reason.",
        config=False,
    )
    p.add_argument("spec", metavar="SPEC", help="the sweep spec (TOML)")
    _out_folder_arg(p, "results folder (resumed)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler")
    p.add_argument(
        "--workers", type=int_in(1, 1024), help="LocalCluster workers (default: one per core)"
    )
    p.add_argument("--serial", action="store_true", help="run here, without Dask")

    sub.add_parser(
        "quantize-report",
        help="quantize MobileBERT and report the integer model's error per layer",
        description="tinyattn quantize-report PATH_OR_SYNTHETIC [options]; see "
        "`tinyattn quantize-report --help`.",
        add_help=False,
    )
    return parser


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (captured output)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (:data:`EXIT_STATUS`).

    Usage errors from argparse (and ``--help``, ``--version``) raise ``SystemExit`` as
    usual; everything else returns.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "tinyattn"
    try:
        if argv and argv[0] == "quantize-report":
            status = cmd_quantize_report(argv[1:])
        else:
            try:
                args = build_parser().parse_args(argv)
            except SystemExit:  # --help, --version or a usage error: flush while we can
                sys.stdout.flush()
                raise
            prog = f"tinyattn {args.command}"
            status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_PIPE
    except (ConfigError, UsageError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _model_errors() as exc:  # evaluated only when something is raised
        print(f"{prog}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
