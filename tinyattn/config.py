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
    "ENGINE_MIN_VEC_LEN",
    "ENGINE_TOPS",
    "L1_WINDOW_BYTES",
    "MAX_ENGINE_BUFFER_BYTES",
    "MAX_PRIVATE_TOTAL_BYTES",
    "ClusterConfig",
    "ConfigError",
    "CoreConfig",
    "DmaConfig",
    "EngineConfig",
    "InterconnectConfig",
    "MemoryConfig",
]

#: L1's window in the cluster's address map: from ``L1_BASE`` 0x1000_0000 up to
#: ``PERIPH_BASE`` 0x1020_0000 (``hw/core_bus.py``, ``docs/cluster.md``). Every top with an
#: L1 (or L1 addresses) is a part of that cluster, so the bound holds for all of them.
L1_WINDOW_BYTES = 2 << 20
#: Netlist bound on the control cores' private memories together. Each memory word is one
#: line of the generated Verilog (its initial value): 2 MiB of L1 already takes about 40 s
#: and a 14 MB netlist to generate.
MAX_PRIVATE_TOTAL_BYTES = 2 << 20
#: Netlist bound on the engine's on-chip buffers (:attr:`EngineConfig.buffer_bytes`).
MAX_ENGINE_BUFFER_BYTES = 1 << 20
#: Lanes the attention engine needs at least: a parameter record is 16 bytes, one a beat.
ENGINE_MIN_VEC_LEN = 16
#: The generatable tops that contain the attention engine (``cluster_l2`` is the cluster
#: with the Verilog L2 model, ``sim/l2_top.py``). ``compute_core`` is the engine's array
#: alone and works with fewer lanes.
ENGINE_TOPS = ("engine", "cluster", "cluster_l2")


