"""The one parameter object of tinyattn.

Every generator (RTL, register map, C headers, tiler, tests) takes a
:class:`ClusterConfig` or one of its parts; nothing downstream re-derives a
constant on its own.

The dataclasses are frozen and validate at construction. A violated rule raises
:class:`ConfigError`, whose message names the field, the value and the rule::

    >>> EngineConfig(n_pe=12)
    Traceback (most recent call last):
    ...
    tinyattn.config.ConfigError: engine.n_pe = 12: must be a power of two in 1..64
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "CoreConfig",
    "DmaConfig",
    "EngineConfig",
    "InterconnectConfig",
    "MemoryConfig",
]


class ConfigError(ValueError):
    """An invalid configuration value; ``str()`` is one line naming field, value and rule."""

    def __init__(self, field_path: str, value: object, rule: str) -> None:
        self.field_path = field_path
        self.value = value
        self.rule = rule
        super().__init__(f"{field_path} = {value!r}: {rule}")


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class _Section:
    """Shared behaviour of the config sections: typed fields, checks, dict round trip."""

    _section: str = ""

    def _fail(self, name: str, rule: str) -> None:
        raise ConfigError(f"{self._section}.{name}", getattr(self, name), rule)

    def _check_types(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.type in ("int", int) and (type(value) is not int):
                self._fail(f.name, "must be an integer")

    def _check_range(self, name: str, lo: int, hi: int) -> None:
        value = getattr(self, name)
        if not lo <= value <= hi:
            self._fail(name, f"must be in {lo}..{hi}")

    def _check_pow2(self, name: str, lo: int, hi: int) -> None:
        value = getattr(self, name)
        if not (_is_pow2(value) and lo <= value <= hi):
            self._fail(name, f"must be a power of two in {lo}..{hi}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        for key in data:
            if key not in known:
                raise ConfigError(
                    f"{cls._section}.{key}",
                    data[key],
                    f"unknown field; known fields are {', '.join(sorted(known))}",
                )
        return cls(**data)


@dataclass(frozen=True)
class EngineConfig(_Section):
    """The attention engine.

    Attributes
    ----------
    n_pe : int
        Dot-product units. Also the softmax group: ITAMax consumes ``n_pe`` logits a step.
    vec_len : int
        int8 lanes per unit. The engine's memory port has ``vec_len // 4`` 32-bit lanes.
    acc_bits : int
        Accumulator width in bits. Sums wrap modulo ``2**acc_bits``.
    max_dim : int
        Largest M, N or K a job may use.
    max_seq : int
        Most keys of an attention job (the engine keeps a tile's logits on chip).
    tile_m : int
        Rows of X (or queries) the engine keeps on chip per tile; weights are
        reused across them, so larger tiles need less memory bandwidth.
    job_queue_depth : int
        Jobs that firmware may queue while one runs.
    """

    _section = "engine"

    n_pe: int = 16
    vec_len: int = 64
    acc_bits: int = 32
    max_dim: int = 4096
    max_seq: int = 128
    tile_m: int = 64
    job_queue_depth: int = 2

    def __post_init__(self) -> None:
        self._check_types()
        self._check_pow2("n_pe", 1, 64)
        self._check_pow2("vec_len", 4, 256)
        # One chunk of vec_len products must never overflow: an int8 x int8 (or
        # uint8 x int8) product needs 17 signed bits, the tree adds log2(vec_len).
        lo = 17 + self.vec_len.bit_length() - 1
        if not lo <= self.acc_bits <= 32:
            self._fail(
                "acc_bits",
                f"must be in {lo}..32 (17 + log2(vec_len) bits hold one dot product "
                "without overflow; bias and firmware use 32-bit words)",
            )
        self._check_pow2("max_dim", 64, 65536)
        if self.max_dim < self.vec_len or self.max_dim < self.n_pe:
            self._fail("max_dim", "must be at least vec_len and n_pe")
        self._check_pow2("max_seq", 16, 4096)
        if self.max_seq % self.n_pe or self.max_seq > self.max_dim:
            self._fail("max_seq", "must be a multiple of n_pe and at most max_dim")
        self._check_pow2("tile_m", 8, 1024)
        self._check_range("job_queue_depth", 2, 16)

    @property
    def macs_per_cycle(self) -> int:
        """Peak multiply-accumulates per clock cycle."""
        return self.n_pe * self.vec_len

    @property
    def port_lanes(self) -> int:
        """32-bit lanes of the engine's wide memory port."""
        return self.vec_len // 4


@dataclass(frozen=True)
class MemoryConfig(_Section):
    """The shared L1 (TCDM): ``n_banks`` word-interleaved 32-bit banks."""

    _section = "memory"

    n_banks: int = 32
    bank_words: int = 1024

    def __post_init__(self) -> None:
        self._check_types()
        self._check_pow2("n_banks", 2, 256)
        self._check_pow2("bank_words", 16, 1 << 20)

    @property
    def size_bytes(self) -> int:
        """L1 capacity in bytes."""
        return self.n_banks * self.bank_words * 4


@dataclass(frozen=True)
class InterconnectConfig(_Section):
    """The logarithmic interconnect between initiators and the L1 banks.

    ``max_stall`` bounds, in cycles, how long the engine's wide port may keep a
    narrow requester waiting at one bank before the narrow side wins once.
    """

    _section = "interconnect"

    n_cores: int = 8
    max_stall: int = 8

    def __post_init__(self) -> None:
        self._check_types()
        self._check_range("n_cores", 1, 32)
        self._check_range("max_stall", 1, 1024)


@dataclass(frozen=True)
class DmaConfig(_Section):
    """The 2-D L2 <-> L1 DMA.

    ``dma_bits`` is 512 by default, as Wiese et al.'s cluster DMA: at 128 bits the DMA's
    busy time exceeds the engine's on MobileBERT (``docs/deploy.md``, "The default DMA
    width").
    """

    _section = "dma"

    dma_bits: int = 512
    queue_depth: int = 2
    l2_addr_bits: int = 32

    def __post_init__(self) -> None:
        self._check_types()
        self._check_pow2("dma_bits", 32, 512)
        self._check_range("queue_depth", 2, 16)
        self._check_range("l2_addr_bits", 16, 32)


@dataclass(frozen=True)
class CoreConfig(_Section):
    """The RISC-V control cores (PicoRV32, rv32imc) on the first core ports.

    Attributes
    ----------
    count : int
        Core ports ``0 .. count-1`` carry a PicoRV32; the other
        ``interconnect.n_cores - count`` ports stay OBI ports on the cluster boundary.
    private_bytes : int
        Each core's private instruction/data memory, at core address 0: code, data and
        stack live there, so instruction fetches never load the shared L1.
    stack_bytes : int
        Stack reserved at the top of the private memory; the firmware linker refuses a
        program whose code and data reach into it.
    """

    _section = "core"

    count: int = 1
    private_bytes: int = 32768
    stack_bytes: int = 4096

    def __post_init__(self) -> None:
        self._check_types()
        self._check_range("count", 1, 32)
        self._check_pow2("private_bytes", 1024, 1 << 20)
        self._check_range("stack_bytes", 256, self.private_bytes // 2)
        if self.stack_bytes % 16:
            self._fail("stack_bytes", "must be a multiple of 16 (the RISC-V stack alignment)")


@dataclass(frozen=True)
class ClusterConfig:
    """The whole cluster: engine, L1, interconnect, DMA and cores, plus cross-field rules."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    interconnect: InterconnectConfig = field(default_factory=InterconnectConfig)
    dma: DmaConfig = field(default_factory=DmaConfig)
    core: CoreConfig = field(default_factory=CoreConfig)

    def __post_init__(self) -> None:
        for f in fields(self):
            if not isinstance(getattr(self, f.name), _SECTIONS[f.name]):
                raise ConfigError(f.name, getattr(self, f.name), f"must be a {f.type}")
        if self.engine.port_lanes > self.memory.n_banks:
            raise ConfigError(
                "engine.vec_len",
                self.engine.vec_len,
                f"the wide port spans vec_len/4 = {self.engine.port_lanes} banks, "
                f"more than memory.n_banks = {self.memory.n_banks}",
            )
        if self.dma.dma_bits // 32 > self.memory.n_banks:
            raise ConfigError(
                "dma.dma_bits",
                self.dma.dma_bits,
                f"spans more than memory.n_banks = {self.memory.n_banks} banks (32 bits a "
                f"bank): use dma.dma_bits <= {32 * self.memory.n_banks} or more banks",
            )
        if self.core.count > self.interconnect.n_cores:
            raise ConfigError(
                "core.count",
                self.core.count,
                f"more RISC-V cores than core ports (interconnect.n_cores = "
                f"{self.interconnect.n_cores})",
            )

    # -- serialisation --------------------------------------------------------

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict, sections in a fixed order."""
        return {f.name: getattr(self, f.name).to_dict() for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        """Build from a nested dict; missing sections and fields take their defaults."""
        if not isinstance(data, dict):
            raise ConfigError("config", data, "must be a table of sections")
        for key in data:
            if key not in _SECTIONS:
                raise ConfigError(
                    key, data[key], f"unknown section; known sections are {', '.join(_SECTIONS)}"
                )
        parts = {}
        for name, section_cls in _SECTIONS.items():
            section = data.get(name, {})
            if not isinstance(section, dict):
                raise ConfigError(name, section, "must be a table")
            parts[name] = section_cls.from_dict(section)
        return cls(**parts)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, text: str) -> ClusterConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", "<toml>", f"is not valid TOML: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ClusterConfig:
        """Load a TOML file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError("config", str(path), f"cannot be read: {exc.strerror}") from None
        return cls.from_toml(text)

    def save(self, path: str | Path) -> None:
        """Write a TOML file that :meth:`load` reads back to an equal config."""
        Path(path).write_text(self.to_toml())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def stable_hash(self) -> str:
        """12 hex digits, equal for equal configs across runs and machines."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


_SECTIONS: dict[str, type] = {
    "engine": EngineConfig,
    "memory": MemoryConfig,
    "interconnect": InterconnectConfig,
    "dma": DmaConfig,
    "core": CoreConfig,
}
