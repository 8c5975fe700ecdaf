"""Pack and unpack ``amaranth.lib.data`` payloads as plain integers for testbenches.

A stream payload port in the generated Verilog is one flat vector; the layout in
``hw/`` is the only description of where each field sits. These helpers walk
that layout, so benches never hard-code an offset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["pack", "unpack"]


def _mask(width: int) -> int:
    return (1 << width) - 1


def pack(shape: Any, value: Any) -> int:
    """Encode ``value`` for a port of ``shape`` (a Layout, Shape or ShapeCastable).

    Struct values are mappings (missing fields are 0), array values are
    sequences or NumPy arrays, scalars are ints. Out-of-range scalars raise
    instead of wrapping, so a bench cannot drive a value it did not mean.
    """
    if isinstance(shape, data.Layout):
        raw = 0
        if isinstance(shape, data.ArrayLayout):
            if len(value) != shape.length:
                raise ValueError(f"array of {shape.length} elements, got {len(value)}")
            elem = shape.elem_shape
            stride = Shape.cast(elem).width
            if not isinstance(elem, data.Layout):
                return _pack_lanes(Shape.cast(elem), stride, value)
            for i, item in enumerate(value):
                raw |= pack(elem, item) << (i * stride)
            return raw
        if not isinstance(value, Mapping):
            raise TypeError(f"struct value must be a mapping, got {type(value).__name__}")
        for name, item in value.items():
            field = shape[name]
            raw |= pack(field.shape, item) << field.offset
        return raw
    s = Shape.cast(shape)
    v = int(value)
    lo, hi = (-(1 << (s.width - 1)), (1 << (s.width - 1)) - 1) if s.signed else (0, _mask(s.width))
    if not lo <= v <= hi:
        raise ValueError(f"{v} does not fit {s!r}")
    return v & _mask(s.width)


def _pack_lanes(s: Shape, stride: int, values: Sequence[int] | np.ndarray) -> int:
    arr = np.asarray(values, dtype=np.int64)
    lo, hi = (-(1 << (s.width - 1)), (1 << (s.width - 1)) - 1) if s.signed else (0, _mask(s.width))
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"lane values {arr.min()}..{arr.max()} do not fit {s!r}")
    raw = 0
    m = _mask(stride)
    for i, v in enumerate(arr.tolist()):
        raw |= (v & m) << (i * stride)
    return raw


def unpack(shape: Any, raw: int) -> Any:
    """Decode ``raw`` for ``shape``: dict for structs, int64 array for scalar arrays."""
    if isinstance(shape, data.Layout):
        if isinstance(shape, data.ArrayLayout):
            elem = shape.elem_shape
            stride = Shape.cast(elem).width
            if not isinstance(elem, data.Layout):
                s = Shape.cast(elem)
                out = np.empty(shape.length, dtype=np.int64)
                for i in range(shape.length):
                    out[i] = _field(raw >> (i * stride), s)
                return out
            return [unpack(elem, raw >> (i * stride)) for i in range(shape.length)]
        return {name: unpack(field.shape, raw >> field.offset) for name, field in shape}
    return _field(raw, Shape.cast(shape))


def _field(raw: int, s: Shape) -> int:
    v = raw & _mask(s.width)
    if s.signed and v >> (s.width - 1):
        v -= 1 << s.width
    return v
