"""A plain fixed-width table that prints as rows arrive.

Rich's ``Table`` measures every cell through its layout engine before printing anything:
10,000 rows took 7-10 s and ``tcm list | head`` waited for all of them. A listing's cells are
short plain strings, so this writes them with ``str.ljust``: widths come from the first
``SAMPLE`` rows (a later, longer cell widens nothing and is cut only on a terminal), so the
first lines appear at once and memory does not grow with the number of rows.

On a terminal the table fits its width: the flexible columns (a name, a path) are cut with an
ellipsis down to their minimum, then the least important columns are left out; ``wide`` (or
output that is not a terminal) shows every column and every value whole. Data is never markup.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

SAMPLE = 20_000
GAP = "  "
_ANSI = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33"}


@dataclass(frozen=True)
class Column:
    title: str
    right: bool = False
    #: may be cut to fit a terminal, down to this width (0: never cut)
    min_width: int = 0
    #: cut from the start ("…/cache/dir") rather than the end
    cut_start: bool = False
    #: higher is left out first when even the minimum widths do not fit (0: always kept)
    drop: int = 0


#: one cell: its text, and a colour name (see _ANSI) or None
Cell = tuple[str, str | None]


def colors_wanted(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ


def cut(text: str, width: int, from_start: bool = False) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return "…" + text[-(width - 1) :] if from_start else text[: width - 1] + "…"


def fit(columns: Sequence[Column], natural: list[int], width: int | None) -> list[int | None]:
    """Each column's width, or None where the column is left out."""
    widths: list[int | None] = list(natural)
    if width is None:
        return widths

    def total() -> int:
        shown = [w for w in widths if w is not None]
        return sum(shown) + len(GAP) * (len(shown) - 1)

    # 1. cut the flexible columns, the widest first, down to their minimum
    while total() > width:
        flex = [
            i for i, c in enumerate(columns)
            if c.min_width and widths[i] is not None and widths[i] > c.min_width  # type: ignore[operator]
        ]  # fmt: skip
        if not flex:
            break
        i = max(flex, key=lambda j: widths[j] or 0)
        widths[i] = max(columns[i].min_width, (widths[i] or 0) - (total() - width))
    # 2. leave out the least important columns
    for i in sorted((j for j, c in enumerate(columns) if c.drop), key=lambda j: -columns[j].drop):
        if total() <= width:
            break
        widths[i] = None
    return widths


def render(
    columns: Sequence[Column],
    rows: Iterable[Sequence[Cell]],
    write: Callable[[str], object],
    *,
    width: int | None,
    color: bool,
) -> int:
    """Write the header and the rows; returns how many rows were written."""
    it = iter(rows)
    head = list(itertools.islice(it, SAMPLE))
    n_cols = len(columns)
    natural = [
        max([len(c.title)] + [len(row[i][0]) for row in head]) for i, c in enumerate(columns)
    ]
    used = [any(row[i][0] for row in head) for i in range(n_cols)]
    # a column empty in every sampled row is left out (e.g. HITS when nothing was tracked)
    shown = [i for i, c in enumerate(columns) if not c.drop or used[i]]
    widths = fit([columns[i] for i in shown], [natural[i] for i in shown], width)
    # (index, width, right-aligned, cut from start) of each column printed
    plan = [
        (i, w, columns[i].right, columns[i].cut_start)
        for i, w in zip(shown, widths, strict=True)
        if w is not None
    ]

    def line(cells: Sequence[Cell], bold: bool = False) -> str:
        parts = []
        for i, w, right, cut_start in plan:
            text, style = cells[i]
            if width is not None and len(text) > w:
                text = cut(text, w, cut_start)
            padded = text.rjust(w) if right else text.ljust(w)
            if color and (style or bold):
                padded = f"\033[{_ANSI['bold' if bold else style]}m{padded}\033[0m"  # type: ignore[index]
            parts.append(padded)
        return GAP.join(parts).rstrip() + "\n"

    write(line([(c.title, None) for c in columns], bold=True))
    n = 0
    for row in itertools.chain(head, it):
        write(line(row))
        n += 1
    return n
