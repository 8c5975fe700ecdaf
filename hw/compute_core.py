"""The engine's compute core: a dot-product array with a bias and requantization stage.

``n_pe`` dot-product units, each ``vec_len`` int8 lanes wide. One operand row is
broadcast to all units while each unit holds its own weight vector (weights are
stationary; two banks let the next block load while the current one computes).
Per accepted operand beat the core produces, for every unit ``j``::

    acc[j] = wrap(acc_in[j] + sum_l x[l] * w[bank][j][l], acc_bits)
    y[j]   = relu?(requantize(acc[j], mult[j], shift[j], add[j]))

which is :func:`tinyattn.verif.golden.dot_array` followed by
:func:`tinyattn.verif.golden.requantize`. ``acc_in`` carries the bias on a tile's
first K chunk and the running partial sum on later chunks, so the core serves any K.
Operand lanes are int8 or, for ``P · V`` with softmax probabilities, uint8.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import EngineConfig

__all__ = [
    "PIPELINE_DEPTH",
    "ComputeCore",
    "operand_layout",
    "requant_layout",
    "result_layout",
    "weight_layout",
]

#: Register stages from an accepted operand beat to its result (without stalls).
PIPELINE_DEPTH = 3

requant_layout = data.StructLayout(
    {
        "mult": unsigned(8),  # uint8 multiplier
        "shift": unsigned(5),  # right shift 0..31, rounding half up
        "add": signed(8),  # int8 offset added after the shift
    }
)


def _unit_shape(cfg: EngineConfig) -> unsigned:
    return unsigned(max(1, (cfg.n_pe - 1).bit_length()))


def weight_layout(cfg: EngineConfig) -> data.StructLayout:
    """One weight vector written into unit ``unit`` of weight bank ``bank``."""
    return data.StructLayout(
        {
            "w": data.ArrayLayout(signed(8), cfg.vec_len),
            "unit": _unit_shape(cfg),
            "bank": unsigned(1),
        }
    )


def operand_layout(cfg: EngineConfig) -> data.StructLayout:
    """One operand row plus everything its result needs (travels with the beat)."""
    return data.StructLayout(
        {
            # Raw bytes; ``x_signed`` says whether they are int8 or uint8 lanes.
            "x": data.ArrayLayout(unsigned(8), cfg.vec_len),
            "acc_in": data.ArrayLayout(signed(cfg.acc_bits), cfg.n_pe),
            "requant": data.ArrayLayout(requant_layout, cfg.n_pe),
            "x_signed": unsigned(1),
            "bank": unsigned(1),
            "relu": unsigned(1),
        }
    )


def result_layout(cfg: EngineConfig) -> data.StructLayout:
    """Raw accumulators (partial sums) and their requantized int8 values."""
    return data.StructLayout(
        {
            "acc": data.ArrayLayout(signed(cfg.acc_bits), cfg.n_pe),
            "y": data.ArrayLayout(signed(8), cfg.n_pe),
        }
    )


def _tree_sum(terms: list) -> object:
    """Balanced adder tree: depth log2(n) instead of a chain of n adders."""
    while len(terms) > 1:
        paired = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
    return terms[0]


class ComputeCore(wiring.Component):
    """Dot-product array + bias/requantization, with valid/ready on both sides.

    Ports
    -----
    weights : In(stream of :func:`weight_layout`); ``ready`` is always 1.
        A write is visible to operand beats accepted from the next cycle on.
        Writing the bank that beats in flight use is allowed: beats sample
        their weights when they are accepted.
    operands : In(stream of :func:`operand_layout`)
    results : Out(stream of :func:`result_layout`)
        In order, one per operand beat, after :data:`PIPELINE_DEPTH` cycles
        when not stalled. Stages without a valid beat never block the ones
        behind them, so back-pressure costs no throughput once it is released.
    """

    def __init__(self, cfg: EngineConfig) -> None:
        self.cfg = cfg
        super().__init__(
            {
                "weights": In(stream.Signature(weight_layout(cfg))),
                "operands": In(stream.Signature(operand_layout(cfg))),
                "results": Out(stream.Signature(result_layout(cfg))),
            }
        )

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()

        # -- weight banks: two sets of n_pe x vec_len int8 registers -------------
        banks = [
            [
                Signal(data.ArrayLayout(signed(8), cfg.vec_len), name=f"w_b{b}_u{u}")
                for u in range(cfg.n_pe)
            ]
            for b in range(2)
        ]
        wr = self.weights.payload
        # Registers take a write every cycle, so the weight stream never back-pressures.
        m.d.comb += self.weights.ready.eq(1)
        with m.If(self.weights.valid):
            for b in range(2):
                for u in range(cfg.n_pe):
                    with m.If((wr.bank == b) & (wr.unit == u)):
                        m.d.sync += banks[b][u].eq(wr.w)

        # -- pipeline control: a stage loads when it is empty or its successor loads.
        # Ready ripples back combinationally; bubbles collapse under back-pressure.
        valid = [Signal(name=f"s{i + 1}_valid") for i in range(PIPELINE_DEPTH)]
        load = [Signal(name=f"s{i + 1}_load") for i in range(PIPELINE_DEPTH)]
        m.d.comb += load[-1].eq(~valid[-1] | self.results.ready)
        for i in range(PIPELINE_DEPTH - 1):
            m.d.comb += load[i].eq(~valid[i] | load[i + 1])
        upstream_valid = [self.operands.valid, *valid[:-1]]
        for i in range(PIPELINE_DEPTH):
            with m.If(load[i]):
                m.d.sync += valid[i].eq(upstream_valid[i])
        m.d.comb += [
            self.operands.ready.eq(load[0]),
            self.results.valid.eq(valid[-1]),
        ]

        beat = self.operands.payload
        rq_shape = data.ArrayLayout(requant_layout, cfg.n_pe)
        acc_shape = data.ArrayLayout(signed(cfg.acc_bits), cfg.n_pe)

        # -- stage 1: dot products plus acc_in, wrapped to acc_bits ---------------
        s1_acc = Signal(acc_shape)
        s1_rq = Signal(rq_shape)
        s1_relu = Signal()
        # uint8 probabilities and int8 activations share the lanes: widen each
        # lane to 9 signed bits by zero- or sign-extension.
        x_ext = [Mux(beat.x_signed, lane.as_signed(), lane) for lane in beat.x]
        for u in range(cfg.n_pe):
            w_sel = [
                Mux(beat.bank, banks[1][u][lane], banks[0][u][lane]) for lane in range(cfg.vec_len)
            ]
            dot = _tree_sum([x_ext[lane] * w_sel[lane] for lane in range(cfg.vec_len)])
            with m.If(load[0]):
                m.d.sync += s1_acc[u].eq(beat.acc_in[u] + dot)  # truncation = wrap
        with m.If(load[0]):
            m.d.sync += [s1_rq.eq(beat.requant), s1_relu.eq(beat.relu)]

        # -- stage 2: mult * acc -------------------------------------------------
        prod_bits = cfg.acc_bits + 9
        s2_prod = Signal(data.ArrayLayout(signed(prod_bits), cfg.n_pe))
        s2_acc = Signal(acc_shape)
        s2_rq = Signal(rq_shape)
        s2_relu = Signal()
        with m.If(load[1]):
            for u in range(cfg.n_pe):
                m.d.sync += s2_prod[u].eq(s1_acc[u] * s1_rq[u].mult)
            m.d.sync += [s2_acc.eq(s1_acc), s2_rq.eq(s1_rq), s2_relu.eq(s1_relu)]

        # -- stage 3: round half up, shift, add, saturate, ReLU -------------------
        s3_acc = Signal(acc_shape)
        s3_y = Signal(data.ArrayLayout(signed(8), cfg.n_pe))
        with m.If(load[2]):
            m.d.sync += s3_acc.eq(s2_acc)
            for u in range(cfg.n_pe):
                rq = s2_rq[u]
                half = (Const(1, unsigned(32)) << rq.shift) >> 1
                shifted = (s2_prod[u] + half) >> rq.shift
                total = Signal(signed(prod_bits + 2), name=f"s3_total_u{u}")
                m.d.comb += total.eq(shifted + rq.add)
                sat = Mux(total > 127, 127, Mux(total < -128, -128, total))
                m.d.sync += s3_y[u].eq(Mux(s2_relu & (total < 0), 0, sat))
        m.d.comb += [
            self.results.payload.acc.eq(s3_acc),
            self.results.payload.y.eq(s3_y),
        ]
        return m
