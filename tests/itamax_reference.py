"""ITAMax in plain Python integers, one logit at a time: the reference the tests hold the
golden model's vectorized ITAMax and the integer MobileBERT's attention against."""

from __future__ import annotations


def itamax_reference(row: list[int], group: int) -> list[int]:
    """Probabilities (uint8 units of 1/256) of the int8 logits ``row``, by the DESIGN.md
    recurrence over groups of ``group`` logits: running maximum and shifted sum, then one
    division."""
    m, s = -128, 0
    for start in range(0, len(row), group):
        g = row[start : start + group]
        m_new = max(m, *g)
        s = (s >> (m_new - m)) + sum(256 >> (m_new - x) for x in g)
        m = m_new
    inv = 65280 // s
    return [inv >> (m - x) for x in row]
