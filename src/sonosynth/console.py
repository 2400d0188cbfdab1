"""Printing tables and results for the CLI on stdout; library code returns data, this shows it.

Messages and progress go through `logging` (see `sonosynth.logs`); this module prints results. While a
study runs, `mirrors` holds a console writing into its `run.log`, so the log keeps the tables too.
"""

from __future__ import annotations

import os
import sys

import pandas as pd
from rich.console import Console
from rich.table import Table

# Piped output (logs, CI) would otherwise be cut at 80 columns, truncating table cells.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 180)
mirrors: list[Console] = []


def show(renderable: object) -> None:
    """Print on stdout and into every active run log."""
    console.print(renderable)
    for mirror in mirrors:
        mirror.print(renderable)
        mirror.file.flush()


def print_table(frame: pd.DataFrame, title: str | None = None, index: bool = False) -> None:
    table = Table(title=title, title_justify="left")
    data = frame.reset_index() if index else frame
    for position, column in enumerate(data.columns):
        numeric = pd.api.types.is_numeric_dtype(data[column])
        if position == 0:
            # The row names (conditions such as "real+synthetic+regular [SinDDM]") must never be cut:
            # a truncated name is ambiguous. Other columns may wrap.
            longest = max([len(str(column)), *(len(str(v)) for v in data[column])])
            table.add_column(str(column), justify="left", no_wrap=True, min_width=longest)
        else:
            table.add_column(str(column), justify="right" if numeric else "left")
    for row in data.itertuples(index=False):
        table.add_row(*("" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row))
    show(table)
