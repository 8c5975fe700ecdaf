"""ITAMax: the streaming integer softmax, one group of ``n_pe`` logits a cycle.

For each query row of a tile the unit keeps the running maximum ``m`` and sum
``s`` of :func:`tinyattn.verif.golden.itamax`. A row's groups arrive in key
order but interleaved with the other rows' (the array produces one group of
``n_pe`` keys for every row before moving to the next keys), so the state is
one register pair per row, updated in the cycle its group arrives::

    m' = max(m, max(g))
    s' = (s >> (m' - m)) + sum(256 >> (m' - x) for x in g)

A split-lane QK beat (``docs/engine.md``) brings up to ``max_split`` consecutive
groups of a row at once (``groups`` of them valid, in key order); the unit chains
their updates in that cycle, so the state is the same as group by group.

On a row's last group the unit also divides: ``inv = 65280 // s``. The
probabilities are produced later, lane by lane, as ``p = inv >> (m - x)``
(:func:`probabilities`), when the ``P · V`` pass reads the logits back.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from tinyattn.config import ClusterConfig

__all__ = ["ItaMax", "probabilities"]

ITAMAX_NUMERATOR = 65280


def _shr_sat(value: object, amount: object, width: int) -> object:
    """``value >> amount`` for a non-negative ``value`` of ``width`` bits; 0 from ``width`` on."""
    return Mux(amount >= width, 0, value >> amount[: max(1, (width - 1).bit_length())])


def probabilities(m: object, inv: object, logits: list) -> list:
    """``inv >> (m - x)`` per lane (uint8); ``m`` is the row maximum, so ``m - x >= 0``."""
    return [_shr_sat(inv, (m - x).as_unsigned(), 8) for x in logits]


class ItaMax(wiring.Component):
    """Running softmax state of ``tile_m`` rows.

    Ports
    -----
    valid, row, first, last, groups, logits : In
        ``groups`` (1..``max_split``) consecutive groups of a row, group ``g`` in
        ``logits[g * n_pe : (g + 1) * n_pe]``: ``first`` starts the row (``m = -128,
        s = 0``) before them, ``last`` finishes it after them (``inv`` is computed).
    read_row : In
        Row whose final ``m`` and ``inv`` appear combinationally on
        ``read_m`` / ``read_inv``.
    """

    def __init__(self, cfg: ClusterConfig) -> None:
        e = cfg.engine
        self.cfg = cfg
        # s <= 256 * keys: one maximum contributes 256, every other key at most 256.
        self.sum_bits = 9 + (e.max_seq - 1).bit_length()
        super().__init__(
            {
                "valid": In(1),
                "row": In(range(e.tile_m)),
                "first": In(1),
                "last": In(1),
                "groups": In(range(1, e.max_split + 1)),
                "logits": In(data.ArrayLayout(signed(8), e.max_split * e.n_pe)),
                "read_row": In(range(e.tile_m)),
                "read_m": Out(signed(8)),
                "read_inv": Out(unsigned(8)),
            }
        )

    def elaborate(self, platform: object) -> Module:
        e = self.cfg.engine
        m = Module()
        sb = self.sum_bits
        m_regs = [Signal(signed(8), name=f"m{r}", init=-128) for r in range(e.tile_m)]
        s_regs = [Signal(unsigned(sb), name=f"s{r}") for r in range(e.tile_m)]
        inv_regs = [Signal(unsigned(8), name=f"inv{r}") for r in range(e.tile_m)]
        ms, ss, invs = Array(m_regs), Array(s_regs), Array(inv_regs)

        m_old = Signal(signed(8))
        s_old = Signal(unsigned(sb))
        m.d.comb += [
            m_old.eq(Mux(self.first, -128, ms[self.row])),
            s_old.eq(Mux(self.first, 0, ss[self.row])),
        ]
        # The groups' updates, chained in key order; groups past ``groups`` keep the state.
        m_new, s_new = m_old, s_old
        for g in range(e.max_split):
            group = list(self.logits)[g * e.n_pe : (g + 1) * e.n_pe]
            m_next, s_next = self._group_update(m, m_new, s_new, group, f"g{g}")
            if g == 0:
                m_new, s_new = m_next, s_next
            else:
                m_new = Mux(self.groups > g, m_next, m_new)
                s_new = Mux(self.groups > g, s_next, s_new)

        # inv = 65280 // s_new by restoring division: the quotient has 8 bits.
        rem = Const(ITAMAX_NUMERATOR, unsigned(17))
        quotient = []
        for bit in reversed(range(8)):
            step = s_new << bit
            take = Signal(name=f"q{bit}")
            nxt = Signal(unsigned(17), name=f"rem{bit}")
            m.d.comb += [take.eq(rem >= step), nxt.eq(Mux(take, rem - step, rem))]
            quotient.append(take)
            rem = nxt
        inv = Signal(unsigned(8))
        m.d.comb += inv.eq(Cat(*reversed(quotient)))

        # One enable per row (an Array on the left would give every register a full case).
        for r in range(e.tile_m):
            with m.If(self.valid & (self.row == r)):
                m.d.sync += [m_regs[r].eq(m_new), s_regs[r].eq(s_new)]
                with m.If(self.last):
                    m.d.sync += inv_regs[r].eq(inv)
        m.d.comb += [self.read_m.eq(ms[self.read_row]), self.read_inv.eq(invs[self.read_row])]
        return m

    def _group_update(
        self, m: Module, m_old: object, s_old: object, group: list, name: str
    ) -> tuple[Signal, Signal]:
        """``(m', s')`` after one group of ``n_pe`` logits."""
        sb = self.sum_bits
        # Group maximum by a balanced tree of comparisons.
        level = list(group)
        while len(level) > 1:
            nxt = [
                Mux(level[i] > level[i + 1], level[i], level[i + 1])
                for i in range(0, len(level) - 1, 2)
            ]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        m_new = Signal(signed(8), name=f"{name}_m")
        m.d.comb += m_new.eq(Mux(level[0] > m_old, level[0], m_old))
        grow = Signal(unsigned(9), name=f"{name}_grow")  # m' - m, 0..255
        m.d.comb += grow.eq(m_new - m_old)
        terms = []
        for i, x in enumerate(group):
            d = Signal(unsigned(9), name=f"{name}_d{i}")
            m.d.comb += d.eq(m_new - x)
            terms.append(_shr_sat(Const(256, unsigned(9)), d, 9))
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        s_new = Signal(unsigned(sb), name=f"{name}_s")
        m.d.comb += s_new.eq(_shr_sat(s_old, grow, sb) + total)
        return m_new, s_new
