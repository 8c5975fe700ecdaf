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

**Split-lane beats** (QKᵀ with a short head dimension). A beat with ``split = log2 s``
(``s <= cfg.max_split``) cuts every unit's lanes into ``s`` segments of ``vec_len / s``
lanes. The core repeats the operand row's first segment into every segment, so each
segment of unit ``j`` computes its own dot product: segment ``g``'s sum is the adder
tree's node over those lanes, and its requantized value is ``y[g * n_pe + j]``
(requantized with unit ``j``'s parameters; ``acc_in`` must be 0). Weight writes fill
one segment of a unit (``segment``, ``split`` in :func:`weight_layout`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
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


def _split_shape(cfg: EngineConfig) -> unsigned:
    """``log2 s`` of a split-lane beat (0: one dot product a unit)."""
    return unsigned(max(1, (cfg.max_split.bit_length() - 1).bit_length()))


def weight_layout(cfg: EngineConfig) -> data.StructLayout:
    """One weight vector written into unit ``unit`` of weight bank ``bank``.

    With ``split = log2 s > 0`` only segment ``segment`` (lanes ``segment * vec_len / s``
    on) of the unit is written, with the first ``vec_len / s`` lanes of ``w``.
    """
    return data.StructLayout(
        {
            "w": data.ArrayLayout(signed(8), cfg.vec_len),
            "unit": _unit_shape(cfg),
            "bank": unsigned(1),
            # At least one bit: a zero-width port is an ascending [-1:0] range in Verilog.
            "segment": unsigned(max(1, (cfg.max_split - 1).bit_length())),
            "split": _split_shape(cfg),
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
            "split": _split_shape(cfg),  # log2 of the dot products a unit computes
        }
    )


def result_layout(cfg: EngineConfig) -> data.StructLayout:
    """Raw accumulators (partial sums) and their requantized int8 values.

    ``y[g * n_pe + j]`` is segment ``g`` of unit ``j`` (``g = 0`` but in split-lane
    beats); ``acc`` holds whole-unit sums, meaningful for beats without split.
    """
    return data.StructLayout(
        {
            "acc": data.ArrayLayout(signed(cfg.acc_bits), cfg.n_pe),
            "y": data.ArrayLayout(signed(8), cfg.max_split * cfg.n_pe),
        }
    )


def _tree_levels(terms: list) -> list[list]:
    """Balanced adder tree: depth log2(n) instead of a chain of n adders.

    Returns every level, leaves first, root (``[sum]``) last. For ``n`` a power of
    two, node ``i`` of level ``L`` sums the aligned lanes ``i * 2**L .. (i+1) * 2**L - 1``:
    the segment sums of a split-lane beat.
    """
    levels = [terms]
    while len(terms) > 1:
        paired = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
        levels.append(terms)
    return levels


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
        # A split write fills one segment: lane groups of vec_len / max_split lanes
        # are written separately, with the vector's first lanes repeated into them.
        group_lanes = cfg.vec_len // cfg.max_split
        w_repeated = self._repeat_segment(m, wr.w, wr.split, "w_seg")
        group_en = Signal(cfg.max_split)
        for g in range(cfg.max_split):
            m.d.comb += group_en[g].eq(
                (wr.split == 0) | self._segment_selects(wr.split, wr.segment, g)
            )
        with m.If(self.weights.valid):
            for b in range(2):
                for u in range(cfg.n_pe):
                    with m.If((wr.bank == b) & (wr.unit == u)):
                        for g in range(cfg.max_split):
                            lanes = slice(g * group_lanes, (g + 1) * group_lanes)
                            with m.If(group_en[g]):
                                m.d.sync += [
                                    banks[b][u][lane].eq(w_repeated[lane])
                                    for lane in range(lanes.start, lanes.stop)
                                ]

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
        # One sum per (segment, unit): index g * n_pe + u. Segment 0 is the whole dot
        # product (plus acc_in) of a beat without split; the others only serve split
        # beats, whose sums (at most vec_len / 2 lanes, no acc_in) never wrap, so they
        # are narrower: 17 bits a product and one more per doubling of the lanes.
        n_sums = cfg.max_split * cfg.n_pe
        segment_bits = 16 + (cfg.vec_len.bit_length() - 1)
        sum_bits = [cfg.acc_bits if i < cfg.n_pe else segment_bits for i in range(n_sums)]
        s1_sum = [Signal(signed(bits), name=f"s1_sum{i}") for i, bits in enumerate(sum_bits)]
        s1_rq = Signal(rq_shape)
        s1_relu = Signal()
        # uint8 probabilities and int8 activations share the lanes: widen each
        # lane to 9 signed bits by zero- or sign-extension.
        x_rep = self._repeat_segment(m, beat.x, beat.split, "x_seg")
        x_ext = [Mux(beat.x_signed, lane.as_signed(), lane) for lane in x_rep]
        root = cfg.vec_len.bit_length() - 1  # levels[root] is [sum of every lane]
        for u in range(cfg.n_pe):
            w_sel = [
                Mux(beat.bank, banks[1][u][lane], banks[0][u][lane]) for lane in range(cfg.vec_len)
            ]
            levels = _tree_levels([x_ext[lane] * w_sel[lane] for lane in range(cfg.vec_len)])
            for g in range(cfg.max_split):
                # Segment g of a 2**t split is node g of the level t below the root.
                options = [
                    (t, levels[root - t][g]) for t in range(self._log2_max_split + 1) if g < 1 << t
                ]
                segment = options[-1][1]
                for t, node in options[:-1]:
                    segment = Mux(beat.split == t, node, segment)
                if g == 0:
                    segment = beat.acc_in[u] + segment
                with m.If(load[0]):
                    m.d.sync += s1_sum[g * cfg.n_pe + u].eq(segment)  # truncation = wrap
        with m.If(load[0]):
            m.d.sync += [s1_rq.eq(beat.requant), s1_relu.eq(beat.relu)]

        # -- stage 2: mult * acc -------------------------------------------------
        # The extra segments' requantizers take their unit's parameters (a split beat
        # is QKᵀ: one set per head).
        s2_prod = [Signal(signed(bits + 9), name=f"s2_prod{i}") for i, bits in enumerate(sum_bits)]
        s2_acc = Signal(acc_shape)
        s2_rq = Signal(rq_shape)
        s2_relu = Signal()
        with m.If(load[1]):
            for i in range(n_sums):
                m.d.sync += s2_prod[i].eq(s1_sum[i] * s1_rq[i % cfg.n_pe].mult)
            m.d.sync += [s2_rq.eq(s1_rq), s2_relu.eq(s1_relu)]
            m.d.sync += [s2_acc[u].eq(s1_sum[u]) for u in range(cfg.n_pe)]

        # -- stage 3: round half up, shift, add, saturate, ReLU -------------------
        s3_acc = Signal(acc_shape)
        s3_y = Signal(data.ArrayLayout(signed(8), n_sums))
        with m.If(load[2]):
            m.d.sync += s3_acc.eq(s2_acc)
            for i in range(n_sums):
                rq = s2_rq[i % cfg.n_pe]
                half = (Const(1, unsigned(32)) << rq.shift) >> 1
                shifted = (s2_prod[i] + half) >> rq.shift
                total = Signal(signed(sum_bits[i] + 9 + 2), name=f"s3_total_{i}")
                m.d.comb += total.eq(shifted + rq.add)
                sat = Mux(total > 127, 127, Mux(total < -128, -128, total))
                m.d.sync += s3_y[i].eq(Mux(s2_relu & (total < 0), 0, sat))
        m.d.comb += [
            self.results.payload.acc.eq(s3_acc),
            self.results.payload.y.eq(s3_y),
        ]
        return m

    @property
    def _log2_max_split(self) -> int:
        return self.cfg.max_split.bit_length() - 1

    def _repeat_segment(self, m: Module, lanes: object, split: object, name: str) -> Signal:
        """``lanes`` with lane ``l`` taken from lane ``l mod (vec_len / s)``, ``s = 2**split``."""
        cfg = self.cfg
        out = Signal.like(lanes, name=name)
        choice = lanes.as_value()
        for t in range(1, self._log2_max_split + 1):
            segment_bits = (cfg.vec_len >> t) * 8
            repeated = Cat(*([lanes.as_value()[:segment_bits]] * (1 << t)))
            choice = Mux(split == t, repeated, choice)
        m.d.comb += out.eq(choice)
        return out

    def _segment_selects(self, split: object, segment: object, group: int) -> object:
        """Lane group ``group`` (of ``max_split``) lies in segment ``segment`` of a split write."""
        selects = Const(0, 1)
        for t in range(1, self._log2_max_split + 1):
            groups_per_segment = self.cfg.max_split >> t
            selects = selects | ((split == t) & (segment == group // groups_per_segment))
        return selects
