"""Figures for the report, rendered to PNG bytes (matplotlib without a display)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def fraction_curve(table: pd.DataFrame, minority: str | None) -> bytes:
    """Balanced accuracy against the kept fraction of minority patients, one line per condition (Fig. 3)."""
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for condition, part in table.groupby("condition", sort=False):
        part = part.sort_values("keep")
        axis.errorbar(part["keep"] * 100, part["mean"], yerr=part["std"].fillna(0), marker="o", capsize=3,
                      label=condition)
    axis.set_xlabel(f"% of {minority or 'minority'} patients kept in training")
    axis.set_ylabel("balanced accuracy (mean ± std over folds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _png(figure)


def confusion_figure(matrix: pd.DataFrame, title: str) -> bytes:
    figure, axis = plt.subplots(figsize=(3.6, 3.2))
    axis.imshow(matrix.to_numpy(dtype=float), cmap="Blues")
    axis.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(matrix.index)), matrix.index, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=8)
    peak = float(matrix.to_numpy(dtype=float).max() or 1)
    for i, row in enumerate(matrix.to_numpy(dtype=float)):
        for j, value in enumerate(row):
            axis.text(j, i, f"{value:g}", ha="center", va="center", fontsize=8,
                      color="white" if value > peak / 2 else "black")
    return _png(figure)
