"""The named configurations the RTL tests run: small ones for speed, the default for realism.

One definition each, so that every test of a configuration (the bench launchers, the
performance floors, the X-propagation runs) uses the same netlist and simulator build.
"""

from __future__ import annotations

from tinyattn.config import ClusterConfig, DmaConfig, EngineConfig, InterconnectConfig, MemoryConfig

__all__ = ["CLUSTER_CONFIGS", "ENGINE_CONFIGS"]

#: qk_split 4 (the default is 2) so that the tests reach every split-lane mode: 1, 2 and 4
#: keys a unit per QK beat.
_SMALL_ENGINE = EngineConfig(n_pe=4, vec_len=16, acc_bits=24, tile_m=8, max_seq=64, qk_split=4)

#: The engine bench's: n_pe x vec_len (16 KiB and 32 KiB L1 for the small ones).
ENGINE_CONFIGS: dict[str, ClusterConfig] = {
    "4x16": ClusterConfig(
        engine=_SMALL_ENGINE,
        memory=MemoryConfig(n_banks=8, bank_words=512),
        dma=DmaConfig(dma_bits=128),
    ),
    "8x32": ClusterConfig(
        engine=EngineConfig(n_pe=8, vec_len=32, tile_m=16, max_seq=64, qk_split=4),
        memory=MemoryConfig(n_banks=16, bank_words=512),
        dma=DmaConfig(dma_bits=128),
    ),
    "16x64": ClusterConfig(),
}

#: The cluster bench's: 8 banks and three cores (one of them loads L1); the same with
#: four cores (more background traffic and peripheral contention); the default.
CLUSTER_CONFIGS: dict[str, ClusterConfig] = {
    "small": ClusterConfig(
        engine=_SMALL_ENGINE,
        memory=MemoryConfig(n_banks=8, bank_words=512),
        interconnect=InterconnectConfig(n_cores=3),
        dma=DmaConfig(dma_bits=64),
    ),
    "small-4cores": ClusterConfig(
        engine=_SMALL_ENGINE,
        memory=MemoryConfig(n_banks=8, bank_words=512),
        interconnect=InterconnectConfig(n_cores=4, max_stall=4),
        dma=DmaConfig(dma_bits=64, queue_depth=3),
    ),
    "default": ClusterConfig(),
}
