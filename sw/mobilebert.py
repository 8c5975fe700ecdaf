"""Float MobileBERT in pure NumPy, numerically faithful to Hugging Face ``MobileBertModel``.

The model mirrors ``transformers.models.mobilebert.modeling_mobilebert`` in eval mode (no
dropout): trigram embeddings, per-layer bottlenecks, a shared query/key bottleneck, a stack of
``num_feedforward_networks`` FFNs and ``NoNorm`` (``x * weight + bias``) or ``LayerNorm``.

Weights are kept as float32 arrays in HF ``nn.Linear`` layout (``weight`` is ``(out, in)``,
``y = x @ weight.T + bias``) and are exposed as a tree of frozen dataclasses
(:class:`EmbeddingWeights`, :class:`LayerWeights`, :class:`FFNWeights`, :class:`DenseNorm`,
:class:`Linear`, :class:`Norm`) that a quantizer can walk. The building blocks
(:func:`linear`, :func:`no_norm`, :func:`layer_norm`, :func:`attention`, :func:`embeddings_forward`,
:func:`layer_forward`) are module-level functions so that an integer model can mirror the
structure one block at a time.

Compute happens in ``MobileBert.compute_dtype`` (float32 by default; float64 is available
for a tighter reference) and outputs are float32. Both reproduce the float32 torch reference
of the 2-layer fixture to < 1e-6 max abs error.

Example
-------
>>> model = MobileBert.from_pretrained("tests/fixtures/mobilebert-2l")  # doctest: +SKIP
>>> states = model.forward(np.arange(16))  # doctest: +SKIP
>>> len(states), states[-1].shape  # doctest: +SKIP
(3, (16, 512))
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "REQUIRED_KEYS",
    "CheckpointError",
    "ConfigError",
    "DenseNorm",
    "EmbeddingWeights",
    "FFNWeights",
    "LayerWeights",
    "Linear",
    "MobileBert",
    "MobileBertConfig",
    "Norm",
    "attention",
    "batch_shaped",
    "check_attention_mask",
    "check_input_ids",
    "embeddings_forward",
    "expected_tensor_shapes",
    "gelu",
    "layer_forward",
    "layer_norm",
    "linear",
    "no_norm",
    "softmax",
]

#: Prefix used by HF task models (``MobileBertForMaskedLM`` ...) in front of the base model.
HF_PREFIX = "mobilebert."
#: Buffers that some older HF checkpoints store next to the weights; ignored when loading.
_IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
#: Additive mask value for masked keys (HF uses ``torch.finfo(float32).min``).
_MASK_VALUE = float(np.finfo(np.float32).min)


class ConfigError(ValueError):
    """Invalid or unreadable MobileBERT configuration.

    ``field`` names the offending ``config.json`` key (``None`` if the file itself is bad).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CheckpointError(ValueError):
    """A checkpoint does not match the configuration (missing, misshaped or bad tensor).

    ``tensor`` is the HF tensor name; ``expected`` / ``found`` are shapes (or ``None``).
    """

    def __init__(
        self,
        message: str,
        tensor: str | None = None,
        expected: tuple[int, ...] | None = None,
        found: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(message)
        self.tensor = tensor
        self.expected = expected
        self.found = found


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

_INT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "embedding_size",
    "intra_bottleneck_size",
    "num_attention_heads",
    "intermediate_size",
    "num_feedforward_networks",
    "num_hidden_layers",
    "max_position_embeddings",
    "type_vocab_size",
)
_BOOL_FIELDS = (
    "trigram_input",
    "use_bottleneck",
    "use_bottleneck_attention",
    "key_query_shared_bottleneck",
)
_NORMALIZATION_TYPES = ("no_norm", "layer_norm")
#: ``config.json`` keys that must be present: the geometry (every tensor shape and the layer
#: count) and the switches that decide which tensors exist and how they are wired. Hugging
#: Face writes all of them; a missing one must not silently become the HF default.
#: ``layer_norm_eps``, ``initializer_range``, ``true_hidden_size`` (derived) and
#: ``model_type`` may be absent.
REQUIRED_KEYS = (
    *_INT_FIELDS,
    "normalization_type",
    "hidden_act",
    *_BOOL_FIELDS,
)


