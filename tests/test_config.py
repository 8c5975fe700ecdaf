"""The parameter object: defaults, validation messages, TOML round trip, stable hash."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tinyattn.config import (
    L1_WINDOW_BYTES,
    MAX_ENGINE_BUFFER_BYTES,
    MAX_PRIVATE_TOTAL_BYTES,
    ClusterConfig,
    ConfigError,
    CoreConfig,
    DmaConfig,
    EngineConfig,
    InterconnectConfig,
    MemoryConfig,
)


def test_default_mirrors_reference_system() -> None:
    cfg = ClusterConfig()
    assert (cfg.engine.n_pe, cfg.engine.vec_len) == (16, 64)
    assert cfg.engine.macs_per_cycle == 1024
    assert cfg.memory.size_bytes == 128 * 1024
    assert cfg.memory.n_banks == 32
    assert cfg.interconnect.n_cores == 8
    assert cfg.dma.dma_bits == 512
    assert cfg.engine.port_lanes == 16


@pytest.mark.parametrize(
    ("make", "field", "value"),
    [
        (lambda: EngineConfig(n_pe=12), "engine.n_pe", "12"),
        (lambda: EngineConfig(vec_len=2), "engine.vec_len", "2"),
        (lambda: EngineConfig(acc_bits=20), "engine.acc_bits", "20"),
        (lambda: EngineConfig(acc_bits=40), "engine.acc_bits", "40"),
        (lambda: EngineConfig(n_pe=True), "engine.n_pe", "True"),
        (lambda: EngineConfig(job_queue_depth=1), "engine.job_queue_depth", "1"),
        (lambda: MemoryConfig(n_banks=24), "memory.n_banks", "24"),
        (lambda: MemoryConfig(bank_words="1024"), "memory.bank_words", "'1024'"),
        (lambda: InterconnectConfig(max_stall=0), "interconnect.max_stall", "0"),
        (lambda: DmaConfig(dma_bits=100), "dma.dma_bits", "100"),
        (
            lambda: ClusterConfig(
                engine=EngineConfig(vec_len=256), memory=MemoryConfig(n_banks=32)
            ),
            "engine.vec_len",
            "256",
        ),
    ],
)
def test_errors_name_field_value_and_rule(make, field: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    msg = str(info.value)
    assert msg.startswith(f"{field} = {value}: "), msg
    assert len(msg.split(": ", 1)[1]) > 10, "the rule must be stated"
    assert "\n" not in msg


def test_acc_bits_rule_depends_on_vec_len() -> None:
    EngineConfig(vec_len=8, acc_bits=20)  # 17 + 3
    with pytest.raises(ConfigError, match=r"must be in 20\.\.32"):
        EngineConfig(vec_len=8, acc_bits=19)


def test_toml_round_trip(tmp_path) -> None:
    cfg = ClusterConfig(
        engine=EngineConfig(n_pe=8, vec_len=16, acc_bits=24),
        memory=MemoryConfig(n_banks=16, bank_words=256),
        interconnect=InterconnectConfig(n_cores=2, max_stall=3),
        dma=DmaConfig(dma_bits=64, queue_depth=4),
    )
    path = tmp_path / "c.toml"
    cfg.save(path)
    assert ClusterConfig.load(path) == cfg
    assert ClusterConfig.load(path).stable_hash() == cfg.stable_hash()


def test_partial_toml_takes_defaults() -> None:
    cfg = ClusterConfig.from_toml("[engine]\nn_pe = 4\n")
    assert cfg.engine.n_pe == 4
    assert cfg.engine.vec_len == EngineConfig().vec_len
    assert cfg.memory == MemoryConfig()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[engine]\nn_pes = 4\n", "engine.n_pes"),
        ("[engin]\nn_pe = 4\n", "engin"),
        ("[engine\n", "not valid TOML"),
        ("engine = 3\n", "must be a table"),
    ],
)
def test_bad_toml_is_named(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ClusterConfig.from_toml(text)


def test_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        ClusterConfig.load(tmp_path / "nope.toml")


def test_hash_is_stable_and_sensitive() -> None:
    a, b = ClusterConfig(), ClusterConfig()
    assert a.stable_hash() == b.stable_hash()
    assert len(a.stable_hash()) == 12
    changed = ClusterConfig(interconnect=InterconnectConfig(max_stall=9))
    assert changed.stable_hash() != a.stable_hash()
    # Same value in a fresh interpreter with another hash seed: no process state leaks in.
    code = "from tinyattn.config import ClusterConfig; print(ClusterConfig().stable_hash())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert out.stdout.strip() == a.stable_hash()


def test_frozen() -> None:
    cfg = EngineConfig()
    with pytest.raises(AttributeError):
        cfg.n_pe = 8  # type: ignore[misc]


# ---- bounds, per-top rules, files ---------------------------------------------------------


def test_l1_window_matches_the_cluster_address_map() -> None:
    from tinyattn.hw.core_bus import L1_WINDOW

    assert L1_WINDOW == L1_WINDOW_BYTES == 2 << 20
    MemoryConfig(n_banks=32, bank_words=1 << 14)  # exactly 2 MiB fits
    MemoryConfig(n_banks=2, bank_words=1 << 18)
    for n_banks, bank_words in ((32, 1 << 15), (2, 1 << 19), (2, 1 << 20), (256, 1 << 12)):
        with pytest.raises(ConfigError, match=r"^memory\.bank_words = \d+: L1 = .*2 MiB window"):
            MemoryConfig(n_banks=n_banks, bank_words=bank_words)
    with pytest.raises(ConfigError, match=r"must be a power of two, at least 16"):
        MemoryConfig(bank_words=8)


def test_netlist_bounds_name_the_bound() -> None:
    CoreConfig(count=2, private_bytes=1 << 20)  # 2 MiB together: the bound itself
    with pytest.raises(ConfigError, match=r"^core\.private_bytes = 1048576: count x .* 4 MiB"):
        CoreConfig(count=4, private_bytes=1 << 20)
    assert MAX_PRIVATE_TOTAL_BYTES == 2 << 20
    assert EngineConfig().buffer_bytes == 40 * 1024  # X, Y 8 KiB each, acc 16 KiB, logits 8
    EngineConfig(tile_m=1024, vec_len=64, max_seq=128)  # 640 KiB
    with pytest.raises(ConfigError, match=r"^engine\.tile_m = 1024: the engine's buffers .*"):
        EngineConfig(tile_m=1024, max_seq=4096)
    assert EngineConfig(tile_m=1024, vec_len=16, n_pe=4, max_seq=64).buffer_bytes <= (
        MAX_ENGINE_BUFFER_BYTES
    )


def test_buffer_bytes_is_what_the_engine_instantiates() -> None:
    """The bound counts the engine's four buffers, bit for bit (accumulators at 32 bits)."""
    from amaranth.hdl import Fragment, Shape

    from tinyattn.hw.engine import Engine

    cfg = ClusterConfig(
        engine=EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64),
        memory=MemoryConfig(n_banks=8, bank_words=256),
        dma=DmaConfig(dma_bits=128),
    )
    frag = Fragment.get(Engine(cfg), None)
    found = {}
    todo = [frag]
    while todo:
        f = todo.pop()
        for sub, name, _ in f.subfragments:
            todo.append(sub)
            memory = getattr(sub, "origins", (None,))[0]
            if name in ("xbuf", "acc", "ybuf", "logits"):
                found[name] = Shape.cast(memory.shape).width * memory.depth
    assert set(found) == {"xbuf", "acc", "ybuf", "logits"}
    e = cfg.engine
    acc_pad = e.tile_m * e.vec_len * (32 - e.acc_bits)  # acc_bits 24 is stored as 24 bits
    assert sum(found.values()) == e.buffer_bytes * 8 - acc_pad


