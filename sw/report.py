"""``tinyattn quantize-report``: accuracy of the integer MobileBERT against the float model.

:func:`quantize_report` loads a checkpoint (or builds a synthetic ``mobilebert-uncased``
model), quantizes it on random token ids from one random stream, evaluates on ids from another
stream, prints one row per hidden state (cosine similarity, max abs error, float max abs) and
writes a PNG plot of the per-state cosine and max abs error. Per layer it also prints the share
of saturated values of every op, the calibration and the worst channel. :func:`main` is the
command line (``tinyattn quantize-report PATH_OR_SYNTHETIC [--out FILE.png] [--seq-len N]
[--seed N] [--method M] [--engine]``); ``stress:NAME`` sources are the stress models of
:mod:`tinyattn.sw.stress_models`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from tinyattn.sw.mobilebert import CheckpointError, ConfigError, MobileBert, MobileBertConfig
from tinyattn.sw.quantize import METHODS, QuantizationError, QuantizedMobileBert

__all__ = [
    "CALIBRATION_SEQUENCES",
    "EVALUATION_SEQUENCES",
    "compare_states",
    "cosine_similarity",
    "load_source",
    "main",
    "quantize_report",
    "worst_channel",
]

PROG = "tinyattn quantize-report"
#: Sequences of ``seq_len`` random ids used to calibrate and to evaluate.
CALIBRATION_SEQUENCES = 4
EVALUATION_SEQUENCES = 2
#: Layers of the synthetic model (``google/mobilebert-uncased``).
SYNTHETIC_LAYERS = 24


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays seen as flat float64 vectors (1.0 if both are zero)."""
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    if den == 0.0:
        return 1.0 if not (x.any() or y.any()) else 0.0
    return float(x @ y / den)