@dataclass(frozen=True)
class MobileBertConfig:
    """MobileBERT hyper-parameters, same names and defaults as HF ``MobileBertConfig``.

    Defaults are the ``google/mobilebert-uncased`` geometry. ``true_hidden_size`` is derived
    exactly as HF does (``intra_bottleneck_size`` if ``use_bottleneck`` else ``hidden_size``);
    a value given explicitly must agree with it. Every field is validated on construction and
    a :class:`ConfigError` naming the field is raised on a bad value.
    """

    vocab_size: int = 30522
    hidden_size: int = 512
    embedding_size: int = 128
    intra_bottleneck_size: int = 128
    num_attention_heads: int = 4
    intermediate_size: int = 512
    num_feedforward_networks: int = 4
    num_hidden_layers: int = 24
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    normalization_type: str = "no_norm"
    hidden_act: str = "relu"
    trigram_input: bool = True
    use_bottleneck: bool = True
    use_bottleneck_attention: bool = False
    key_query_shared_bottleneck: bool = True
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    true_hidden_size: int | None = None

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ConfigError(f"{name} must be an integer, got {value!r}", name)
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}", name)
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ConfigError(f"{name} must be a boolean, got {getattr(self, name)!r}", name)
        if (
            not isinstance(self.normalization_type, str)
            or self.normalization_type not in _NORMALIZATION_TYPES
        ):
            raise ConfigError(
                f"normalization_type must be one of {_NORMALIZATION_TYPES}, "
                f"got {self.normalization_type!r}",
                "normalization_type",
            )
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"hidden_act must be one of {sorted(ACTIVATIONS)}, got {self.hidden_act!r}",
                "hidden_act",
            )
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}", name)
        derived = self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size
        if self.true_hidden_size is None:
            object.__setattr__(self, "true_hidden_size", derived)
        elif self.true_hidden_size != derived:
            raise ConfigError(
                f"true_hidden_size={self.true_hidden_size!r} disagrees with the HF derivation "
                f"({'intra_bottleneck_size' if self.use_bottleneck else 'hidden_size'}"
                f" = {derived})",
                "true_hidden_size",
            )
        if self.true_hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} does not divide "
                f"true_hidden_size={self.true_hidden_size}",
                "num_attention_heads",
            )
        if (
            self.use_bottleneck
            and not self.use_bottleneck_attention
            and not self.key_query_shared_bottleneck
            and self.hidden_size != self.true_hidden_size
        ):
            # HF then feeds hidden_states (hidden_size) to query/key Linear(true_hidden_size).
            raise ConfigError(
                "key_query_shared_bottleneck=False with use_bottleneck_attention=False needs "
                "hidden_size == intra_bottleneck_size (HF would fail at run time)",
                "key_query_shared_bottleneck",
            )

    # ---- derived geometry ------------------------------------------------------------------

    @property
    def head_size(self) -> int:
        """Per-head width: ``true_hidden_size // num_attention_heads``."""
        return self.true_hidden_size // self.num_attention_heads

    @property
    def embedded_input_size(self) -> int:
        """Input width of ``embedding_transformation`` (``3 * embedding_size`` for trigram)."""
        return self.embedding_size * (3 if self.trigram_input else 1)

    # ---- constructors ----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> MobileBertConfig:
        """Build from a HF ``config.json`` dict; unknown keys are ignored.

        Every key of :data:`REQUIRED_KEYS` must be present (no silent HF default for the
        geometry). Raises :class:`ConfigError` (naming the field, and ``source``, the file,
        for a missing key) on a missing key, a bad value or a wrong ``model_type``.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source} must be a JSON object, got {type(d).__name__}")
        model_type = d.get("model_type", "mobilebert")
        if model_type != "mobilebert":
            raise ConfigError(f"model_type must be 'mobilebert', got {model_type!r}", "model_type")
        for key in REQUIRED_KEYS:
            if key not in d:
                example = getattr(cls, key)  # the google/mobilebert-uncased value
                raise ConfigError(
                    f"{source}: required key {key!r} is missing; add it with the value this "
                    f"checkpoint was trained with (google/mobilebert-uncased: {example!r})",
                    key,
                )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, path: str | Path) -> MobileBertConfig:
        """Read a HF ``config.json`` (``path`` may also be the folder containing it)."""
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read MobileBERT config {p}: {exc}") from exc
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"cannot parse MobileBERT config {p}: {exc}") from exc
        return cls.from_dict(d, source=str(p))

    @classmethod
    def mobilebert_uncased(cls, **overrides: Any) -> MobileBertConfig:
        """``google/mobilebert-uncased`` geometry (24 layers, vocab 30522), with overrides.

        E.g. ``MobileBertConfig.mobilebert_uncased(num_hidden_layers=2, vocab_size=512)``.
        """
        return cls(**overrides)

    def to_dict(self) -> dict[str, Any]:
        """HF-style ``config.json`` dict (round-trips through :meth:`from_dict`)."""
        d: dict[str, Any] = {"model_type": "mobilebert", "architectures": ["MobileBertModel"]}
        d.update(dataclasses.asdict(self))
        return d


# --------------------------------------------------------------------------------------------
# Building blocks (operate in the dtype of their input ``x``)
# --------------------------------------------------------------------------------------------


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """HF ``nn.Linear``: ``x @ weight.T + bias``.

    ``x`` is ``(..., in)``, ``weight`` ``(out, in)``, ``bias`` ``(out,)``; returns ``(..., out)``
    in ``x.dtype`` (weights are cast to it).
    """
    y = x @ weight.astype(x.dtype, copy=False).T
    if bias is not None:
        y += bias.astype(x.dtype, copy=False)
    return y


def no_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """MobileBERT ``NoNorm``: element-wise affine ``x * weight + bias`` over the last axis."""
    return x * weight.astype(x.dtype, copy=False) + bias.astype(x.dtype, copy=False)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """``nn.LayerNorm`` over the last axis (biased variance, ``eps`` inside the sqrt)."""
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    y = centered / np.sqrt(var + x.dtype.type(eps))
    return y * weight.astype(x.dtype, copy=False) + bias.astype(x.dtype, copy=False)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7 (numpy has no erf; scipy is not a dep).
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return s * (1.0 - poly * np.exp(-a * a))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU as HF ``"gelu"``; erf approximated to 1.5e-7 absolute."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


#: HF ``ACT2FN`` subset: name -> element-wise function.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0),
    "gelu": gelu,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


def attention(
    query: np.ndarray,
    key: np.ndarray,
    value: np.ndarray,
    num_heads: int,
    attention_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Multi-head scaled dot-product attention on already projected tensors.

    Parameters
    ----------
    query, key, value : ``(B, S, num_heads * head_size)`` arrays.
    num_heads : number of heads; ``head_size`` is the last axis divided by it.
    attention_mask : optional ``(B, S)`` array of 1 (attend) / 0 (masked key), HF style.

    Returns
    -------
    ``(B, S, num_heads * head_size)`` context, heads concatenated in HF order.
    """
    B, S, D = query.shape
    hd = D // num_heads
    if attention_mask is not None:
        attention_mask = check_attention_mask(attention_mask, (B, key.shape[1]))

    def split(t: np.ndarray) -> np.ndarray:  # (B, S, D) -> (B, h, S, hd)
        return t.reshape(t.shape[0], t.shape[1], num_heads, hd).transpose(0, 2, 1, 3)

    q, k, v = split(query), split(key), split(value)
    scores = (q @ k.transpose(0, 1, 3, 2)) * query.dtype.type(hd**-0.5)
    if attention_mask is not None:
        mask = np.asarray(attention_mask).astype(query.dtype)
        scores = scores + ((1.0 - mask) * _MASK_VALUE)[:, None, None, :]
    probs = softmax(scores, axis=-1)
    context = probs @ v  # (B, h, S, hd)
    return context.transpose(0, 2, 1, 3).reshape(B, S, D)


