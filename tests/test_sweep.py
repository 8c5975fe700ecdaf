"""``tinyattn sweep``: the spec, Dask against serial, a killed worker, resuming, bad specs.

The sweeps here run the ``predict`` workload (the cost model, a second or two a point) on
one layer of the synthetic MobileBERT, with three tile sizes of the default engine, so one
quantized model serves every point. The Dask tests share one ``LocalCluster`` of 2 workers
of 1 thread each.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tinyattn import cli
from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, MemoryConfig
from tinyattn.sim import sweep
from tinyattn.sim.sweep import SweepSpecError, load_spec, parse_spec, read_rows, run_sweep

pytest.importorskip("distributed")

SPEC = """
[vary]
engine.tile_m = [16, 32, 64]

[workload]
kind = "predict"
layers = 1
seq = 64
"""

#: Rows as the sweep writes them; order in rows.jsonl is completion order.
N_POINTS = 3


def _spec(tmp_path: Path, text: str = SPEC) -> sweep.Spec:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return load_spec(path)


@pytest.fixture(scope="module")
def serial_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("serial")
    result = run_sweep(_spec(tmp), tmp / "out", serial=True, progress=False, plot=False)
    return result.rows


@pytest.fixture(scope="module")
def client():
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"OPENBLAS_NUM_THREADS": "1"},
        )
        c = Client(cluster)
        try:
            yield c
        finally:
            c.close()
            cluster.close()


def test_spec_points_grid_and_random(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        """
        [vary]
        engine.n_pe = {from = 4, to = 16, factor = 2}
        engine.tile_m = [32, 64]
        dma.dma_bits = {from = 128, to = 384, step = 128}
        """,
    )
    points = spec.points()
    assert spec.grid_size == len(points) == 3 * 2 * 3
    # Fields in sorted order, the first varying slowest.
    assert points[0].overrides == (("dma.dma_bits", 128), ("engine.n_pe", 4), ("engine.tile_m", 32))
    assert points[1].label == "dma_bits=128 n_pe=4 tile_m=64"
    sample = parse_spec(
        {
            "sweep": {"mode": "random", "samples": 5, "seed": 3},
            "vary": {"engine": {"tile_m": [8, 16, 32, 64, 128, 256]}},
        }
    ).points()
    again = parse_spec(
        {
            "sweep": {"mode": "random", "samples": 5, "seed": 3},
            "vary": {"engine": {"tile_m": [8, 16, 32, 64, 128, 256]}},
        }
    ).points()
    assert sample == again and len(sample) == 5
    assert [p.index for p in sample] == sorted(p.index for p in sample)


def test_serial_rows(serial_rows: list[dict]) -> None:
    assert [r["index"] for r in serial_rows] == list(range(N_POINTS))
    for r in serial_rows:
        assert r["status"] == "ok", r["reason"]
        assert set(r) == set(sweep.ROW_KEYS)
        assert r["cycles"] > r["cycles_per_layer"] > 0
        assert 0 < r["utilization"] <= 1
        assert r["inferences_per_s"] == round(500e6 / r["cycles"], 2)
        assert r["l1_bytes"] == 128 * 1024
    # A larger tile_m keeps more of X on chip: more buffer bytes.
    assert serial_rows[0]["buffer_bytes"] < serial_rows[2]["buffer_bytes"]


def test_dask_gives_the_serial_rows(tmp_path: Path, serial_rows: list[dict], client) -> None:
    result = run_sweep(_spec(tmp_path), tmp_path / "out", client=client, progress=False)
    assert result.rows == serial_rows
    assert result.evaluated == N_POINTS
    written = read_rows(tmp_path / "out" / "rows.jsonl")
    assert sorted(r["index"] for r in written) == list(range(N_POINTS))
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 0
    assert (tmp_path / "out" / "results.csv").read_text().count("\n") == N_POINTS + 1


def test_scheduler_address_gives_the_serial_rows(
    tmp_path: Path, serial_rows: list[dict], client
) -> None:
    """``--scheduler ADDRESS``: the sweep connects its own client to an existing cluster."""
    address = client.scheduler.address
    result = run_sweep(_spec(tmp_path), tmp_path / "out", scheduler=address, progress=False)
    assert result.rows == serial_rows
    assert client.status == "running"  # the sweep closed its own client only


def _kill_a_busy_worker(client, stop: threading.Event) -> list[str]:
    """SIGKILL the process of the first worker seen running a sweep task."""
    pids = client.run(os.getpid)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not stop.is_set():
        for addr, keys in client.processing().items():
            if any(str(k).startswith("sweep-") for k in keys):
                os.kill(pids[addr], signal.SIGKILL)
                return [addr]
        time.sleep(0.05)
    return []


def test_killed_worker_loses_and_duplicates_no_row(
    tmp_path: Path, serial_rows: list[dict], client
) -> None:
    out = tmp_path / "out"
    stop = threading.Event()
    killed: list[str] = []
    killer = threading.Thread(target=lambda: killed.extend(_kill_a_busy_worker(client, stop)))
    killer.start()
    try:
        result = run_sweep(_spec(tmp_path), out, client=client, progress=False, plot=False)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was seen busy with a sweep task"
    written = read_rows(out / "rows.jsonl")
    assert sorted(r["index"] for r in written) == list(range(N_POINTS))  # each once
    # Dask retried the killed worker's task elsewhere (allowed-failures = 3).
    assert result.rows == serial_rows
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed one


def test_killed_worker_beyond_allowed_failures_is_a_failed_row(
    tmp_path: Path, serial_rows: list[dict], client
) -> None:
    """With no retry allowed the point is a ``failed`` row; a rerun completes it."""
    out = tmp_path / "out"
    stop = threading.Event()
    client.run_on_scheduler(_set_allowed_failures, 0)
    killer = threading.Thread(target=_kill_a_busy_worker, args=(client, stop))
    killer.start()
    try:
        result = run_sweep(_spec(tmp_path), out, client=client, progress=False, plot=False)
    finally:
        stop.set()
        killer.join()
        client.run_on_scheduler(_set_allowed_failures, 3)
    # Every task the dead worker held (the running one, and any queued behind it) fails.
    failed = [r for r in result.rows if r["status"] == "failed"]
    assert 1 <= len(failed) < N_POINTS, result.rows
    assert all(r["reason"].startswith("KilledWorker: ") for r in failed)
    lost = {r["index"] for r in failed}
    assert [r for r in result.rows if r["status"] == "ok"] == [
        r for r in serial_rows if r["index"] not in lost
    ]
    assert sorted(r["index"] for r in read_rows(out / "rows.jsonl")) == list(range(N_POINTS))
    client.wait_for_workers(2, timeout=60)
    again = run_sweep(_spec(tmp_path), out, serial=True, progress=False, plot=False)
    assert again.evaluated == len(lost) and again.skipped == N_POINTS - len(lost)
    assert again.rows == serial_rows


def _set_allowed_failures(n: int, dask_scheduler=None) -> None:
    dask_scheduler.allowed_failures = n


def test_rerun_after_interrupt_runs_only_the_missing_points(
    tmp_path: Path, serial_rows: list[dict]
) -> None:
    out = tmp_path / "out"
    spec = _spec(tmp_path)

    def interrupt(row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, serial=True, progress=False, plot=False, on_row=interrupt)
    rows_file = out / "rows.jsonl"
    assert len(read_rows(rows_file)) == 1
    with rows_file.open("a") as fh:  # a kill in the middle of a write
        fh.write('{"id": "cut sh')
    seen: list[int] = []
    again = run_sweep(spec, out, serial=True, progress=False, plot=False,
                      on_row=lambda r: seen.append(r["index"]))  # fmt: skip
    assert again.evaluated == N_POINTS - 1 and again.skipped == 1
    assert sorted(seen) == list(range(1, N_POINTS))
    assert again.rows == serial_rows
    assert len(read_rows(rows_file)) == N_POINTS
    third = run_sweep(spec, out, serial=True, progress=False, plot=False)
    assert third.evaluated == 0 and third.rows == serial_rows


def test_invalid_points_are_rows_with_their_reason(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        """
        [vary]
        engine.n_pe = [16, 12]
        memory.n_banks = [2]

        [workload]
        layers = 1
        seq = 64
        """,
    )
    rows = run_sweep(spec, tmp_path / "out", serial=True, progress=False, plot=False).rows
    assert [r["status"] for r in rows] == ["invalid", "invalid"]
    assert rows[0]["reason"].startswith("engine.vec_len = 64: the wide port spans")
    assert rows[1]["reason"] == "engine.n_pe = 12: must be a power of two in 1..64"


def test_model_that_does_not_fit_is_invalid(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        """
        [vary]
        memory.bank_words = [64]

        [workload]
        layers = 1
        seq = 64
        """,
    )
    (row,) = run_sweep(spec, tmp_path / "out", serial=True, progress=False, plot=False).rows
    assert row["status"] == "invalid" and row["reason"] and "\n" not in row["reason"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[vary]\n", "vary: missing or empty; name a field to vary, e.g. engine.n_pe = [8, 16]"),
        ("[vary]\nengine.n_pes = [8]\n", "vary.engine.n_pes: no such field in [engine]; known"),
        ("[vary]\nengin.n_pe = [8]\n", "vary.engin.n_pe: not a configuration field"),
        ("[vary]\nengine.n_pe = 8\n", "vary.engine.n_pe: 8: give a list ([8, 16]) or a range"),
        ("[vary]\nengine.n_pe = []\n", "vary.engine.n_pe: no values; give at least one"),
        ("[vary]\nengine.n_pe = {from = 16, to = 8}\n", "to = 8 is below from = 16"),
        ("[vary]\nengine.n_pe = [8]\n[workload]\nkind = 'sim'\n",
         "workload.kind: 'sim': use one of predict, engine, run"),
        ("[vary]\nengine.n_pe = [8]\n[sweep]\nmode = 'random'\n",
         "sweep.samples: missing: a random sweep needs samples = N"),
        ("[vary]\nengine.n_pe = [8]\n[sweep]\nmode = 'random'\nsamples = 2\n",
         "sweep.samples: 2 is more than the 1 grid points; use 1..1"),
        ("[vary]\nengine.n_pe = [8]\n[metrics]\narea = 'slow'\n", "metrics.area: 'slow': use"),
        ("[vary]\nengine.n_pe = [8]\n[metric]\n", "metric: unknown table"),
        ("[vary]\nengine.n_pe = [8]\n[base.engine]\ntile_m = 3\n",
         "base: the base configuration is invalid: engine.tile_m = 3"),
        ("[vary]\nengine.n_pe = [8]\n[workload]\nkind = 'engine'\ncases = ['gemm']\n",
         "workload.cases[0]: 'gemm': no such case"),
        ("[vary\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_spec_names_the_key_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SweepSpecError) as info:
        _spec(tmp_path, text)
    assert message in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "spec.toml"))


def test_cli_bad_spec_and_out_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[vary]\nengine.n_pes = [8]\n")
    assert cli.main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("tinyattn sweep: error: ") and "vary.engine.n_pes" in err
    assert not (tmp_path / "o").exists()
    assert cli.main(["sweep", str(tmp_path / "none.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    # An --out folder of another workload is refused, not mixed.
    out = tmp_path / "o2"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"workload": {"kind": "engine"}}))
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    assert cli.main(["sweep", str(spec), "--out", str(out), "--serial"]) == 2
    assert "holds a sweep with another workload" in capsys.readouterr().err
    assert cli.main(["sweep", str(spec), "--out", str(out), "--serial", "--workers", "2"]) == 2


def test_cli_serial_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("[16, 32, 64]", "[64]"))
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--serial"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tinyattn sweep: 1 points (grid, 1 fields), workload predict")
    assert lines[1].split()[:4] == ["#", "configuration", "status", "cycles"]
    assert lines[3].split()[:3] == ["0", "tile_m=64", "ok"]
    assert lines[-1] == f"wrote {tmp_path / 'o' / 'pareto.png'}"


def test_pareto_png_is_deterministic(tmp_path: Path, serial_rows: list[dict]) -> None:
    rows = [dict(r, cells=1000 * (3 - i), cells_per_mac=1.0) for i, r in enumerate(serial_rows)]
    assert sweep.pareto_front(rows) == sorted(
        r["index"] for r in rows
        if not any(o["cells"] <= r["cells"] and o["inferences_per_s"] > r["inferences_per_s"]
                   for o in rows)
    )  # fmt: skip
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    sweep.plot_pareto(rows, a, "t")
    sweep.plot_pareto(rows, b, "t")
    assert a.read_bytes() == b.read_bytes()
    assert b"Software" not in a.read_bytes() and b"Creation" not in a.read_bytes()


#: The 8 x 32 engine that neither fast area mode was fitted on (docs/sweep.md).
HELD_OUT_ENGINE = ClusterConfig(
    engine=EngineConfig(n_pe=8, vec_len=32, max_seq=64, tile_m=16),
    memory=MemoryConfig(n_banks=16, bank_words=512),
    dma=DmaConfig(dma_bits=128),
)


def test_area_estimate_rows(tmp_path: Path) -> None:
    """``metrics.area = "estimate"``: cells and cells per MAC from the per-part model, which
    reproduces the full synthesis of the 4 x 16 engine it was calibrated on."""
    from tinyattn.sim.area import CALIBRATION_ENGINE, estimate_cells

    # The full syntheses the model is solved from (docs/sweep.md) come back out of it.
    assert abs(estimate_cells(CALIBRATION_ENGINE) / 215_797 - 1) < 1e-3
    assert abs(estimate_cells(ClusterConfig()) / 1_844_887 - 1) < 1e-3  # +0.07%
    # The held-out 8 x 32 engine: 507,666 cells by the full synthesis, -1.5% estimated.
    assert abs(estimate_cells(HELD_OUT_ENGINE) / 507_666 - 1) < 0.02
    spec = _spec(
        tmp_path, SPEC.replace("[16, 32, 64]", "[32, 64]") + "[metrics]\narea = 'estimate'\n"
    )
    rows = run_sweep(spec, tmp_path / "out", serial=True, progress=False).rows
    assert [r["area_mode"] for r in rows] == ["estimate"] * 2
    assert rows[0]["cells"] < rows[1]["cells"]  # tile_m 64: twice the buffers
    assert rows[1]["cells_per_mac"] == round(rows[1]["cells"] / 1024, 1)
    assert sweep.pareto_front(rows)


@pytest.mark.slow
def test_area_coarse_and_full_on_the_test_engine() -> None:
    """The fast modes against the full synthesis: the 4 x 16 engine (the calibration point)
    and the 8 x 32 one (held out); minutes of yosys each, cached beside the netlist."""
    from tinyattn.sim.area import CALIBRATION_ENGINE, engine_area, estimate_cells

    full = engine_area(CALIBRATION_ENGINE, "full")["cells"]
    coarse = engine_area(CALIBRATION_ENGINE, "coarse")["cells"]
    assert abs(coarse / full - 1) < 0.01
    assert abs(estimate_cells(CALIBRATION_ENGINE) / full - 1) < 0.01
    # The held-out 8 x 32 engine: coarse -2.8%, estimate -1.5% measured (docs/sweep.md).
    full, coarse = (engine_area(HELD_OUT_ENGINE, m)["cells"] for m in ("full", "coarse"))
    assert abs(coarse / full - 1) < 0.05
    assert abs(engine_area(HELD_OUT_ENGINE, "estimate")["cells"] / full - 1) < 0.02
