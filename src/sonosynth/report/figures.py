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


def confusion_pair(matrix: pd.DataFrame, title: str) -> bytes:
    """The confusion matrix as counts (left) and row-normalised, i.e. recall per true class (right)."""
    import numpy as np

    counts = matrix.to_numpy(dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    figure, axes = plt.subplots(1, 2, figsize=(5.0, 2.5))
    for axis, values, name, text in ((axes[0], counts, "counts", "{:g}"), (axes[1], normalised, "row-normalised",
                                                                             "{:.2f}")):
        axis.imshow(values, cmap="Blues", vmin=0, vmax=max(float(values.max()), 1e-9))
        axis.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=45, ha="right", fontsize=7)
        axis.set_yticks(range(len(matrix.index)), matrix.index, fontsize=7)
        axis.set_xlabel("predicted", fontsize=8)
        axis.set_ylabel("true", fontsize=8)
        axis.set_title(name, fontsize=8)
        peak = float(values.max() or 1)
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                axis.text(j, i, text.format(value), ha="center", va="center", fontsize=7,
                          color="white" if value > peak / 2 else "black")
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    return _png(figure)


def training_curves(generator_curves: dict[str, list[pd.Series]], classifier_curves: dict[str, pd.DataFrame],
                    title: str) -> bytes:
    """Left: each generator model's training loss (one line per model); right: classifier losses per condition.

    `generator_curves` maps a generator name to loss series (index: step); `classifier_curves` maps a
    condition to a frame with `epoch`, `train_loss` and `stop_loss` (the early-stopping patients).
    """
    figure, axes = plt.subplots(1, 2, figsize=(9.6, 3.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    left, right = axes
    for n, (name, curves) in enumerate(generator_curves.items()):
        for k, curve in enumerate(curves):
            smooth = curve.rolling(max(1, len(curve) // 50), min_periods=1).mean()
            left.plot(smooth.index, smooth.to_numpy(), color=colours[n % len(colours)], alpha=0.8, lw=1,
                      label=name if k == 0 else None)
    left.set_title("generator training loss (smoothed; one line per model)", fontsize=8)
    left.set_xlabel("training step", fontsize=8)
    # A GAN's Wasserstein loss goes negative; a log axis would hide those stretches.
    positive = all((curve > 0).all() for curves in generator_curves.values() for curve in curves)
    left.set_yscale("log" if positive else "symlog", **({} if positive else {"linthresh": 0.1}))
    if generator_curves:
        left.legend(fontsize=7)
    else:
        left.text(0.5, 0.5, "no generator losses recorded", ha="center", va="center", transform=left.transAxes)
    for n, (condition, frame) in enumerate(classifier_curves.items()):
        colour = colours[n % len(colours)]
        right.plot(frame["epoch"], frame["train_loss"], color=colour, lw=1, label=f"{condition} (train)")
        if frame["stop_loss"].notna().any():
            right.plot(frame["epoch"], frame["stop_loss"], color=colour, lw=1, ls="--")
    right.set_title("classifier loss: solid training, dashed early-stopping patients", fontsize=8)
    right.set_xlabel("epoch", fontsize=8)
    if classifier_curves:
        right.legend(fontsize=6)
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return _png(figure)


def metric_bars(table: pd.DataFrame, column: str, label: str, chance: float | None = None,
                bounds: tuple[float, float] = (0.0, 1.0)) -> bytes:
    """One bar per generator and kept fraction (mean over folds) of a quality column, e.g. reader AUC or CAS.

    The error bar is ± one std over folds, cut at the metric's range (an AUC cannot pass 1)."""
    keys = ["generator", "keep"] if "keep" in table and table["keep"].nunique() > 1 else ["generator"]
    grouped = table.groupby(keys, sort=False)[column].agg(["mean", "std"]).fillna(0)
    names = [" ".join([str(key[0]), f"{float(key[1]):.0%}"]) if len(keys) == 2 else str(key)
             for key in grouped.index]
    low = (grouped["mean"] - (grouped["mean"] - grouped["std"]).clip(lower=bounds[0])).to_numpy()
    high = ((grouped["mean"] + grouped["std"]).clip(upper=bounds[1]) - grouped["mean"]).to_numpy()
    figure, axis = plt.subplots(figsize=(max(4.2, 0.9 * len(names) + 1.5), 2.8))
    axis.bar(names, grouped["mean"], yerr=[low, high], capsize=3, color="#4c78a8")
    axis.set_ylim(bounds[0], bounds[1] * 1.05)
    if chance is not None:
        axis.axhline(chance, color="grey", ls="--", lw=1, label="chance")
        axis.legend(fontsize=7)
    axis.set_ylabel(label, fontsize=8)
    axis.tick_params(labelsize=7)
    axis.grid(alpha=0.3, axis="y")
    return _png(figure)
