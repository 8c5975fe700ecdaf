"""The parameter object: defaults, validation messages, TOML round trip, stable hash."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tinyattn.config import (
    ClusterConfig,
    ConfigError,
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
