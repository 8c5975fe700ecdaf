"""A sparse byte memory for the L2 (whose address space may span 4 GiB).

:class:`PagedMemory` makes 4 KiB pages on first touch. A page's initial content is
random but a function of ``(seed, page index)``, so two instances with the same seed
(a bench's memory model and its reference copy) start out identical without
allocating anything up front. Addresses are byte addresses; data are ``uint8`` arrays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PagedMemory"]


class PagedMemory:
    """A sparse byte memory: 4 KiB pages made on first touch, seeded per page."""

    PAGE = 4096

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.pages: dict[int, np.ndarray] = {}

    def _page(self, index: int) -> np.ndarray:
        if index not in self.pages:
            rng = np.random.default_rng([self.seed, index])
            self.pages[index] = rng.integers(0, 256, self.PAGE, dtype=np.uint8)
        return self.pages[index]

    def read(self, addr: int, n: int) -> np.ndarray:
        """A copy of the ``n`` bytes from byte address ``addr``."""
        out = np.empty(n, dtype=np.uint8)
        done = 0
        while done < n:
            page, off = divmod(addr + done, self.PAGE)
            k = min(n - done, self.PAGE - off)
            out[done : done + k] = self._page(page)[off : off + k]
            done += k
        return out

    def write(self, addr: int, data: np.ndarray) -> None:
        """Store the bytes ``data`` (``uint8``) from byte address ``addr``."""
        done = 0
        while done < len(data):
            page, off = divmod(addr + done, self.PAGE)
            k = min(len(data) - done, self.PAGE - off)
            self._page(page)[off : off + k] = data[done : done + k]
            done += k

    def copy(self) -> PagedMemory:
        """An independent copy (same seed, same pages)."""
        other = PagedMemory(self.seed)
        other.pages = {k: v.copy() for k, v in self.pages.items()}
        return other

    def first_difference(self, other: PagedMemory) -> int | None:
        """Lowest address where the two differ, or None."""
        for index in sorted(set(self.pages) | set(other.pages)):
            diff = np.flatnonzero(self._page(index) != other._page(index))
            if diff.size:
                return index * self.PAGE + int(diff[0])
        return None
