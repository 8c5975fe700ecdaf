"""The one writer of benchmark results: fixed-width tables, JSON records and the run's report.

Every record is a dict with at least ``name``, ``cycles``, ``ideal_cycles`` and
``utilization``; :class:`BenchmarkReport` adds ``group`` (the table it was printed in).
A benchmark names the extra columns it prints as :class:`Column` values, each saying
whether its values are fractions (printed as percentages) or quantities such as cycles.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = ["BenchmarkReport", "Column", "Record", "format_table", "write_json"]

#: One measurement: ``name``, ``cycles``, ``ideal_cycles``, ``utilization`` and more.
Record = dict[str, Any]


@dataclass(frozen=True)
class Column:
    """A table column: the record ``key`` it shows and what its values are.

    ``fraction`` columns (utilizations, bounds, shares of a budget, in 0..1) print as
    percentages; the others (cycles, counts, rates) print as they are, floats to one
    decimal. The benchmark declares this: a mean wait of 0.6 cycles is not 60%.
    """

    key: str
    fraction: bool = False

    def format(self, value: Any) -> str:
        """``value`` as this column prints it (``""`` for a record without the key)."""
        if isinstance(value, float):
            return f"{value:.1%}" if self.fraction else f"{value:.1f}"
        return str(value)


#: The columns every table starts with.
BASE_COLUMNS = (
    Column("name"),
    Column("cycles"),
    Column("ideal_cycles"),
    Column("utilization", fraction=True),
)


def format_table(records: Sequence[Record], extra: Sequence[Column] = ()) -> str:
    """A fixed-width text table: name, cycles, ideal, utilization and ``extra`` columns."""
    for column in extra:
        if not isinstance(column, Column):
            raise TypeError(
                f"extra column {column!r} is not a Column: declare it as "
                f"Column({column!r}) for cycles or counts, or "
                f"Column({column!r}, fraction=True) for a fraction printed as a percentage"
            )
    columns = [*BASE_COLUMNS, *extra]
    cols = [c.key for c in columns]
    rows = [[c.format(r.get(c.key, "")) for c in columns] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cols, widths, strict=True))
    )
    out = [line, "-" * len(line)]
    for row in rows:
        out.append(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(out)


def write_json(path: str | Path, records: Sequence[Record]) -> None:
    """Write ``records`` as a JSON list, keys sorted, for diffing between runs."""
    Path(path).write_text(json.dumps(list(records), indent=2, sort_keys=True) + "\n")


class BenchmarkReport:
    """What one ``tinyattn bench`` run prints and records, in the order the benchmarks run.

    ``synthesize`` says whether benchmarks may start area measurements (yosys). Work a
    benchmark leaves running in the background (the engine's synthesis) registers with
    :meth:`when_finished`: :meth:`finish` collects it after every benchmark ran, so it
    overlaps the simulations; :meth:`abort` stops it when a benchmark fails.
    """

    def __init__(self, *, synthesize: bool = True, out: TextIO | None = None) -> None:
        self.synthesize = synthesize
        self.records: list[Record] = []
        self._out = out
        self._finishers: list[tuple[Callable[[], None], Callable[[], None]]] = []

    def say(self, text: str) -> None:
        """Print ``text`` now (flushed: the simulations that follow take minutes)."""
        out = self._out or sys.stdout
        print(text, file=out)
        out.flush()

    def add(self, group: str, records: Sequence[Record]) -> None:
        """Record ``records`` under ``group`` without printing them."""
        for r in records:
            r["group"] = group
        self.records += records

    def table(self, group: str, records: Sequence[Record], extra: Sequence[Column] = ()) -> None:
        """Record ``records`` under ``group`` and print them as a table with ``extra`` columns."""
        self.add(group, records)
        self.say(format_table(records, extra))

    def group(self, group: str) -> list[Record]:
        """The records added so far under ``group``."""
        return [r for r in self.records if r["group"] == group]

    def when_finished(self, finish: Callable[[], None], *, cancel: Callable[[], None]) -> None:
        """Call ``finish`` from :meth:`finish`, or ``cancel`` from :meth:`abort`."""
        self._finishers.append((finish, cancel))

    def finish(self) -> None:
        """Collect the background work, in the order it was registered."""
        while self._finishers:
            finish, _ = self._finishers.pop(0)
            finish()

    def abort(self) -> None:
        """Stop the background work still registered."""
        while self._finishers:
            _, cancel = self._finishers.pop(0)
            cancel()
