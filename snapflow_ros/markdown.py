"""Markdown tables, written one way for every report (sim-table, ablation): a header row, the
separator, and one line per row, with any "|" inside a cell escaped so it cannot split the cell."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def table_lines(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The table's lines (no trailing newline), header first."""
    return [_line(header), "|" + "---|" * len(header), *(_line(row) for row in rows)]
