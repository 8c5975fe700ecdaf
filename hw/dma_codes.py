"""The DMA's descriptor rules and codes, in plain Python (no Amaranth).

The alignment every descriptor must meet, the ``direction`` field's values and the
``error_code`` values. The deployment flow (``tinyattn.sw``: the tiler, the command
stream, the C tables) plans transfers with these and must not need the HDL to do so;
:mod:`tinyattn.hw.dma` builds the DMA from the same definitions and re-exports them.
"""

from __future__ import annotations

import enum

__all__ = ["ALIGN_BYTES", "Direction", "DmaError"]

#: Addresses, row lengths and strides must be multiples of this many bytes.
ALIGN_BYTES = 4


class Direction(enum.IntEnum):
    """Value of the descriptor's ``direction`` field."""

    L2_TO_L1 = 0  # read L2, write L1
    L1_TO_L2 = 1  # read L1, write L2


class DmaError(enum.IntEnum):
    """Value of ``error_code``. A descriptor with several faults reports the first listed."""

    NONE = 0
    ZERO_SIZE = 1  # rows == 0 or row_bytes == 0
    MISALIGNED = 2  # an address, row_bytes or a stride is not a multiple of 4
    L1_RANGE = 3  # l1_addr + (rows-1)*l1_stride + row_bytes > L1 size
    L2_RANGE = 4  # l2_addr + (rows-1)*l2_stride + row_bytes > 2**l2_addr_bits
