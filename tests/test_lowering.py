"""Lowering of the integer MobileBERT to gathers and engine jobs, run on the golden engine."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
from models import quantize_for_engine, small_config, synthetic_for_engine

from tinyattn.config import ClusterConfig, EngineConfig
from tinyattn.hw.job import (
    FLAG_AFFINE,
    FLAG_PER_HEAD,
    FLAG_PER_ROW,
    FLAG_RELU,
    FLAG_RESIDUAL,
    Op,
    unpack_head_params,
)
from tinyattn.sw.intops import GemmOp, QuantizedLayer, Requant
from tinyattn.sw.lowering import (
    EngineJob,
    Fill,
    Gather,
    LoweringError,
    Placement,
    Program,
    execute,
    input_values,
    lower,
    unify_epilogues,
)
from tinyattn.sw.mobilebert import MobileBert
from tinyattn.sw.quantize import QuantizedMobileBert
from tinyattn.sw.report import cosine_similarity

CFG = ClusterConfig()


@pytest.fixture(scope="module")
def qmodel(model: MobileBert, calib_ids: np.ndarray) -> QuantizedMobileBert:
    """The fixture quantized so that every epilogue parameter is one per job (see docs)."""
    return quantize_for_engine(model, calib_ids)


@pytest.fixture(scope="module")
def synthetic2() -> QuantizedMobileBert:
    """The first 2 layers of the 24-layer mobilebert-uncased geometry, quantized whole."""
    return synthetic_for_engine(2)


def _check_bit_exact(q: QuantizedMobileBert, seq_len: int, seed: int) -> Program:
    rng = np.random.default_rng([seed, seq_len])
    ids = rng.integers(0, q.config.vocab_size, seq_len)
    types = rng.integers(0, q.config.type_vocab_size, seq_len)
    program = lower(q, CFG, seq_len)
    got = execute(program, CFG, ids, types)
    want = q.forward(ids, types)
    assert len(got) == len(want) == len(q.state_names)
    for i, (name, g, (w, _)) in enumerate(zip(q.state_names, got, want, strict=True)):
        assert g.dtype == np.int8 and g.shape == w.shape, f"seed {seed}: state {i} ({name})"
        bad = int(np.count_nonzero(g != w))
        assert bad == 0, f"seed {seed}, S={seq_len}: state {i} ({name}) differs in {bad} values"
    return program


# ---- bit-exact against QuantizedMobileBert.forward ---------------------------------------------


@pytest.mark.parametrize("seq_len", [128, 64])
def test_fixture_matches_forward(qmodel: QuantizedMobileBert, seq_len: int, seed: int) -> None:
    _check_bit_exact(qmodel, seq_len, seed)


def test_synthetic_geometry_first_two_layers(synthetic2: QuantizedMobileBert, seed: int) -> None:
    assert synthetic2.config.vocab_size == 30522
    _check_bit_exact(synthetic2, 128, seed)


@pytest.mark.slow
def test_synthetic_24_layers(seed: int) -> None:
    program = _check_bit_exact(synthetic_for_engine(), 128, seed)
    assert len(program.jobs()) == 1 + 24 * 16


@pytest.mark.parametrize(
    "overrides",
    [{}, {"trigram_input": False}, {"use_bottleneck": False}, {"use_bottleneck_attention": True}],
    ids=["default", "no-trigram", "no-bottleneck", "bottleneck-attention"],
)
def test_other_topologies_match_forward(overrides: dict[str, bool], seed: int) -> None:
    """Small models (head dims 8 and 16) with the rewired bottlenecks of docs/quantization.md."""
    config = small_config(true_hidden_size=None, **overrides)
    model = MobileBert.synthetic(config, seed=3)
    calib = np.random.default_rng(0).integers(0, config.vocab_size, (4, 16))
    _check_bit_exact(quantize_for_engine(model, calib), 16, seed)


def test_unified_epilogues_keep_the_accuracy(
    model: MobileBert, qmodel: QuantizedMobileBert
) -> None:
    """One affine shift per op costs nothing visible: cosine to the float model stays > 0.995."""
    ids = np.random.default_rng(200).integers(0, 512, (2, 128))
    floats = model.forward(ids)
    for i, (f, d) in enumerate(zip(floats, qmodel.forward_float(ids), strict=True)):
        assert cosine_similarity(f, d) > 0.995, f"state {i}"


@pytest.mark.xfail(
    raises=LoweringError,
    strict=True,
    reason="the default quantization picks residual multipliers per channel; a GEMM job has "
    "one (needs a quantizer or engine change, docs/deploy.md)",
)
def test_default_quantization_lowers(model: MobileBert, calib_ids: np.ndarray) -> None:
    lower(model.quantize(calib_ids), CFG, 128)


# ---- the program ---------------------------------------------------------------------------


def test_jobs_and_macs_per_layer_match_the_mapping(
    qmodel: QuantizedMobileBert, synthetic2: QuantizedMobileBert
) -> None:
    """docs/mobilebert-mapping.md: 15 GEMMs + 1 ATTENTION (all heads) and 111.2 M MACs per
    layer at S=128."""
    for q in (qmodel, synthetic2):
        c = q.config
        S, E, B, I = 128, c.hidden_size, c.intra_bottleneck_size, c.intermediate_size
        H = c.num_attention_heads
        D = c.true_hidden_size // H if c.true_hidden_size else B // H
        program = lower(q, CFG, S)
        # The doc's table, row by row.
        expected = (
            3 * S * E * B  # bottlenecks (1, 2, 16)
            + 2 * S * B * B  # Q, K (3, 4)
            + B * S * E  # Vᵀ (5)
            + H * 2 * S * S * D  # attention (6)
            + S * B * B  # attention output (7)
            + c.num_feedforward_networks * 2 * S * B * I  # FFNs (8-15)
        )
        for layer in q.layers:
            jobs = [j for j in program.jobs() if j.block == layer.name]
            assert sum(j.kind == "gemm" for j in jobs) == 15
            assert sum(j.kind == "attention" for j in jobs) == 1
            assert program.macs.per_block[layer.name] == expected
        # 111,149,056: the doc's 111.2 M is the sum of its rounded rows.
        assert abs(expected / 1e6 - 111.2) < 0.1
        assert program.macs.total == sum(program.macs.per_step)
        assert program.macs.per_block["embeddings"] == S * E * 3 * c.embedding_size


def test_job_fields_follow_the_mapping(qmodel: QuantizedMobileBert) -> None:
    program = lower(qmodel, CFG, 128)
    jobs = {j.name: j for j in program.jobs()}
    t = program.tensors
    flags = {
        "embeddings": FLAG_RESIDUAL | FLAG_AFFINE,
        "layer0.bottleneck.input": FLAG_AFFINE,
        "layer0.bottleneck.attention": FLAG_AFFINE,
        "layer0.attention.query": 0,
        "layer0.attention.key": 0,
        "layer0.attention.value": FLAG_PER_ROW,
        "layer0.attention.output": FLAG_RESIDUAL | FLAG_AFFINE,
        "layer0.ffn0.intermediate": FLAG_RELU,
        "layer0.ffn0.output": FLAG_RESIDUAL | FLAG_AFFINE,
        "layer0.output.bottleneck": FLAG_RESIDUAL | FLAG_AFFINE,
    }
    for name, f in flags.items():
        assert jobs[name].job.op == Op.GEMM and jobs[name].job.flags == f, name
    # Residuals: bottlenecked input, block input, layer input.
    assert jobs["layer0.attention.output"].d.tensor == "layer0.bottleneck.input"
    assert jobs["layer0.ffn1.output"].d.tensor == "layer0.ffn0.output"
    assert jobs["layer0.output.bottleneck"].d.tensor == "embeddings"
    # Vᵀ: X = Wv (128 x 512), Wᵀ = the hidden states, parameters per row.
    v = jobs["layer0.attention.value"]
    assert (v.job.m, v.job.n, v.job.k) == (128, 128, 512)
    assert (v.a.tensor, v.b.tensor, v.c.tensor) == (
        "layer0.attention.value.weight",
        "embeddings",
        "layer0.attention.value.T",
    )
    # One job for all heads: head h at columns 32h of Q, K, O and rows 32h of Vᵀ, its
    # requantization record h of the op's head table.
    heads = qmodel.layers[0].attention.heads
    j = jobs["layer0.attention"]
    assert j.job.op == Op.ATTENTION and j.job.heads == len(heads) == 4
    assert j.job.flags == FLAG_PER_HEAD
    assert (j.job.m, j.job.n, j.job.k) == (128, 128, 32)
    assert (j.a.col, j.b.col, j.c.col, j.d.row) == (0,) * 4
    assert (j.job.a_hstride, j.job.d_hstride) == (32, 32 * t["layer0.attention.value.T"].pitch)
    assert j.p is not None and j.p.tensor == "layer0.attention.heads"
    table = t["layer0.attention.heads"]
    assert (table.rows, table.kind) == (4, "params")
    assert unpack_head_params(table.data.tobytes(), 4) == [
        (hp.qk_requant, hp.av_requant) for hp in heads
    ]
    # Parameter records: one per output channel (per value feature for Vᵀ).
    assert t["layer0.attention.value.params"].rows == 128
    assert t["layer0.ffn0.intermediate.params"].rows == 512
    # Strides come from the tensors; binding to a layout moves addresses only.
    place = {n: Placement(4096 * i, x.pitch) for i, (n, x) in enumerate(t.items())}
    bound = v.bind(place)
    assert bound.a_addr == place[v.a.tensor].addr and bound.a_stride == 512
    assert bound.c_stride == v.job.c_stride == 128


def test_embedding_gathers(qmodel: QuantizedMobileBert) -> None:
    S = 64
    program = lower(qmodel, CFG, S)
    emb_steps = [s for s in program.steps if s.block == "embeddings"]
    assert [type(s) for s in emb_steps] == [Gather] * 3 + [Fill] * 2 + [Gather, EngineJob]
    nxt, this, prev, zn, zp, pt, _ = emb_steps
    E = qmodel.embeddings.word.shape[1]
    ids = np.arange(100, 100 + S)
    assert (nxt.dst_col, this.dst_col, prev.dst_col) == (0, E, 2 * E)
    assert nxt.copies(ids)[0].src_row == 101 and nxt.copies(ids)[-1].dst_row == S - 2
    assert prev.copies(ids)[0].src_row == 100 and prev.copies(ids)[0].dst_row == 1
    assert (zn.row, zn.col, zp.row, zp.col) == (S - 1, 0, 0, 2 * E)
    P = qmodel.config.max_position_embeddings
    types = np.zeros(S, np.int64)
    types[5] = 1
    rows = pt.source_rows(types)
    assert rows[4] == 4 and rows[5] == P + 5
    assert program.tensors["embeddings.input"].cols == 3 * E


def test_lowering_is_deterministic(qmodel: QuantizedMobileBert) -> None:
    a, b = lower(qmodel, CFG, 128), lower(qmodel, CFG, 128)
    assert a.describe() == b.describe()
    assert list(a.tensors) == list(b.tensors)
    for name, t in a.tensors.items():
        if t.data is not None:
            assert np.array_equal(t.data, b.tensors[name].data), name
    assert [s.job for s in a.jobs()] == [s.job for s in b.jobs()]


def test_describe(qmodel: QuantizedMobileBert) -> None:
    text = lower(qmodel, CFG, 128).describe()
    assert "layer1.attention " in text and "128x128x32" in text
    assert text.splitlines()[-1].startswith("39 steps: 31 GEMM + 2 ATTENTION jobs")


# ---- refusals: one line naming the op, the problem and the fix -----------------------------


def _one_line(exc: pytest.ExceptionInfo[LoweringError], *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_refuses_a_sequence_longer_than_max_seq(qmodel: QuantizedMobileBert) -> None:
    with pytest.raises(LoweringError) as exc:
        lower(qmodel, CFG, 144)
    _one_line(exc, "sequence length 144", "max_seq 128", "seq_len <= 128")


def test_refuses_a_sequence_of_partial_itamax_groups(qmodel: QuantizedMobileBert) -> None:
    with pytest.raises(LoweringError) as exc:
        lower(qmodel, CFG, 100)
    _one_line(exc, "sequence length 100", "n_pe 16", "pad the sequence to 112")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("normalization_type", "layer_norm", ("layer_norm", "LayerNorm", "NoNorm")),
        ("hidden_act", "gelu", ("gelu", "ReLU only")),
    ],
)
def test_refuses_ops_the_engine_cannot_do(
    qmodel: QuantizedMobileBert, field: str, value: str, words: tuple[str, ...]
) -> None:
    config = dataclasses.replace(qmodel.config, **{field: value})
    q = QuantizedMobileBert(
        config, qmodel.embeddings, qmodel.layers, qmodel.scales, {}, qmodel.settings
    )
    with pytest.raises(LoweringError) as exc:
        lower(q, CFG, 128)
    _one_line(exc, *words)


@dataclass(frozen=True)
class GeluOp:
    """A hand-made op the engine has no job for."""

    name: str
    input: str


def _with_layer0(q: QuantizedMobileBert, **changes: object) -> QuantizedMobileBert:
    layer: QuantizedLayer = dataclasses.replace(q.layers[0], **changes)  # type: ignore[arg-type]
    layers = (layer, *q.layers[1:])
    return QuantizedMobileBert(q.config, q.embeddings, layers, q.scales, {}, q.settings)


def test_refuses_an_unknown_op(qmodel: QuantizedMobileBert) -> None:
    q = _with_layer0(qmodel, intermediate=GeluOp("layer0.intermediate", "layer0.ffn2.output"))
    with pytest.raises(LoweringError) as exc:
        lower(q, CFG, 128)
    _one_line(exc, "layer0.intermediate", "GeluOp", "no engine job")


def test_refuses_per_channel_residual_multipliers(model: MobileBert, calib_ids: np.ndarray) -> None:
    with pytest.raises(LoweringError) as exc:
        lower(model.quantize(calib_ids), CFG, 128)
    _one_line(exc, "embeddings", "residual", "per_channel_epilogue=False")


def test_refuses_per_channel_affine_shifts(model: MobileBert, calib_ids: np.ndarray) -> None:
    with pytest.raises(LoweringError) as exc:
        lower(model.quantize(calib_ids, per_channel_epilogue=False), CFG, 128)
    _one_line(exc, "embeddings", "NoNorm shift", "aff_shift", "unify_epilogues()")


def test_refuses_a_dimension_off_the_gemm_granule(qmodel: QuantizedMobileBert) -> None:
    op = qmodel.layers[0].ffn[0].intermediate
    r = op.requant
    narrow = dataclasses.replace(
        op,
        weight=op.weight[:, :510],
        bias=op.bias[:510],
        requant=Requant(r.mult[:510], r.shift[:510], r.add[:510]),
    )
    ffn = (dataclasses.replace(qmodel.layers[0].ffn[0], intermediate=narrow),)
    q = _with_layer0(qmodel, ffn=ffn + qmodel.layers[0].ffn[1:])
    with pytest.raises(LoweringError) as exc:
        lower(q, CFG, 128)
    _one_line(exc, "layer0.ffn0.intermediate", "n = 510", "multiple of 4", "pad")


@pytest.mark.parametrize(
    ("engine", "words"),
    [
        (EngineConfig(vec_len=16), ("layer0.attention.head0", "head dimension 32", "vec_len 16")),
        (EngineConfig(n_pe=8), ("layer0.attention", "ITAMax group 16", "n_pe is 8", "group=8")),
        (EngineConfig(acc_bits=24), ("acc_bits=24", "acc_bits=32")),
    ],
)
def test_refuses_what_the_engine_config_cannot_run(
    qmodel: QuantizedMobileBert, engine: EngineConfig, words: tuple[str, ...]
) -> None:
    with pytest.raises(LoweringError) as exc:
        lower(qmodel, ClusterConfig(engine=engine), 128)
    _one_line(exc, *words)


def test_execute_checks_its_inputs(qmodel: QuantizedMobileBert) -> None:
    program = lower(qmodel, CFG, 64)
    with pytest.raises(ValueError, match="input_ids must be 64 integers"):
        execute(program, CFG, np.zeros(128, np.int64))
    with pytest.raises(ValueError, match=r"input_ids values must be in \[0, 512\)"):
        execute(program, CFG, np.full(64, 512))
    with pytest.raises(ValueError, match=r"token_type_ids values must be in \[0, 2\)"):
        execute(program, CFG, np.zeros(64, np.int64), np.full(64, 2))


def test_input_values_checks_the_range_for_the_l2_image_too(qmodel: QuantizedMobileBert) -> None:
    """The host's L2 image (Schedule.image_with_inputs) gets its ids from input_values: an
    id past the word table used to be written in, for the runtime to gather past the table."""
    program = lower(qmodel, CFG, 64)
    ids = np.zeros(64, np.int64)
    ids[5] = 512
    with pytest.raises(
        ValueError, match=r"input_ids values must be in \[0, 512\) .*found 0\.\.512"
    ):
        input_values(program, ids)
    with pytest.raises(ValueError, match=r"input_ids values .* found -1\.\.0"):
        input_values(program, -np.eye(1, 64, dtype=np.int64))
    with pytest.raises(ValueError, match=r"token_type_ids values must be in \[0, 2\) .*3\.\.3"):
        input_values(program, None, np.full(64, 3))
    assert input_values(program, np.full(64, 511))["input_ids"].dtype == np.dtype("<i4")


def test_gemm_ops_keep_their_names(qmodel: QuantizedMobileBert) -> None:
    """Every GemmOp is one job of its name, every attention op one job of its name."""
    program = lower(qmodel, CFG, 128)
    names = [j.name for j in program.jobs()]
    expected: list[str] = []
    for op in qmodel.ops():
        if isinstance(op, GemmOp):
            expected.append(op.name)
        else:
            expected.append(op.name)
    assert names == expected


def test_unify_epilogues_keeps_the_quantizers_record(
    model: MobileBert, calib_ids: np.ndarray
) -> None:
    """The engine-mode model reports the same adjustments and logit fits as the model it
    came from (quantize-report prints them)."""
    q = model.quantize(calib_ids, per_channel_epilogue=False)
    u = unify_epilogues(q)
    assert q.logit_fits and u.logit_fits == q.logit_fits
    assert list(u.adjustments) == list(q.adjustments)


@pytest.mark.parametrize("n_pe", [8, 32])
def test_prepare_quantizes_for_the_engine_it_is_given(n_pe: int) -> None:
    """``tinyattn deploy/run --config`` with another ``n_pe``: prepare quantizes ITAMax for
    that group, so the lowering takes the model (it refused it before)."""
    from tinyattn.sw.deploy_flow import prepare
    from tinyattn.sw.schedule import deploy

    cfg = ClusterConfig(engine=EngineConfig(n_pe=n_pe))
    prepared = prepare("synthetic", layers=1, seq_len=32, group=n_pe)
    schedule = deploy(prepared.qmodel, cfg, 32)
    assert schedule.program.macs.total > 0
    with pytest.raises(LoweringError, match=f"group={n_pe}"):
        deploy(prepare("synthetic", layers=1, seq_len=32).qmodel, cfg, 32)