def compare_states(
    reference: Sequence[np.ndarray], approx: Sequence[np.ndarray], names: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per hidden state: ``index``, ``name``, ``cosine``, ``max_abs_error``,
    ``float_max_abs`` (all over every element of the state, batch included), ``worst_channel``
    and ``worst_channel_error`` (:func:`worst_channel`)."""
    rows = []
    for i, (ref, app, name) in enumerate(zip(reference, approx, names, strict=True)):
        ref64 = np.asarray(ref, np.float64)
        channel, error = worst_channel(ref64, app)
        rows.append(
            {
                "index": i,
                "name": name,
                "cosine": cosine_similarity(ref64, app),
                "max_abs_error": float(np.abs(ref64 - np.asarray(app, np.float64)).max()),
                "float_max_abs": float(np.abs(ref64).max()),
                "worst_channel": channel,
                "worst_channel_error": error,
            }
        )
    return rows


def worst_channel(reference: np.ndarray, approx: np.ndarray) -> tuple[int, float]:
    """The channel (last axis) with the largest relative RMS error ``|a - r| / |r|``.

    Channels whose float RMS is below 1e-3 of the largest channel's are skipped (a relative
    error of an almost-zero channel says nothing). Returns ``(channel, relative error)``.
    """
    r = np.asarray(reference, np.float64).reshape(-1, np.shape(reference)[-1])
    a = np.asarray(approx, np.float64).reshape(r.shape)
    norm = np.linalg.norm(r, axis=0)
    err = np.linalg.norm(a - r, axis=0) / np.maximum(norm, 1e-300)
    err[norm < 1e-3 * norm.max(initial=0.0)] = 0.0
    c = int(np.argmax(err))
    return c, float(err[c])


def load_source(source: str, *, seed: int = 0, layers: int | None = None) -> MobileBert:
    """The float model for ``source``: a HF checkpoint folder, or ``"synthetic"``.

    ``"synthetic"`` is the full ``google/mobilebert-uncased`` geometry (24 layers, vocab 30522)
    with :meth:`MobileBert.synthetic` weights from ``seed``. ``layers`` keeps only the first
    ``layers`` encoder layers (of either): 1 up to the model's layer count, more is refused.
    Raises ``CheckpointError`` / ``ConfigError`` for a bad folder and ``ValueError`` (one
    line, naming ``--layers``) for a bad ``layers``; all three are ``ValueError``.
    """
    if source == "synthetic":
        _check_layers(layers, SYNTHETIC_LAYERS, "MobileBERT")
        cfg = MobileBertConfig.mobilebert_uncased(
            num_hidden_layers=SYNTHETIC_LAYERS if layers is None else layers
        )
        return MobileBert.synthetic(cfg, seed=seed)
    if source.startswith("stress:"):
        from tinyattn.sw.stress_models import STRESS_MODELS, stress_model

        name = source.removeprefix("stress:")
        if name not in STRESS_MODELS:
            raise ValueError(
                f"{source}: no such stress model; use stress:NAME with NAME one of "
                f"{', '.join(sorted(STRESS_MODELS))}"
            )
        _check_layers(layers, SYNTHETIC_LAYERS, "MobileBERT")
        return stress_model(
            layers=SYNTHETIC_LAYERS if layers is None else layers, seed=seed, spec=name
        )
    folder = Path(source)
    if not folder.is_dir():
        raise CheckpointError(
            f"{source}: no such checkpoint folder (give a folder with config.json and "
            "model.safetensors, or the word 'synthetic')"
        )
    # Refuse a bad --layers before reading the weights.
    n = MobileBertConfig.from_json(folder / "config.json").num_hidden_layers
    _check_layers(layers, n, f"the checkpoint {source}")
    model = MobileBert.from_pretrained(folder)
    if layers is None or layers == model.config.num_hidden_layers:
        return model
    cfg = dataclasses.replace(model.config, num_hidden_layers=layers)
    keep = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < layers
    }
    return MobileBert.from_tensors(cfg, keep)


def _check_layers(layers: int | None, available: int, what: str) -> None:
    """``ValueError`` unless ``layers`` is None or an int in ``1..available``."""
    if layers is None:
        return
    if isinstance(layers, bool) or not isinstance(layers, int | np.integer):
        raise ValueError(f"--layers {layers!r}: must be a whole number of layers, 1..{available}")
    if not 1 <= layers <= available:
        raise ValueError(f"--layers {layers}: {what} has {available} layers; use 1..{available}")


def _plot(rows: Sequence[dict[str, Any]], title: str, out_png: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    idx = [r["index"] for r in rows]
    fig = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(idx, [r["cosine"] for r in rows], "o-", color="tab:blue", label="cosine")
    ax1.axhline(0.99, color="tab:gray", linestyle=":", label="0.99 target")
    ax1.legend(loc="lower left")
    ax1.set_ylabel("cosine similarity")
    ax1.grid(True, alpha=0.3)
    ax1.set_title(title)
    ax2.plot(idx, [r["max_abs_error"] for r in rows], "o-", color="tab:red", label="max |error|")
    ax2.plot(idx, [r["float_max_abs"] for r in rows], "s--", color="tab:gray", label="max |float|")
    ax2.set_yscale("log")
    ax2.set_ylabel("absolute value")
    ax2.set_xlabel("hidden state (0 = embeddings, i = output of layer i)")
    ax2.grid(True, alpha=0.3, which="both")
    ax2.legend()
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)


def quantize_report(
    source: str,
    *,
    out_png: Path,
    seq_len: int = 128,
    seed: int = 0,
    layers: int | None = None,
    file: TextIO | None = None,
    method: str = "maxabs",
    engine: bool = False,
) -> list[dict[str, Any]]:
    """Quantize ``source``, compare every hidden state with the float model, plot, print.

    Parameters
    ----------
    source : HF checkpoint folder (``config.json`` + ``model.safetensors``), ``"synthetic"`` or
        ``"stress:NAME"`` (a preset of :data:`tinyattn.sw.stress_models.STRESS_MODELS`, 24
        layers unless ``layers``).
    out_png : the PNG to write (parent folders are created).
    seq_len : tokens per sequence (<= ``max_position_embeddings``).
    seed : synthetic weights and both id streams derive from it; calibration uses
        ``default_rng([seed, 1])``, evaluation ``default_rng([seed, 2])`` (never the same ids).
    layers : keep only the first ``layers`` encoder layers (default: all).
    file : where the table goes (default stdout).
    method : calibration method (:data:`tinyattn.sw.calibration.METHODS`).
    engine : quantize as an engine job holds the epilogue (one residual triple and one NoNorm
        shift per op: ``per_channel_epilogue=False`` then ``unify_epilogues``).

    Returns
    -------
    One dict per hidden state: ``index``, ``name``, ``cosine``, ``max_abs_error``,
    ``float_max_abs``, ``worst_channel``, ``worst_channel_error`` (over
    :data:`EVALUATION_SEQUENCES` sequences), ``saturation`` (op name -> share of its values
    saturated at some stage of its epilogue, :meth:`QuantizedMobileBert.saturation`, for the
    ops that produce the state: the embedding GEMM, or all ops of the layer) and
    ``calibration`` (one line: method, per-head logit scales, adjustments).
    """
    out = sys.stdout if file is None else file
    t0 = time.perf_counter()
    model = load_source(source, seed=seed, layers=layers)
    cfg = model.config
    if not 1 <= seq_len <= cfg.max_position_embeddings:
        raise ValueError(f"seq_len must be in 1..{cfg.max_position_embeddings}, got {seq_len}")
    calib = np.random.default_rng([seed, 1]).integers(
        0, cfg.vocab_size, (CALIBRATION_SEQUENCES, seq_len)
    )
    evaluation = np.random.default_rng([seed, 2]).integers(
        0, cfg.vocab_size, (EVALUATION_SEQUENCES, seq_len)
    )
    t1 = time.perf_counter()
    qmodel: QuantizedMobileBert = model.quantize(
        calib, method=method, per_channel_epilogue=not engine
    )
    if engine:
        from tinyattn.sw.lowering import unify_epilogues

        qmodel = unify_epilogues(qmodel)
    t2 = time.perf_counter()
    int_states = qmodel.forward(evaluation)
    t3 = time.perf_counter()
    approx = qmodel.dequantize(int_states)
    reference = model.forward(evaluation)
    names = ["embeddings"] + [f"layer {i + 1}" for i in range(cfg.num_hidden_layers)]
    rows = compare_states(reference, approx, names)
    _add_layer_details(rows, qmodel, evaluation)

    print(
        f"{source}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, bottleneck "
        f"{cfg.true_hidden_size}, {cfg.num_attention_heads} heads, vocab {cfg.vocab_size}",
        file=out,
    )
    print(
        f"calibration {CALIBRATION_SEQUENCES} x {seq_len} ids, evaluation "
        f"{EVALUATION_SEQUENCES} x {seq_len} ids (seed {seed}); load {t1 - t0:.2f} s, "
        f"quantize {t2 - t1:.2f} s, integer forward {(t3 - t2) / EVALUATION_SEQUENCES:.2f} s "
        "per sequence",
        file=out,
    )
    header = (
        f"{'index':>5}  {'state':<10}  {'cosine':>8}  {'max abs err':>11}  {'float max':>9}"
        "  worst channel (relative error)"
    )
    print(header, file=out)
    for r in rows:
        print(
            f"{r['index']:>5}  {r['name']:<10}  {r['cosine']:8.5f}  {r['max_abs_error']:11.4f}"
            f"  {r['float_max_abs']:9.4f}  {r['worst_channel']} "
            f"({r['worst_channel_error']:.2%})",
            file=out,
        )
        sat = ", ".join(f"{op} {_percent(share)}" for op, share in r["saturation"].items())
        for label, text in (("saturated", sat), ("calibration", r["calibration"])):
            print(
                textwrap.fill(
                    text,
                    width=100,
                    initial_indent=f"{'':7}{label}: ",
                    subsequent_indent=" " * 9,
                ),
                file=out,
            )
    title = (
        f"int8 MobileBERT vs float: {Path(source).name if source != 'synthetic' else source}, "
        f"{cfg.num_hidden_layers} layers, seq {seq_len}"
    )
    _plot(rows, title, Path(out_png))
    print(f"wrote {out_png}", file=out)
    return rows


def _percent(share: float) -> str:
    """``0`` or a share in percent with 2 significant digits (``0.0031%``)."""
    return "0" if share == 0 else f"{share * 100:.2g}%"


def _add_layer_details(
    rows: list[dict[str, Any]], qmodel: QuantizedMobileBert, ids: np.ndarray
) -> None:
    """Per hidden state: ``saturation`` of the ops that produce it and the ``calibration``."""
    sat = qmodel.saturation(ids)
    s = qmodel.settings
    method = s.method + (f" {s.percentile:g}" if s.method == "percentile" else "")
    epilogue = "per-channel epilogue" if s.per_channel_epilogue else "one epilogue per op"
    for r in rows:
        prefix = "embeddings" if r["index"] == 0 else f"layer{r['index'] - 1}."
        r["saturation"] = {
            (name.removeprefix(prefix) or name): shares["any"]
            for name, shares in sat.items()
            if name == prefix or (prefix.endswith(".") and name.startswith(prefix))
        }
        parts = [f"{method}, {epilogue}"]
        if r["index"] > 0:
            i = r["index"] - 1
            fits = [f for name, f in qmodel.logit_fits.items() if name.startswith(f"layer{i}.")]
            if fits:
                parts.append(
                    "logit scale per head "
                    + "/".join(f"{f.scale:g}" for f in fits)
                    + ", ITAMax gain "
                    + "/".join(f"{f.gain:.2f}" for f in fits)
                )
        for a in qmodel.adjustments:
            if a.op == prefix or (prefix.endswith(".") and a.op.startswith(prefix)):
                parts.append(f"{a.op} {a.what} ({a.channels}): {a.detail}")
        r["calibration"] = "; ".join(parts)


def _parser() -> argparse.ArgumentParser:
    # The command line's one-line errors and number checks (see tinyattn.cli).
    from tinyattn.cli import EXIT_STATUS, MAX_SEED, OneLineParser, positive_int, seed_int

    p = OneLineParser(
        prog=PROG,
        description="Quantize MobileBERT to the engine's integer ops and report the accuracy "
        "of every hidden state against the float model.",
        epilog=EXIT_STATUS,
    )
    p.add_argument(
        "source",
        metavar="PATH_OR_SYNTHETIC",
        help="HF checkpoint folder (config.json + model.safetensors), 'synthetic' "
        "(24-layer mobilebert-uncased geometry, random weights) or 'stress:NAME' (a stress "
        "model: residual, bottleneck, outliers, peaky, flat, heavy)",
    )
    p.add_argument(
        "--out",
        default="quantize-report.png",
        help="PNG plot to write (missing folders are made)",
    )
    p.add_argument(
        "--seq-len",
        type=positive_int,
        default=128,
        help="tokens per sequence, 1..the model's positions (128)",
    )
    p.add_argument(
        "--seed", type=seed_int, default=0, help=f"weights and ids seed, 0..{MAX_SEED} (0)"
    )
    p.add_argument("--layers", type=positive_int, default=None, help="keep only the first N layers")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="maxabs",
        help="calibration of the activation ranges (maxabs)",
    )
    p.add_argument(
        "--engine",
        action="store_true",
        help="one residual triple and one NoNorm shift per op, as an engine job holds them "
        "(what the deploy flow runs)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status (0 ok, 2 bad input with one line on stderr)."""
    from tinyattn.cli import UsageError, check_output

    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        out_png = check_output(args.out, "--out")  # before the model is loaded
        quantize_report(
            args.source,
            out_png=out_png,
            seq_len=args.seq_len,
            seed=args.seed,
            layers=args.layers,
            method=args.method,
            engine=args.engine,
        )
    except BrokenPipeError:  # stdout closed (`| head`): tinyattn.cli.main ends quietly
        raise
    except (
        UsageError,
        CheckpointError,
        ConfigError,
        QuantizationError,
        ValueError,
        OSError,
    ) as exc:
        msg = " ".join(str(exc).split())
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
