"""The cluster: CoreBus unit tests (Amaranth's simulator) and the launchers of the cluster bench.

The CoreBus tests run a random reference-model check of the address decode, the
peripheral round-robin, the redirection of unmapped accesses and the response
routing. The cocotb bench (``verif/benches/cluster_bench.py``) runs on Icarus and
Verilator at a small configuration and at the default one.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from tinyattn.config import (
    ClusterConfig,
    ConfigError,
    CoreConfig,
    DmaConfig,
    EngineConfig,
    InterconnectConfig,
    MemoryConfig,
)
from tinyattn.hw.cluster import Cluster
from tinyattn.hw.core_bus import (
    L1_BASE,
    PERIPH_BASE,
    PERIPH_BITS,
    UNMAPPED_OFFSET,
    CoreBus,
    check_l1_window,
)
from tinyattn.hw.interconnect import n_narrow, narrow_wait_bound, wide_wait_bound
from tinyattn.sim.cosim import PUBLIC
from tinyattn.sim.runner import failure_report, run_bench
from tinyattn.verif.bench_configs import CLUSTER_CONFIGS

BENCH = "tinyattn.verif.benches.cluster_bench"

SMALL = CLUSTER_CONFIGS["small"]


# ---------------------------------------------------------------------------- CoreBus


def _addresses(cfg: ClusterConfig, rng: random.Random) -> tuple[int, str]:
    """A random word address and its expected target: "l1", "p" (registers) or "none"."""
    size = cfg.memory.size_bytes
    r = rng.random()
    if r < 0.4:
        return L1_BASE + 4 * rng.randrange(size // 4), "l1"
    if r < 0.7:
        return PERIPH_BASE + 4 * rng.randrange((1 << PERIPH_BITS) // 4), "p"
    edge = [
        0,
        L1_BASE - 4,
        L1_BASE + size,
        PERIPH_BASE - 4,
        PERIPH_BASE + (1 << PERIPH_BITS),
        0xFFFF_FFFC,
        L1_BASE + size + 4 * rng.randrange(1 << 10),
        4 * rng.randrange(1 << 30),
    ]
    addr = rng.choice(edge)
    in_l1 = L1_BASE <= addr < L1_BASE + size
    in_p = PERIPH_BASE <= addr < PERIPH_BASE + (1 << PERIPH_BITS)
    return addr, "l1" if in_l1 else "p" if in_p else "none"


@pytest.mark.parametrize("n_cores", [1, 3, 4])
def test_core_bus_reference(n_cores: int) -> None:
    """Random traffic on every core port against a reference model, cycle by cycle."""
    cfg = ClusterConfig(
        engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64),
        memory=MemoryConfig(n_banks=8, bank_words=256),
        dma=DmaConfig(dma_bits=128),
        interconnect=InterconnectConfig(n_cores=n_cores),
    )
    dut = CoreBus(cfg)
    rng = random.Random(n_cores)
    cycles = 3000
    stats = {"l1": 0, "p": 0, "none": 0, "rr_checked": 0}

    async def bench(ctx) -> None:
        pending: list[tuple[int, str, int, int, int] | None] = [None] * n_cores
        last = -1  # last peripheral winner
        l1_resp: list[int | None] = [None] * n_cores  # rdata the L1 answers this cycle
        p_resp: int | None = None
        expect_resp: list[int | None] = [None] * n_cores
        for cycle in range(cycles):
            # Requests: a new one when the port is free (held until granted).
            for i in range(n_cores):
                if pending[i] is None and rng.random() < 0.7:
                    addr, kind = _addresses(cfg, rng)
                    pending[i] = (addr, kind, rng.randrange(2), rng.randrange(16),
                                  rng.getrandbits(32))  # fmt: skip
                core = dut.cores[i]
                req = pending[i]
                ctx.set(core.req, int(req is not None))
                if req is not None:
                    ctx.set(core.addr, req[0])
                    ctx.set(core.we, req[2])
                    ctx.set(core.be, req[3])
                    ctx.set(core.wdata, req[4])
            # Targets: random grants; responses one cycle after their grant.
            l1_gnt = [rng.random() < 0.6 for _ in range(n_cores)]
            p_gnt = rng.random() < 0.6
            for i in range(n_cores):
                ctx.set(dut.l1[i].gnt, int(l1_gnt[i]))
                ctx.set(dut.l1[i].rvalid, int(l1_resp[i] is not None))
                ctx.set(dut.l1[i].rdata, l1_resp[i] or 0)
            ctx.set(dut.periph.gnt, int(p_gnt))
            ctx.set(dut.periph.rvalid, int(p_resp is not None))
            ctx.set(dut.periph.rdata, p_resp or 0)

            # Responses routed to the cores that were granted in the last cycle.
            for i in range(n_cores):
                core = dut.cores[i]
                want = expect_resp[i]
                assert ctx.get(core.rvalid) == int(want is not None), (cycle, i)
                if want is not None:
                    assert ctx.get(core.rdata) == want, (cycle, i)

            # Decode and arbitration.
            want_p = [i for i in range(n_cores) if pending[i] and pending[i][1] != "l1"]
            winner = None
            if want_p:
                after = [i for i in want_p if i > last]
                winner = after[0] if after else want_p[0]
            assert ctx.get(dut.periph.req) == int(winner is not None), cycle
            if winner is not None:
                addr, kind, we, be, wdata = pending[winner]
                want_addr = addr - PERIPH_BASE if kind == "p" else UNMAPPED_OFFSET
                assert ctx.get(dut.periph.addr) == want_addr, (cycle, winner, hex(addr))
                assert ctx.get(dut.periph.we) == (we if kind == "p" else 0), cycle
                assert ctx.get(dut.periph.be) == be
                assert ctx.get(dut.periph.wdata) == wdata
                if len(want_p) > 1:
                    stats["rr_checked"] += 1
            errors = 0
            l1_next: list[int | None] = [None] * n_cores
            expect_next: list[int | None] = [None] * n_cores
            granted_p = False
            for i in range(n_cores):
                core, l1 = dut.cores[i], dut.l1[i]
                req = pending[i]
                kind = req[1] if req else None
                assert ctx.get(l1.req) == int(kind == "l1"), (cycle, i)
                if kind == "l1":
                    assert ctx.get(l1.addr) == req[0] - L1_BASE
                    assert (ctx.get(l1.we), ctx.get(l1.be), ctx.get(l1.wdata)) == req[2:]
                    gnt = l1_gnt[i]
                elif kind is not None:
                    gnt = i == winner and p_gnt
                else:
                    gnt = False
                assert ctx.get(core.gnt) == int(gnt) or req is None, (cycle, i, kind)
                if req is not None and gnt:
                    stats[kind] += 1
                    tag = rng.getrandbits(32)
                    if kind == "l1":
                        l1_next[i] = tag
                    else:
                        granted_p = True
                        p_next = tag
                    expect_next[i] = tag
                    errors += kind == "none"
                    pending[i] = None
            assert ctx.get(dut.decode_error) == int(errors > 0), cycle
            if winner is not None:
                last = winner  # the pointer moves past the selected core, granted or not
            l1_resp, expect_resp = l1_next, expect_next
            p_resp = p_next if granted_p else None
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert min(stats["l1"], stats["p"], stats["none"]) > 50, stats
    if n_cores > 1:
        assert stats["rr_checked"] > 100, stats


def test_core_bus_rejects_l1_over_window() -> None:
    # The configuration itself refuses an L1 beyond the window (config.L1_WINDOW_BYTES);
    # the CoreBus's own check stays as a second line, tested on a stand-in.
    with pytest.raises(ConfigError, match=r"memory\.bank_words.*2 MiB window"):
        MemoryConfig(n_banks=32, bank_words=1 << 15)  # 4 MiB
    big = SimpleNamespace(memory=SimpleNamespace(size_bytes=4 << 20, bank_words=1 << 15))
    with pytest.raises(ConfigError, match=r"memory\.bank_words"):
        check_l1_window(big)  # type: ignore[arg-type]
    fits = CoreBus(ClusterConfig(memory=MemoryConfig(n_banks=32, bank_words=1 << 14)))  # 2 MiB
    Fragment.get(fits, None)  # a 2 MiB L1 fills the window exactly and builds


def test_cluster_ports() -> None:
    c = Cluster(SMALL)
    members = c.signature.members
    assert set(members) == {
        "cores",
        "fetch_enable",
        "loader",
        "host",
        "faults",
        "fault",
        "l2_req",
        "l2_rsp",
        "irq",
    }
    # Core port 0 carries the RISC-V core; the others stay on the boundary.
    external = SMALL.interconnect.n_cores - SMALL.core.count
    assert members["cores"].dimensions == (external,)
    assert members["cores"].flow.name == "In" and members["irq"].flow.name == "Out"
    assert members["l2_req"].flow.name == "Out" and members["l2_rsp"].flow.name == "In"
    assert members["loader"].flow.name == "In" and members["host"].flow.name == "Out"
    Fragment.get(c, None)  # the cluster elaborates with these ports


def test_cluster_without_external_core_ports() -> None:
    cfg = ClusterConfig(
        engine=SMALL.engine,
        memory=SMALL.memory,
        dma=SMALL.dma,
        interconnect=InterconnectConfig(n_cores=2),
        core=CoreConfig(count=2, private_bytes=4096, stack_bytes=1024),
    )
    c = Cluster(cfg)
    assert "cores" not in c.signature.members
    assert c.signature.members["faults"].shape.length == 2  # type: ignore[union-attr]
    Fragment.get(c, None)  # both core ports taken by RISC-V cores inside


# ---------------------------------------------------------------------------- cocotb bench

CONFIGS = CLUSTER_CONFIGS
#: (config, simulator) -> (tests, environment). Icarus is far slower on the default
#: configuration (about 40 engine cycles a second): there it checks the address map
#: only. The default engine's jobs run under Icarus in its own bench
#: (tests/test_engine_rtl.py) and the default cluster's under Verilator here; the
#: firmware jobs run under Icarus on the small cluster.
FIRMWARE_TESTS = ["address_map", "firmware_jobs"]
PLAN = {
    ("small", "icarus"): (FIRMWARE_TESTS, {"TINYATTN_ROUNDS": "2"}),
    ("small", "verilator"): (FIRMWARE_TESTS, {"TINYATTN_ROUNDS": "8"}),
    ("small-4cores", "icarus"): (["firmware_jobs"], {"TINYATTN_BACKGROUND": "0.5"}),
    ("small-4cores", "verilator"): (
        FIRMWARE_TESTS,
        {"TINYATTN_ROUNDS": "6", "TINYATTN_BACKGROUND": "0.5"},
    ),
    ("default", "icarus"): (["address_map"], {}),
    ("default", "verilator"): (FIRMWARE_TESTS, {"TINYATTN_ROUNDS": "3"}),
}


@pytest.mark.sim
@pytest.mark.parametrize(
    "name",
    # The four-core variant adds build time more than coverage: it runs in `make test-slow`.
    [pytest.param(n, marks=pytest.mark.slow) if n == "small-4cores" else n for n in CONFIGS],
)
def test_cluster(name: str, sim: str, seed: int) -> None:
    tests, env = PLAN[(name, sim)]
    cfg = CONFIGS[name]
    # The firmware tests' public PC probe and the TCDM lanes the bench monitors.
    result = run_bench(
        "cluster",
        cfg,
        BENCH,
        sim,
        seed=seed,
        testcase=tests,
        env=env,
        public=PUBLIC,
    )
    assert result.ok, failure_report(result, seed)
    assert set(result.passed) == set(tests), result.passed
    # The bench asserted the starvation bound on every TCDM port, every cycle; here: it
    # did monitor all of them (cores, DMA lanes, engine lanes), and the DMA and the
    # engine did use theirs.
    n_ports = n_narrow(cfg) + cfg.engine.port_lanes
    for test in tests:
        lanes = result.metrics[f"lane_waits_{test}"]
        assert len(lanes["longest"]) == n_ports, lanes["longest"].keys()
        assert lanes["narrow_bound"] == narrow_wait_bound(cfg)
        assert lanes["wide_bound"] == wide_wait_bound(cfg)
        bounds = [narrow_wait_bound(cfg)] * n_narrow(cfg) + [wide_wait_bound(cfg)] * (
            cfg.engine.port_lanes
        )
        for (port, longest), bound in zip(lanes["longest"].items(), bounds, strict=True):
            assert longest <= bound, f"{test}: {port} waited {longest} > {bound}"
    if "firmware_jobs" in tests:
        jobs = result.metrics["lane_waits_firmware_jobs"]["accepted"]
        assert all(v > 0 for k, v in jobs.items() if "DMA" in k or "engine" in k), jobs
