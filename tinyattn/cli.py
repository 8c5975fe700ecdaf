"""The ``tinyattn`` command line.

Exit status: 0 on success, 1 when a check fails (a simulation mismatch, a lint
warning), 2 for bad input (an invalid configuration, an unknown top, a
missing file), with one line on stderr that names what is wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tinyattn.config import ClusterConfig, ConfigError

if TYPE_CHECKING:  # the simulation stack loads only for the commands that need it
    from tinyattn.sim.benchmarks import Synthesis

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _load_config(path: str | None) -> ClusterConfig:
    return ClusterConfig.load(path) if path else ClusterConfig()


def _tops_help() -> str:
    from tinyattn.hw.tops import TOPS

    return "; ".join(f"{name}: {top.description}" for name, top in TOPS.items())


def cmd_generate(args: argparse.Namespace) -> int:
    from tinyattn.hw.tops import TOPS, verilog_module_name
    from tinyattn.sim.verilog import extra_verilog, generate_verilog

    cfg = _load_config(args.config)
    if args.top not in TOPS:
        raise UsageError(f"unknown top {args.top!r}; known tops: {', '.join(TOPS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    module = verilog_module_name(args.top)
    verilog_path = out / f"{module}.v"
    verilog_path.write_text(generate_verilog(args.top, cfg))
    config_path = out / "config.json"
    config_path.write_text(cfg.to_json())
    print(f"wrote {verilog_path} (module {module}, config {cfg.stable_hash()})")
    for src in extra_verilog(args.top):
        (out / src.name).write_bytes(src.read_bytes())
        print(f"wrote {out / src.name} (instantiated by {module}; third-party, see its licence)")
    print(f"wrote {config_path}")
    _write_register_files(cfg, out)
    return EXIT_OK


def _write_register_files(cfg: ClusterConfig, out: Path) -> None:
    """The register map's C header, Markdown reference and SystemRDL, beside the Verilog."""
    from tinyattn.sw.regmap_emit import write_all

    for path in write_all(cfg, out):
        print(f"wrote {path}")


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    text = cfg.to_toml()
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out} (config {cfg.stable_hash()})")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_lint(args: argparse.Namespace) -> int:
    from tinyattn.hw.tops import TOPS, verilog_module_name
    from tinyattn.sim.tools import VENDOR_WAIVERS, VERILATOR_WAIVERS, verilator_lint
    from tinyattn.sim.verilog import verilog_sources

    cfg = _load_config(args.config)
    tops = [args.top] if args.top else list(TOPS)
    status = EXIT_OK
    for top in tops:
        if top not in TOPS:
            raise UsageError(f"unknown top {top!r}; known tops: {', '.join(TOPS)}")
        files = verilog_sources(top, cfg)
        run = verilator_lint(files, verilog_module_name(top))
        ok = run.returncode == 0 and "%Warning" not in run.stderr
        print(f"{'ok  ' if ok else 'FAIL'} verilator --lint-only -Wall {' '.join(map(str, files))}")
        if not ok:
            sys.stdout.write(run.stderr)
            status = EXIT_FAIL
    print(f"waived rules (sim/tools.py): {', '.join(VERILATOR_WAIVERS)}")
    for name, rules in VENDOR_WAIVERS.items():
        print(f"waived in {name} only: {', '.join(rules)}")
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    from tinyattn.sim.runner import failure_report, run_bench

    cfg = _load_config(args.config)
    e = cfg.engine
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
    from tinyattn.sim import benchmarks

    cfg = _load_config(args.config)
    records: list[dict] = []
    synthesis = None
    try:
        if args.what in ("engine", "all"):
            e = cfg.engine
            print(
                f"engine benchmark: {e.n_pe} x {e.vec_len} = {e.macs_per_cycle} MAC/cycle, "
                f"tile_m {e.tile_m}, config {cfg.stable_hash()}, on {args.sim}"
            )
            sys.stdout.flush()
            bench_cfg = benchmarks.engine_bench_config(cfg)
            if bench_cfg != cfg:
                print(
                    f"L1 enlarged to {bench_cfg.memory.size_bytes // 1024} KiB for the "
                    "benchmark: the 128x512x128 GEMM's operands (146 KiB) must be L1-resident"
                )
            if not args.no_synth:
                # The area of the configuration asked for (the larger L1 is the
                # benchmark's memory, not part of the engine). yosys runs beside the
                # simulations; its result is collected at the end.
                try:
                    synthesis = benchmarks.Synthesis(cfg, "engine")
                except RuntimeError as exc:
                    print(f"area: not measured ({exc})")
            engine = benchmarks.run_engine_bench(bench_cfg, sim=args.sim)
            for r in engine:
                r["group"] = "engine"
            print(benchmarks.format_table(engine, ["stall_cycles", "bound"]))
            records += engine
        if args.what in ("interconnect", "all"):
            from tinyattn.sim.bench_cluster import run_cluster_bench
            from tinyattn.sim.bench_interconnect import run_interconnect_bench

            print(f"interconnect benchmark: config {cfg.stable_hash()}, on {args.sim}")
            sys.stdout.flush()
            icn = run_interconnect_bench(cfg, sim=args.sim)
            for r in icn:
                r["group"] = "interconnect"
            print(benchmarks.format_table(icn, ["mean_wait", "max_wait"]))
            records += icn

            print("engine GEMM in the cluster, with background traffic from the other cores")
            sys.stdout.flush()
            cluster = run_cluster_bench(cfg, sim=args.sim)
            for r in cluster:
                r["group"] = "cluster"
            print(benchmarks.format_table(cluster, ["background"]))
            records += cluster
        if args.what in ("firmware", "all"):
            from tinyattn.sim.bench_firmware import run_firmware_bench

            print(f"firmware on the control core: config {cfg.stable_hash()}, on {args.sim}")
            sys.stdout.flush()
            firmware = run_firmware_bench(cfg, sim=args.sim)
            for r in firmware:
                r["group"] = "firmware"
            print(
                benchmarks.format_table(
                    firmware, ["submit_cycles", "cycles_per_second", "code_bytes"]
                )
            )
            records += firmware
        if args.what == "model":
            from tinyattn.sim.calibrate import CLOCK_HZ, run_model_bench

            print(
                f"model: the 2-layer MobileBERT fixture at S=128, config {cfg.stable_hash()}, "
                f"on {args.sim}: measured (rdcycle per record) against the tiler's prediction"
            )
            sys.stdout.flush()
            model, comparison = run_model_bench(cfg, sim=args.sim)
            for r in model:
                r["group"] = "model"
            print(comparison.format())
            t = model[-1]
            print(
                f"end to end: {t['cycles']:,} cycles, {t['ideal_cycles']:,} ideal, utilization "
                f"{t['utilization']:.1%} of {cfg.engine.macs_per_cycle} MAC/cycle; "
                f"{t['inferences_per_s']:,.0f} inferences/s at {CLOCK_HZ / 1e6:.0f} MHz "
                f"(static prediction {t['predicted_static']:,} cycles)"
            )
            records += model
        if args.what in ("mobilebert", "all"):
            from tinyattn.sim.calibrate import CLOCK_HZ, run_mobilebert_bench

            print(
                f"mobilebert: the synthetic 24-layer mobilebert-uncased at S=128, config "
                f"{cfg.stable_hash()}, on {args.sim}: bit-exact, measured per op kind against "
                "the tiler's prediction"
            )
            sys.stdout.flush()
            bert, comparison = run_mobilebert_bench(cfg, sim=args.sim)
            for r in bert:
                r["group"] = "mobilebert"
            print(comparison.format())
            t = bert[-1]
            print(
                f"end to end: {t['cycles']:,} cycles, {t['ideal_cycles']:,} ideal, utilization "
                f"{t['utilization']:.1%} of {cfg.engine.macs_per_cycle} MAC/cycle; "
                f"{t['inferences_per_s']:,.1f} inferences/s at {CLOCK_HZ / 1e6:.0f} MHz "
                f"(reference system: {t['reference_inferences_per_s']} inferences/s); "
                f"simulated in {t['wall_s']:.0f} s"
            )
            records += bert
        if synthesis is not None:
            _report_area(synthesis, cfg, records)
    except BaseException:
        if synthesis is not None:
            synthesis.cancel()
        raise
    if args.json:
        benchmarks.write_json(args.json, records)
        print(f"wrote {args.json}")
    return EXIT_OK