# --------------------------------------------------------------------------------------------
# Weight containers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Linear:
    """HF ``nn.Linear`` weights: ``weight`` ``(out, in)`` float32, ``bias`` ``(out,)``."""

    weight: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(..., in) -> (..., out)`` in ``x.dtype``."""
        return linear(x, self.weight, self.bias)


@dataclass(frozen=True)
class Norm:
    """A ``NoNorm`` (``kind="no_norm"``) or ``nn.LayerNorm`` (``kind="layer_norm"``).

    ``weight``/``bias`` are ``(features,)`` float32; ``eps`` is the LayerNorm epsilon actually
    used by HF at this site (ignored by ``NoNorm``).
    """

    weight: np.ndarray
    bias: np.ndarray
    kind: str
    eps: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalize over the last axis, in ``x.dtype``."""
        if self.kind == "no_norm":
            return no_norm(x, self.weight, self.bias)
        return layer_norm(x, self.weight, self.bias, self.eps)


@dataclass(frozen=True)
class DenseNorm:
    """``norm(dense(x) + residual)``: the MobileBERT dense / residual / norm pattern.

    Used for the bottlenecks (no residual), attention output, FFN outputs, the layer output and
    the output bottleneck.
    """

    dense: Linear
    norm: Norm

    def __call__(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        """``(..., in) -> (..., out)``; ``residual`` (``(..., out)``) is added before the norm."""
        y = self.dense(x)
        if residual is not None:
            y = y + residual.astype(y.dtype, copy=False)
        return self.norm(y)


@dataclass(frozen=True)
class EmbeddingWeights:
    """``embeddings.*``: word ``(V, E)``, position ``(P, H)``, token_type ``(T, H)``.

    ``transformation`` is ``embedding_transformation`` (``(H, 3E)`` with trigram input; HF
    applies it only if ``trigram_input`` or ``E != H``) and ``norm`` is ``embeddings.LayerNorm``.
    """

    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray
    transformation: Linear
    norm: Norm


@dataclass(frozen=True)
class FFNWeights:
    """One of the ``num_feedforward_networks - 1`` stacked ``ffn.{j}`` blocks.

    ``intermediate``: ``Linear(true_hidden -> intermediate)`` followed by ``hidden_act``;
    ``output``: ``Linear(intermediate -> true_hidden)`` + residual + norm.
    """

    intermediate: Linear
    output: DenseNorm


@dataclass(frozen=True)
class LayerWeights:
    """``encoder.layer.{i}``.

    Attributes (``H`` hidden_size, ``T`` true_hidden_size, ``I`` intermediate_size)
    ----------------------------------------------------------------------------------
    bottleneck_input : ``bottleneck.input`` ``H -> T`` + norm, or ``None`` without bottleneck.
    bottleneck_attention : ``bottleneck.attention`` ``H -> T`` + norm (shared q/k input), or
        ``None`` unless ``use_bottleneck and key_query_shared_bottleneck``.
    query, key : ``attention.self.{query,key}`` ``T -> T``.
    value : ``attention.self.value`` ``H -> T`` (``T -> T`` with ``use_bottleneck_attention``).
    attention_output : ``attention.output`` dense ``T -> T`` + residual(layer_input) + norm.
    ffn : the stacked FFN blocks ``ffn.0 .. ffn.{F-2}``.
    intermediate : ``intermediate.dense`` ``T -> I`` (+ activation).
    output : ``output`` dense ``I -> T`` + residual + norm.
    output_bottleneck : ``output.bottleneck`` dense ``T -> H`` + residual(layer hidden_states)
        + norm, or ``None`` without bottleneck.
    """

    bottleneck_input: DenseNorm | None
    bottleneck_attention: DenseNorm | None
    query: Linear
    key: Linear
    value: Linear
    attention_output: DenseNorm
    ffn: tuple[FFNWeights, ...]
    intermediate: Linear
    output: DenseNorm
    output_bottleneck: DenseNorm | None


# A "getter" supplies the tensor for an HF name and an expected shape.
_Getter = Callable[[str, tuple[int, ...]], np.ndarray]


def _build_weights(
    cfg: MobileBertConfig, get: _Getter
) -> tuple[EmbeddingWeights, tuple[LayerWeights, ...]]:
    """Build the weight tree, asking ``get(hf_name, shape)`` for every tensor HF defines."""
    H, E, T, I = cfg.hidden_size, cfg.embedding_size, cfg.true_hidden_size, cfg.intermediate_size
    kind, eps = cfg.normalization_type, float(cfg.layer_norm_eps)
    # HF quirk: embeddings.LayerNorm and MobileBertOutput.LayerNorm are built without
    # eps=config.layer_norm_eps, so as nn.LayerNorm they use torch's default 1e-5.
    torch_default_eps = 1e-5

    def lin(name: str, n_in: int, n_out: int) -> Linear:
        return Linear(get(f"{name}.weight", (n_out, n_in)), get(f"{name}.bias", (n_out,)))

    def norm(name: str, n: int, e: float = eps) -> Norm:
        return Norm(get(f"{name}.weight", (n,)), get(f"{name}.bias", (n,)), kind, e)

    def dense_norm(name: str, n_in: int, n_out: int, e: float = eps) -> DenseNorm:
        return DenseNorm(lin(f"{name}.dense", n_in, n_out), norm(f"{name}.LayerNorm", n_out, e))

    emb = EmbeddingWeights(
        word=get("embeddings.word_embeddings.weight", (cfg.vocab_size, E)),
        position=get("embeddings.position_embeddings.weight", (cfg.max_position_embeddings, H)),
        token_type=get("embeddings.token_type_embeddings.weight", (cfg.type_vocab_size, H)),
        transformation=lin("embeddings.embedding_transformation", cfg.embedded_input_size, H),
        norm=norm("embeddings.LayerNorm", H, torch_default_eps),
    )
    layers = []
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}"
        b_in = b_att = out_b = None
        if cfg.use_bottleneck:
            b_in = dense_norm(f"{p}.bottleneck.input", H, T)
            if cfg.key_query_shared_bottleneck:  # created by HF even if use_bottleneck_attention
                b_att = dense_norm(f"{p}.bottleneck.attention", H, T)
        v_in = T if cfg.use_bottleneck_attention else H
        query = lin(f"{p}.attention.self.query", T, T)
        key = lin(f"{p}.attention.self.key", T, T)
        value = lin(f"{p}.attention.self.value", v_in, T)
        att_out = dense_norm(f"{p}.attention.output", T, T)
        ffn = tuple(
            FFNWeights(
                intermediate=lin(f"{p}.ffn.{j}.intermediate.dense", T, I),
                output=dense_norm(f"{p}.ffn.{j}.output", I, T),
            )
            for j in range(cfg.num_feedforward_networks - 1)
        )
        inter = lin(f"{p}.intermediate.dense", T, I)
        output = dense_norm(f"{p}.output", I, T, torch_default_eps)
        if cfg.use_bottleneck:
            out_b = dense_norm(f"{p}.output.bottleneck", T, H)
        layers.append(
            LayerWeights(b_in, b_att, query, key, value, att_out, ffn, inter, output, out_b)
        )
    return emb, tuple(layers)