@pytest.mark.parametrize("top", ["engine", "cluster", "cluster_l2"])
def test_check_for_names_the_tops_and_the_way_out(top: str) -> None:
    small = ClusterConfig(engine=EngineConfig(n_pe=4, vec_len=8, acc_bits=24))
    small.check_for("compute_core")  # the array alone works with 8 lanes
    for other in ("tcdm", "dma", "regblock"):
        small.check_for(other)
    with pytest.raises(ConfigError) as info:
        small.check_for(top)
    assert str(info.value).startswith(
        "engine.vec_len = 8: the engine, cluster and cluster_l2 tops need at least 16 lanes"
    )
    assert "compute_core" in str(info.value)
    wide = ClusterConfig(engine=EngineConfig(n_pe=32, vec_len=16, max_seq=64))
    wide.check_for("compute_core")
    with pytest.raises(ConfigError, match=r"^engine\.n_pe = 32: .* n_pe <= vec_len"):
        wide.check_for(top)
    ClusterConfig().check_for(top)


# A constructor or elaboration that raises leaves Amaranth's never-used objects behind.
@pytest.mark.filterwarnings("ignore:.*created but never used")
@pytest.mark.parametrize(
    "engine",
    [
        EngineConfig(n_pe=4, vec_len=8, acc_bits=24, tile_m=8, max_seq=64),
        EngineConfig(n_pe=32, vec_len=16, acc_bits=24, tile_m=8, max_seq=64),
        EngineConfig(n_pe=16, vec_len=16, acc_bits=24, tile_m=8, max_seq=64),
    ],
    ids=["vec8", "n_pe-over-vec_len", "ok"],
)
def test_check_for_agrees_with_the_hardware(engine: EngineConfig) -> None:
    """Every top that ``check_for`` accepts elaborates; every one it refuses does not."""
    from amaranth.hdl import Fragment

    from tinyattn.hw.tops import TOPS, build_top

    cfg = ClusterConfig(
        engine=engine, memory=MemoryConfig(n_banks=8, bank_words=64), dma=DmaConfig(dma_bits=128)
    )
    for top in TOPS:
        try:
            cfg.check_for(top)
            accepted = True
        except ConfigError:
            accepted = False
        try:
            Fragment.get(build_top(top, cfg), None)
            built = True
        except Exception:
            built = False
        assert accepted == built, (top, accepted, built)


def test_toml_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine\n")
    with pytest.raises(ConfigError) as info:
        ClusterConfig.load(bad)
    assert str(info.value).startswith(f"{bad}: is not valid TOML: ")
    assert "<toml>" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^TOML text: is not valid TOML"):
        ClusterConfig.from_toml("[engine\n")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_config_file_is_refused(tmp_path, text: str) -> None:
    path = tmp_path / "empty.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.toml: has no settings"):
        ClusterConfig.load(path)
    assert ClusterConfig.from_toml(text) == ClusterConfig()  # a string is not a file