def _report_area(synthesis: Synthesis, cfg: ClusterConfig, records: list[dict]) -> None:
    """Wait for the engine's synthesis, print its area and add it to the engine records."""
    print(f"waiting for yosys (log: {synthesis.log}) ...")
    sys.stdout.flush()
    try:
        area = synthesis.result()
    except RuntimeError as exc:
        print(f"area: not measured ({exc})")
        return
    print(
        f"area (yosys synth of the engine, config {cfg.stable_hash()}): "
        f"{area['cells']} cells, {area['cells_per_mac']} cells per MAC"
    )
    for r in records:
        if r["group"] == "engine":
            r["cells"], r["cells_per_mac"] = area["cells"], area["cells_per_mac"]


def cmd_run_firmware(args: argparse.Namespace) -> int:
    from tinyattn.sim.cosim import FirmwareRunError, L2Timing, run_firmware

    cfg = _load_config(args.config)
    program: object
    sources = [Path(p) for p in args.program]
    for path in sources:
        if not path.exists():
            raise UsageError(f"{path}: no such file")
    if len(sources) == 1 and sources[0].suffix not in (".c", ".S", ".s"):
        program = sources[0]  # an ELF
    else:
        program = sources
    l2_image = None
    if args.l2:
        path = Path(args.l2)
        if not path.exists():
            raise UsageError(f"--l2 {path}: no such file")
        l2_image = path.read_bytes()
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
    except (RuntimeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
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
    if args.l2_out and run.l2 is not None:
        Path(args.l2_out).write_bytes(run.l2.tobytes())
        print(f"wrote {args.l2_out}")
    print(f"run folder: {run.run_dir}")
    return EXIT_OK if run.exit_code == 0 else EXIT_FAIL


#: The clock at which inferences/s are stated (the reference system's class of clock).
REPORT_CLOCK_HZ = 500e6


def _prepare(args: argparse.Namespace) -> object:
    from tinyattn.sw.deploy_flow import prepare

    try:
        return prepare(args.model, layers=args.layers, seq_len=args.seq, seed=args.seed)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None


def cmd_deploy(args: argparse.Namespace) -> int:
    from tinyattn.sw.deploy_flow import write_deployment
    from tinyattn.sw.firmware import FirmwareError

    cfg = _load_config(args.config)
    prepared = _prepare(args)
    try:
        dep = write_deployment(prepared, cfg, Path(args.out))  # type: ignore[arg-type]
    except (ValueError, FirmwareError) as exc:  # LoweringError, PlanError: one line each
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
    from tinyattn.sw.schedule import deploy

    cfg = _load_config(args.config)
    prepared = _prepare(args)
    q = prepared.qmodel  # type: ignore[attr-defined]
    try:
        schedule = deploy(q, cfg, args.seq)
    except ValueError as exc:  # LoweringError, PlanError: one line each
        raise UsageError(str(exc).splitlines()[0]) from None
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

    png = Path(args.png or f"build/run-{Path(args.model).name}-S{args.seq}.png")
    plot_run(run, png, f"{args.model}, {q.config.num_hidden_layers} layers, S = {args.seq}")
    print(f"wrote {png}")
    if mismatches:
        print("NOT bit-exact against QuantizedMobileBert.forward: " + "; ".join(mismatches))
        return EXIT_FAIL
    print(f"bit-exact: all {len(want)} hidden states equal QuantizedMobileBert.forward")
    return EXIT_OK


def cmd_quantize_report(argv: list[str]) -> int:
    from tinyattn.sw.report import main as report_main

    return report_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinyattn",
        description=(
            "Generator for a tinyML transformer cluster: an integer attention engine, "
            "a shared-memory cluster, a bit-exact golden model and cocotb benches."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            metavar="FILE",
            help="cluster configuration (TOML); default: the reference configuration",
        )

    p = sub.add_parser(
        "generate",
        help="write the Verilog of a top and its resolved configuration",
        description="Write <out>/tinyattn_<top>.v, <out>/config.json (the resolved "
        "configuration) and the register map files tinyattn_regs.h, registers.md and "
        "tinyattn.rdl. Output is byte-identical for equal inputs. Tops: " + _tops_help(),
    )
    config_arg(p)
    p.add_argument(
        "--top", default="compute_core", help="design to generate (default: %(default)s)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "config",
        help="print or write the resolved configuration as TOML",
        description="Print the configuration (the default one, or FILE after validation) as "
        "TOML; a starting point for your own.",
    )
    config_arg(p)
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "lint",
        help="run verilator --lint-only -Wall on generated Verilog",
        description="Generate each top (or --top) and lint it with Verilator, -Wall, with the "
        "reviewed waivers of sim/tools.py. Exit 1 on any warning.",
    )
    config_arg(p)
    p.add_argument("--top", help="one top only (default: all)")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser(
        "demo",
        help="run a random GEMM tile through the compute core RTL and check it",
        description="Generate the compute core, run a random GEMM tile through it in a "
        "simulator (two K chunks accumulated through the core's partial-sum input), compare "
        "bit for bit with the golden model and print the cycle count.",
    )
    config_arg(p)
    p.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    p.add_argument("--rows", type=int, default=64, help="rows M of the tile (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "bench",
        help="measure cycles against the ideal (engine, interconnect) under Verilator",
        description="Run the benchmarks and print a table of cycles, ideal cycles and "
        "utilization (useful MACs / (cycles x peak)); --json writes the records. engine: GEMM "
        "128x512x128 and 128x128x512, attention S=128 and S=64 (H=4, head dim 32), each with "
        "an ideal memory and with 10% random grant stalls, plus cells per MAC from yosys "
        "synth (in the background; about an hour for the default engine, then cached). "
        "interconnect: throughput and waits per port, and the engine's GEMM inside the "
        "cluster with 0/25/50% background core traffic. firmware: C firmware on the "
        "control core running queued jobs with DMA in and out; submit cost, simulation "
        "speed and code size. model (not in all): the 2-layer MobileBERT fixture at S=128 on "
        "the RTL, bit-exact; measured cycles per op kind against the tiler's prediction, "
        "utilization and inferences/s at 500 MHz. mobilebert: the same for the synthetic "
        "24-layer MobileBERT (a few minutes of simulation).",
    )
    p.add_argument(
        "what", choices=("engine", "interconnect", "firmware", "model", "mobilebert", "all")
    )
    config_arg(p)
    p.add_argument("--json", metavar="OUT", help="write the records as JSON")
    p.add_argument(
        "--sim", default="verilator", choices=("verilator", "icarus"), help="default: verilator"
    )
    p.add_argument("--no-synth", action="store_true", help="skip the yosys area measurement")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "run-firmware",
        help="build C firmware and run it on the cluster's RISC-V core in the RTL",
        description="Build PROGRAM (C/assembly sources with the SDK of sw/firmware, or an "
        "ELF) for rv32imc, load it into control core 0's private memory and simulate the "
        "cluster until the firmware writes HOST_EXIT. Prints the console, the exit code, "
        "the cycles and the engine/DMA counters. Exit status: 0 when the firmware exits "
        "with 0, 1 when it exits otherwise, traps or times out, 2 for bad input.",
    )
    p.add_argument("program", nargs="+", metavar="PROGRAM", help="C/assembly sources or one ELF")
    config_arg(p)
    p.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    p.add_argument("--l2", metavar="FILE", help="bytes placed at L2 address 0 before the run")
    p.add_argument("--l2-out", metavar="FILE", help="write that L2 range after the run")
    p.add_argument(
        "--l2-latency", type=int, default=0, help="extra L2 latency, 0..N cycles (default: 0)"
    )
    p.add_argument(
        "--l2-stall",
        type=float,
        default=0.0,
        help="probability of L2 back-pressure and of a response gap in a cycle (default: 0)",
    )
    p.add_argument(
        "--max-cycles", type=int, default=2_000_000, help="cycle limit (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    p.add_argument("--waves", action="store_true", help="write dump.fst in the run folder")
    p.set_defaults(func=cmd_run_firmware)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", metavar="MODEL", help="HF checkpoint folder, or 'synthetic'")
        config_arg(p)
        p.add_argument("--layers", type=int, help="keep only the first N layers")
        p.add_argument("--seq", type=int, default=128, help="sequence length (default: 128)")
        p.add_argument("--seed", type=int, default=0, help="ids and synthetic weights (default: 0)")

    p = sub.add_parser(
        "deploy",
        help="quantize, lower, plan and tile MODEL; write firmware, L2 image and plan report",
        description="Write OUT/firmware (the runtime's sources, tinyattn_regs.h, link.ld, "
        "the ELF, .bin and .hex), OUT/l2.bin (the schedule image with the input ids) and "
        "OUT/plan.txt (per operation: tiles, buffers, predicted cycles). Needs the rv32 gcc, "
        "no simulator. A model that cannot fit is refused with one line.",
    )
    model_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser(
        "run",
        help="deploy MODEL and run it on the cluster RTL; bit-exact check and cycles",
        description="Deploy MODEL, run the firmware on the cluster RTL, read every hidden "
        "state back from L2 and compare it with QuantizedMobileBert.forward; print measured "
        "against predicted cycles per operation, utilization and inferences/s at 500 MHz.",
    )
    model_args(p)
    p.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    p.add_argument(
        "--png",
        metavar="FILE",
        help="utilization per record and a timeline of layer 0 "
        "(default: build/run-<model>-S<seq>.png)",
    )
    p.set_defaults(func=cmd_run)

    sub.add_parser(
        "quantize-report",
        help="quantize MobileBERT and report the integer model's error per layer",
        description="tinyattn quantize-report PATH_OR_SYNTHETIC [options]; see "
        "`tinyattn quantize-report --help`.",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "quantize-report":
        return cmd_quantize_report(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, UsageError) as exc:
        print(f"tinyattn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