def expected_tensor_shapes(cfg: MobileBertConfig) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name (no ``mobilebert.`` prefix) the base model needs, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, shape: tuple[int, ...]) -> np.ndarray:
        shapes[name] = shape
        return np.zeros(0, np.float32)

    _build_weights(cfg, record)
    return shapes


# --------------------------------------------------------------------------------------------
# Forward pieces
# --------------------------------------------------------------------------------------------


def batch_shaped(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    """``value`` as a ``(B, S)`` array: ``(B, S)`` itself, or ``(S,)`` / ``(1, S)`` shared by
    every sequence (a read-only broadcast view). ``ValueError`` naming both shapes otherwise."""
    arr = np.asarray(value)
    B, S = shape
    if arr.shape not in ((B, S), (1, S), (S,)):
        raise ValueError(
            f"{name} must have shape (B, S) = ({B}, {S}) like input_ids (or (S,) for every "
            f"sequence), got {arr.shape}"
        )
    return np.broadcast_to(arr.reshape(-1, S), shape)


def check_input_ids(
    cfg: MobileBertConfig, input_ids: Any, token_type_ids: Any = None, name: str = "input_ids"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate token ids against ``cfg``; returns ``(B, S)`` ids and token types (or None).

    Raises ``ValueError`` naming the offending shape, dtype or range (``name`` is what the
    caller calls the ids, e.g. ``calibration_ids``).
    """
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or 0 in ids.shape or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"{name} must be a non-empty (S,) or (B, S) int array, got "
            f"shape {np.shape(input_ids)} dtype {ids.dtype}"
        )
    if ids.shape[1] > cfg.max_position_embeddings:
        raise ValueError(
            f"{name}: sequence length {ids.shape[1]} > max_position_embeddings "
            f"{cfg.max_position_embeddings}"
        )
    if ids.min() < 0 or ids.max() >= cfg.vocab_size:
        raise ValueError(
            f"{name} out of range [0, {cfg.vocab_size}): found {ids.min()}..{ids.max()}"
        )
    tt = None
    if token_type_ids is not None:
        tt = batch_shaped("token_type_ids", token_type_ids, ids.shape)
        if not np.issubdtype(tt.dtype, np.integer):
            raise ValueError(f"token_type_ids must be integers, got dtype {tt.dtype}")
        if tt.min() < 0 or tt.max() >= cfg.type_vocab_size:
            raise ValueError(
                f"token_type_ids out of range [0, {cfg.type_vocab_size}): found "
                f"{tt.min()}..{tt.max()}"
            )
    return ids, tt


def check_attention_mask(attention_mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """A ``(B, S)`` 0/1 mask (``(S,)`` / ``(1, S)`` shared by every sequence); ``ValueError``
    naming the expected and given shape, or the values, otherwise."""
    mask = batch_shaped("attention_mask", attention_mask, shape)
    if mask.dtype == object or not np.isin(mask, (0, 1)).all():
        raise ValueError(
            "attention_mask must hold 0 (masked key) or 1 (attend), got values "
            f"{np.unique(mask)[:8].tolist()}"
        )
    return mask


def embeddings_forward(
    emb: EmbeddingWeights,
    cfg: MobileBertConfig,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray | None = None,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """``MobileBertEmbeddings``: ``(B, S)`` int ids -> ``(B, S, hidden_size)`` in ``dtype``.

    With trigram input the word embeddings ``e`` become ``[e[t+1], e[t], e[t-1]]`` (zero padded
    at the sequence ends) before ``embedding_transformation``; then position (``arange(S)``) and
    token type embeddings are added and the embedding norm is applied.
    """
    ids = np.asarray(input_ids)
    B, S = ids.shape
    x = emb.word[ids].astype(dtype)  # (B, S, E)
    if cfg.trigram_input:
        pad = np.zeros((B, 1, x.shape[-1]), dtype=x.dtype)
        nxt = np.concatenate([x[:, 1:], pad], axis=1)
        prev = np.concatenate([pad, x[:, :-1]], axis=1)
        x = np.concatenate([nxt, x, prev], axis=-1)
    if cfg.trigram_input or cfg.embedding_size != cfg.hidden_size:
        x = emb.transformation(x)
    tt = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
    x = x + emb.position[:S].astype(dtype)[None] + emb.token_type[tt].astype(dtype)
    return emb.norm(x)


def layer_forward(
    layer: LayerWeights,
    cfg: MobileBertConfig,
    hidden_states: np.ndarray,
    attention_mask: np.ndarray | None = None,
) -> np.ndarray:
    """``MobileBertLayer`` in eval mode: ``(B, S, H) -> (B, S, H)`` in ``hidden_states.dtype``.

    ``attention_mask`` is an optional ``(B, S)`` 0/1 array (``None`` = attend everywhere).
    """
    act = ACTIVATIONS[cfg.hidden_act]
    if cfg.use_bottleneck:
        layer_input = layer.bottleneck_input(hidden_states)
        if cfg.use_bottleneck_attention:
            q_in = k_in = v_in = layer_input
        elif cfg.key_query_shared_bottleneck:
            q_in = k_in = layer.bottleneck_attention(hidden_states)
            v_in = hidden_states  # value sees the un-bottlenecked layer input
        else:
            q_in = k_in = v_in = hidden_states
    else:
        q_in = k_in = v_in = layer_input = hidden_states
    context = attention(
        layer.query(q_in),
        layer.key(k_in),
        layer.value(v_in),
        cfg.num_attention_heads,
        attention_mask,
    )
    x = layer.attention_output(context, layer_input)
    for f in layer.ffn:
        x = f.output(act(f.intermediate(x)), x)
    out = layer.output(act(layer.intermediate(x)), x)
    if cfg.use_bottleneck:
        out = layer.output_bottleneck(out, hidden_states)
    return out


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class MobileBert:
    """Float MobileBERT (HF ``MobileBertModel`` encoder, no pooler).

    Attributes
    ----------
    config : :class:`MobileBertConfig`.
    embeddings : :class:`EmbeddingWeights`.
    layers : tuple of :class:`LayerWeights`, one per encoder layer.
    compute_dtype : dtype used inside :meth:`forward` (float32 default, float64 allowed).

    Build with :meth:`from_pretrained`, :meth:`synthetic` or :meth:`from_tensors`.
    """

    def __init__(
        self,
        config: MobileBertConfig,
        tensors: Mapping[str, np.ndarray],
        compute_dtype: np.dtype | type = np.float32,
    ) -> None:
        """Prefer :meth:`from_tensors`; ``tensors`` must already be checked float32 arrays."""
        self.config = config
        self.compute_dtype = np.dtype(compute_dtype)
        self._tensors = dict(tensors)
        self.embeddings, self.layers = _build_weights(config, lambda n, s: self._tensors[n])

    # ---- constructors ----------------------------------------------------------------------

    @classmethod
    def from_tensors(
        cls,
        config: MobileBertConfig,
        tensors: Mapping[str, np.ndarray],
        compute_dtype: np.dtype | type = np.float32,
    ) -> MobileBert:
        """Build from a HF state dict (names with or without the ``mobilebert.`` prefix).

        Floating tensors are converted to float32. Pooler / head tensors (and any name outside
        ``embeddings.*`` / ``encoder.*``) are ignored.

        Raises
        ------
        CheckpointError
            A required tensor is missing, has the wrong shape or a non-float dtype, or an
            ``embeddings.*`` / ``encoder.*`` tensor is unknown to this configuration (e.g.
            more layers in the checkpoint than ``num_hidden_layers``).
        """
        if any(k.startswith(HF_PREFIX) for k in tensors):
            base = {k[len(HF_PREFIX) :]: v for k, v in tensors.items() if k.startswith(HF_PREFIX)}
        else:
            base = dict(tensors)
        shapes = expected_tensor_shapes(config)
        for name in sorted(base):
            if name.startswith(("embeddings.", "encoder.")) and name not in shapes:
                if name in _IGNORED_BUFFERS:
                    continue
                raise CheckpointError(
                    f"unexpected tensor {name!r} (shape {tuple(base[name].shape)}) is not part "
                    f"of a MobileBertModel with this config (num_hidden_layers="
                    f"{config.num_hidden_layers}, num_feedforward_networks="
                    f"{config.num_feedforward_networks})",
                    tensor=name,
                    found=tuple(base[name].shape),
                )
        checked: dict[str, np.ndarray] = {}
        for name, shape in shapes.items():
            if name not in base:
                raise CheckpointError(
                    f"missing tensor {name!r}: expected shape {shape}, found none",
                    tensor=name,
                    expected=shape,
                )
            arr = np.asarray(base[name])
            if tuple(arr.shape) != shape:
                raise CheckpointError(
                    f"tensor {name!r} has shape {tuple(arr.shape)}, expected {shape}",
                    tensor=name,
                    expected=shape,
                    found=tuple(arr.shape),
                )
            if not np.issubdtype(arr.dtype, np.floating):
                raise CheckpointError(
                    f"tensor {name!r} has dtype {arr.dtype}, expected a float dtype",
                    tensor=name,
                    expected=shape,
                    found=tuple(arr.shape),
                )
            checked[name] = np.ascontiguousarray(arr, dtype=np.float32)
        return cls(config, checked, compute_dtype)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, compute_dtype: np.dtype | type = np.float32
    ) -> MobileBert:
        """Load a HF folder holding ``config.json`` and ``model.safetensors`` (no torch).

        Raises :class:`ConfigError` for a missing / unparsable / invalid ``config.json`` and
        :class:`CheckpointError` for a missing or unreadable ``model.safetensors`` or a tensor
        that is missing or misshaped (see :meth:`from_tensors`).
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = Path(path)
        if not folder.is_dir():
            raise CheckpointError(f"{folder} is not a directory with config.json and weights")
        config = MobileBertConfig.from_json(folder / "config.json")
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"missing weights file {weights}")
        try:
            tensors = load_file(str(weights))
        except (SafetensorError, OSError, TypeError, ValueError) as exc:
            raise CheckpointError(f"cannot read {weights}: {exc}") from exc
        return cls.from_tensors(config, tensors, compute_dtype)

    @classmethod
    def synthetic(
        cls,
        config: MobileBertConfig | None = None,
        seed: int = 0,
        std: float | None = None,
        compute_dtype: np.dtype | type = np.float32,
    ) -> MobileBert:
        """Random weights from ``numpy.random.default_rng(seed)``, any geometry.

        Dense weights, biases and embeddings are ``N(0, std)`` (``std`` defaults to
        ``config.initializer_range``, 0.02); norm weights are ``1 + N(0, 0.02)`` and norm biases
        ``N(0, 0.02)``, which keeps activations O(1) through 24 NoNorm layers.
        ``config=None`` means :meth:`MobileBertConfig.mobilebert_uncased`.
        """
        cfg = MobileBertConfig.mobilebert_uncased() if config is None else config
        s = float(cfg.initializer_range if std is None else std)
        rng = np.random.default_rng(seed)
        tensors: dict[str, np.ndarray] = {}

        def gen(name: str, shape: tuple[int, ...]) -> np.ndarray:
            if ".LayerNorm." in name and name.endswith(".weight"):
                arr = 1.0 + 0.02 * rng.standard_normal(shape)
            elif ".LayerNorm." in name:
                arr = 0.02 * rng.standard_normal(shape)
            else:
                arr = s * rng.standard_normal(shape)
            tensors[name] = arr.astype(np.float32)
            return tensors[name]

        _build_weights(cfg, gen)
        return cls(cfg, tensors, compute_dtype)

    # ---- access ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """HF-named float32 tensors (no prefix), e.g. for ``safetensors.numpy.save_file``."""
        return dict(self._tensors)

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` + ``model.safetensors`` (float32) loadable by HF and by us."""
        from safetensors.numpy import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        save_file(self.state_dict(), str(folder / "model.safetensors"))

    @property
    def num_parameters(self) -> int:
        """Number of scalar parameters (base model, no pooler)."""
        return int(sum(t.size for t in self._tensors.values()))

    # ---- inference -------------------------------------------------------------------------

    def forward_batch(
        self,
        input_ids: np.ndarray,
        token_type_ids: np.ndarray | None = None,
        attention_mask: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Like :meth:`forward` but always returns ``(B, S, hidden_size)`` float32 arrays."""
        ids, tt = check_input_ids(self.config, input_ids, token_type_ids)
        mask = None if attention_mask is None else check_attention_mask(attention_mask, ids.shape)
        h = embeddings_forward(self.embeddings, self.config, ids, tt, self.compute_dtype)
        states = [h.astype(np.float32)]
        for layer in self.layers:
            h = layer_forward(layer, self.config, h, mask)
            states.append(h.astype(np.float32))
        return states

    def forward(
        self,
        input_ids: np.ndarray,
        token_type_ids: np.ndarray | None = None,
        attention_mask: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """All hidden states, as HF ``output_hidden_states=True`` (eval mode).

        Parameters
        ----------
        input_ids : ``(S,)`` or ``(B, S)`` ints in ``[0, vocab_size)``, ``S <= max_position``.
        token_type_ids : same shape (or ``(S,)``), ints in ``[0, type_vocab_size)``; default 0.
        attention_mask : optional 0/1 mask of the same shape; default all ones.

        Returns
        -------
        ``num_hidden_layers + 1`` float32 arrays: the embedding output then each layer output,
        each ``(S, hidden_size)`` for a ``(S,)`` or ``(1, S)`` input and ``(B, S, hidden_size)``
        for ``B > 1``.
        """
        states = self.forward_batch(input_ids, token_type_ids, attention_mask)
        if states[0].shape[0] == 1:
            states = [s[0] for s in states]
        return states

    __call__ = forward

    def last_hidden_state(self, input_ids: np.ndarray, **kwargs: Any) -> np.ndarray:
        """Only the final layer output (same shapes as one :meth:`forward` entry)."""
        return self.forward(input_ids, **kwargs)[-1]

    def quantize(self, calibration_ids: np.ndarray, **kw: Any) -> Any:
        """Post-training int8 quantization: a ``tinyattn.sw.quantize.QuantizedMobileBert``.

        ``calibration_ids`` ``(S,)`` or ``(B, S)``; keyword arguments go to
        :func:`tinyattn.sw.quantize.quantize_mobilebert` (see ``docs/quantization.md``).
        """
        from tinyattn.sw.quantize import quantize_mobilebert

        return quantize_mobilebert(self, calibration_ids, **kw)