def _mib(n: int) -> str:
    """``n`` bytes as ``"2 MiB"`` / ``"512 KiB"`` / ``"96 bytes"``."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


class ConfigError(ValueError):
    """An invalid configuration value; ``str()`` is one line naming field, value and rule.

    ``message`` replaces the ``field = value: rule`` form for errors about a whole file
    (``my.toml: not valid TOML: ...``).
    """

    def __init__(
        self, field_path: str, value: object, rule: str, *, message: str | None = None
    ) -> None:
        self.field_path = field_path
        self.value = value
        self.rule = rule
        super().__init__(message or f"{field_path} = {value!r}: {rule}")


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
    qk_split : int
        Split-lane dot products in QKᵀ: the most keys a unit scores per beat (1, 2 or
        4). A head dimension ``k <= vec_len / s`` lets each unit compute ``s`` dot
        products of ``vec_len / s`` lanes each, so QKᵀ uses every lane. The engine
        builds :attr:`max_split` of them (the ``s * n_pe`` logits of a beat fill at
        most one ``vec_len`` LOGITS word). 1 turns the mode off. The default, 2, serves
        head dimensions up to ``vec_len / 2`` at full rate (32 at the default) for about
        2% more cells per MAC; 4 adds 4 keys a beat for ``k <= vec_len / 4`` but costs
        more than 5% (``docs/performance.md``, Area).
    """

    _section = "engine"

    n_pe: int = 16
    vec_len: int = 64
    acc_bits: int = 32
    max_dim: int = 4096
    max_seq: int = 128
    tile_m: int = 64
    job_queue_depth: int = 2
    qk_split: int = 2

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
        if self.qk_split not in (1, 2, 4):
            self._fail(
                "qk_split",
                "must be 1, 2 or 4 (the most keys a unit scores per QK beat; 1 turns "
                "split-lane dot products off)",
            )
        if self.buffer_bytes > MAX_ENGINE_BUFFER_BYTES:
            self._fail(
                "tile_m",
                f"the engine's buffers (X and Y 2 x tile_m x vec_len, accumulators tile_m x "
                f"vec_len x 4, logits tile_m x max(vec_len, max_seq) bytes) take "
                f"{_mib(self.buffer_bytes)}, more than the {_mib(MAX_ENGINE_BUFFER_BYTES)} "
                "a netlist can sensibly hold; use a smaller tile_m, vec_len or max_seq",
            )

    @property
    def macs_per_cycle(self) -> int:
        """Peak multiply-accumulates per clock cycle."""
        return self.n_pe * self.vec_len

    @property
    def max_split(self) -> int:
        """Keys a unit scores per QK beat at most, as built: ``qk_split``, but no more
        than a ``vec_len`` LOGITS word holds (``s * n_pe <= vec_len``) and no segment
        narrower than the 4-byte head-dimension granule."""
        return max(1, min(self.qk_split, self.vec_len // self.n_pe, self.vec_len // 4))

    def split_for(self, k: int) -> int:
        """Keys a unit scores per beat in the QK phase of an attention job of head
        dimension ``k``: the largest power of two ``s <= max_split`` with ``k <= vec_len / s``."""
        s = self.max_split
        while s > 1 and k > self.vec_len // s:
            s //= 2
        return s

    @property
    def port_lanes(self) -> int:
        """32-bit lanes of the engine's wide memory port."""
        return self.vec_len // 4

    @property
    def buffer_bytes(self) -> int:
        """Bytes of the engine's on-chip buffers: X and Y (two tiles each), the
        accumulators (``acc_bits`` rounded to 32) and the logits of a tile."""
        tile = self.tile_m * self.vec_len
        logits = self.tile_m * max(self.vec_len, self.max_seq)
        return 2 * tile + 2 * tile + 4 * tile + logits


@dataclass(frozen=True)
class MemoryConfig(_Section):
    """The shared L1 (TCDM): ``n_banks`` word-interleaved 32-bit banks."""

    _section = "memory"

    n_banks: int = 32
    bank_words: int = 1024

    def __post_init__(self) -> None:
        self._check_types()
        self._check_pow2("n_banks", 2, 256)
        if not (_is_pow2(self.bank_words) and self.bank_words >= 16):
            self._fail("bank_words", "must be a power of two, at least 16")
        if self.size_bytes > L1_WINDOW_BYTES:
            self._fail(
                "bank_words",
                f"L1 = n_banks x bank_words x 4 = {_mib(self.size_bytes)}, more than its "
                f"{_mib(L1_WINDOW_BYTES)} window in the cluster's address map (L1_BASE "
                "0x10000000 up to PERIPH_BASE 0x10200000, docs/cluster.md); use n_banks x "
                f"bank_words <= {L1_WINDOW_BYTES // 4}",
            )

    @property
    def size_bytes(self) -> int:
        """L1 capacity in bytes."""
        return self.n_banks * self.bank_words * 4


@dataclass(frozen=True)
class InterconnectConfig(_Section):
    """The logarithmic interconnect between initiators and the L1 banks.

    ``max_stall`` bounds, in cycles, how long the engine's wide port may keep a
    narrow requester waiting at one bank before the narrow side wins once. The default
    4 lets the DMA's lanes through often enough that tiles load beside a GEMM job (on the
    2-layer MobileBERT fixture: 333 k cycles at 8, 329 k at 4 and at 2, 331-332 k at 3
    and 1; docs/deploy.md).
    """

    _section = "interconnect"

    n_cores: int = 8
    max_stall: int = 4

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
        total = self.count * self.private_bytes
        if total > MAX_PRIVATE_TOTAL_BYTES:
            self._fail(
                "private_bytes",
                f"count x private_bytes = {_mib(total)} of private memory, more than the "
                f"{_mib(MAX_PRIVATE_TOTAL_BYTES)} a netlist can sensibly hold (each word is a "
                "line of the Verilog); use fewer cores or smaller private memories",
            )


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

    def check_for(self, top: str) -> None:
        """Raise :class:`ConfigError` unless top ``top`` can be built from this configuration.

        The configuration itself is valid for every top; these rules hold only for some
        (:data:`ENGINE_TOPS`: the engine's lanes). Tops without extra rules always pass.
        """
        if top not in ENGINE_TOPS:
            return
        e = self.engine
        needs = "the engine, cluster and cluster_l2 tops need"
        if e.vec_len < ENGINE_MIN_VEC_LEN:
            raise ConfigError(
                "engine.vec_len",
                e.vec_len,
                f"{needs} at least {ENGINE_MIN_VEC_LEN} lanes (a 16-byte parameter record a "
                f"beat); use vec_len >= {ENGINE_MIN_VEC_LEN} (only the compute_core top, --top "
                "compute_core, works with fewer)",
            )
        if e.n_pe > e.vec_len:
            raise ConfigError(
                "engine.n_pe",
                e.n_pe,
                f"{needs} n_pe <= vec_len (the output buffers take n_pe of the vec_len lanes "
                f"at a time); use n_pe <= {e.vec_len} (only the compute_core top, --top "
                "compute_core, works with more)",
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

    @staticmethod
    def _parse_toml(text: str, source: str) -> dict[str, Any]:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            rule = f"is not valid TOML: {exc}"
            raise ConfigError("config", source, rule, message=f"{source}: {rule}") from None

    @classmethod
    def from_toml(cls, text: str, source: str = "TOML text") -> ClusterConfig:
        """Parse TOML ``text``; ``source`` names it in a syntax error (the file name)."""
        return cls.from_dict(cls._parse_toml(text, source))

    @classmethod
    def load(cls, path: str | Path) -> ClusterConfig:
        """Load a TOML file. An empty file (or one of comments only) is refused: leave the
        file out for the defaults; ``tinyattn config`` prints them as a starting point."""
        path = Path(path)

        def refuse(rule: str) -> ConfigError:
            return ConfigError("config", str(path), rule, message=f"{path}: {rule}")

        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise refuse("is not a TOML file (not UTF-8 text)") from None
        except OSError as exc:
            raise refuse(f"cannot be read: {exc.strerror}") from None
        data = cls._parse_toml(text, str(path))
        if not data:
            raise refuse(
                "has no settings (empty, or comments only); leave out --config for the "
                "defaults, or start from `tinyattn config --out FILE`"
            )
        return cls.from_dict(data)

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
