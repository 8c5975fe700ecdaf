"""``tinyattn deploy`` and ``tinyattn run``: a MobileBERT from a checkpoint to firmware.

:func:`prepare` loads a model (a Hugging Face checkpoint folder or ``synthetic``),
quantizes it the way the engine can run it (one residual triple and one NoNorm shift per
GEMM job, ``docs/mobilebert-mapping.md``), and draws seeded input ids.
:func:`write_deployment` writes what a firmware engineer takes away: the firmware
sources and ELF, the L2 image, and the plan report. None of this needs a simulator;
the rv32 gcc builds the ELF. ``tinyattn run`` then runs the image on the RTL
(:mod:`tinyattn.sim.model_run`) and compares every hidden state with the integer model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyattn.config import ClusterConfig
from tinyattn.sw.firmware import SDK_DIR, SDK_SOURCES, FirmwareImage, build_firmware
from tinyattn.sw.lowering import unify_epilogues
from tinyattn.sw.quantize import QuantizedMobileBert
from tinyattn.sw.report import CALIBRATION_SEQUENCES, load_source
from tinyattn.sw.schedule import Schedule, deploy

__all__ = ["Deployment", "Prepared", "prepare", "write_deployment"]

ROOT = Path(__file__).resolve().parents[1]
#: The runtime and the program that runs a schedule (``docs/deploy.md``).
FIRMWARE_SOURCES = (
    ROOT / "verif" / "firmware" / "run_model.c",
    ROOT / "sw" / "firmware" / "tinyattn_runtime.c",
)


@dataclass(frozen=True)
class Prepared:
    """A quantized model and one seeded input sequence for it."""

    qmodel: QuantizedMobileBert
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    source: str


def prepare(
    source: str, *, layers: int | None, seq_len: int, seed: int = 0, group: int | None = None
) -> Prepared:
    """Load ``source`` (keeping ``layers`` layers), calibrate on seeded ids, draw the input.

    ``group`` is the ITAMax group of the engine that will run it, its ``n_pe`` (the
    lowering refuses a model quantized for another); None keeps the quantizer's default.

    Raises ``ValueError`` (or the checkpoint's own error) with one line for a bad source,
    layer count or sequence length.
    """
    model = load_source(source, seed=seed, layers=layers)
    vocab = model.config.vocab_size
    if not 1 <= seq_len <= model.config.max_position_embeddings:
        raise ValueError(
            f"--seq {seq_len}: the model has {model.config.max_position_embeddings} positions"
        )
    calib = np.random.default_rng([seed, 1]).integers(0, vocab, (CALIBRATION_SEQUENCES, seq_len))
    options = {} if group is None else {"group": group}
    qmodel = unify_epilogues(model.quantize(calib, per_channel_epilogue=False, **options))
    rng = np.random.default_rng([seed, 2])
    ids = rng.integers(0, vocab, seq_len)
    types = np.zeros(seq_len, np.int64)
    return Prepared(qmodel, ids, types, source)


@dataclass(frozen=True)
class Deployment:
    """What :func:`write_deployment` wrote."""

    schedule: Schedule
    firmware: FirmwareImage
    l2_image: Path
    plan: Path
    folder: Path


def write_deployment(
    prepared: Prepared, cfg: ClusterConfig, out: Path, *, quiet: bool = False
) -> Deployment:
    """Deploy for ``cfg`` and write ``out/``: ``firmware/`` (the SDK and runtime sources,
    ``run_model.c``, ``tinyattn_regs.h``,
    ``link.ld``, the ELF, ``.bin`` and ``.hex``), ``l2.bin`` (the schedule image, the input
    ids written in) and ``plan.txt`` (per operation: tiles, buffers, predicted cycles).

    Raises ``LoweringError`` / ``PlanError`` (one line: the operation, the bytes it needs
    and those available) before anything is written.
    """
    seq_len = len(prepared.input_ids)
    schedule = deploy(prepared.qmodel, cfg, seq_len)
    out.mkdir(parents=True, exist_ok=True)
    fw_dir = out / "firmware"
    flags = ["-DRUN_MODEL_QUIET"] if quiet else []
    image = build_firmware(cfg, list(FIRMWARE_SOURCES), fw_dir, cflags=flags)
    # The sources beside the build, so that the folder rebuilds on its own.
    sdk = [SDK_DIR / name for name in SDK_SOURCES] + sorted(SDK_DIR.glob("*.h"))
    for src in (*FIRMWARE_SOURCES, *sdk):
        shutil.copyfile(src, fw_dir / src.name)
    l2 = out / "l2.bin"
    l2.write_bytes(
        schedule.image_with_inputs(prepared.input_ids, prepared.token_type_ids).tobytes()
    )
    plan = out / "plan.txt"
    macs = prepared.qmodel.config
    plan.write_text(
        f"tinyattn deploy: {prepared.source}, {macs.num_hidden_layers} layers, S = {seq_len}, "
        f"config {cfg.stable_hash()}\n"
        f"firmware: {image.sizes.text + image.sizes.data + image.sizes.bss} bytes "
        f"({image.sizes.percent:.1f}% of the private memory); L2 image: {len(schedule.image)} "
        "bytes\n\n" + schedule.describe() + "\n"
    )
    return Deployment(schedule, image, l2, plan, out)
