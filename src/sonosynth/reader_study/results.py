"""From answers to tables: fake-detection and false-alarm rates, sensitivity/specificity, agreement.

Pure functions over one DataFrame of answers joined with the key (columns `reader`, `image_id`,
`origin`, `generator`, `answer`, as `StudyStore.answers()` returns it). "Positive" means synthetic:
sensitivity is the share of synthetic images a reader called synthetic (the fake-detection rate of
the lung study's Table 4), specificity the share of real images called real (1 - false-alarm rate).
Proportions carry Wilson score intervals, which stay inside [0, 1] and behave at 0/32 and 32/32,
where the normal approximation collapses to a zero-width interval.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import cohen_kappa_score

from sonosynth.reader_study.store import ANSWERS

REAL_GROUP = "real"
ANSWER_COLUMNS = ("reader", "image_id", "origin", "generator", "answer")


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n is 0."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n]; got {successes} of {n}")
    if n == 0:
        return math.nan, math.nan
    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0/n and n/n the bound is exactly 0 or 1; the formula only reaches it up to rounding.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _check(answers: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ANSWER_COLUMNS if c not in answers.columns]
    if missing:
        raise ValueError(f"answers lack column(s) {missing}")
    bad = set(answers["answer"]) - set(ANSWERS)
    if bad:
        raise ValueError(f"unknown answer(s) {sorted(bad)}")
    answers = answers.copy()
    answers["group"] = np.where(answers["origin"] == "real", REAL_GROUP, answers["generator"])
    return answers


def _rate_row(called_synthetic: pd.Series, level: float) -> dict[str, float | int]:
    n, k = int(called_synthetic.size), int(called_synthetic.sum())
    low, high = wilson_interval(k, n, level)
    return {"images": n, "called_synthetic": k, "rate": k / n if n else math.nan, "ci_low": low, "ci_high": high}


def detection_table(answers: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per reader and group: how often the images were called synthetic.

    For a generator this is the fake-detection rate; for the group `real` it is the false-alarm rate.
    """
    answers = _check(answers)
    rows = []
    for (reader, group), part in answers.groupby(["reader", "group"], sort=True):
        measure = "false-alarm rate" if group == REAL_GROUP else "fake-detection rate"
        rows.append({"reader": reader, "group": group, "measure": measure,
                     **_rate_row(part["answer"] == "synthetic", level)})
    columns = ["reader", "group", "measure", "images", "called_synthetic", "rate", "ci_low", "ci_high"]
    table = pd.DataFrame(rows, columns=columns)
    # Generators first (alphabetically), the real images last, as in a Table-4 layout.
    order = table["group"].eq(REAL_GROUP).astype(int)
    return table.assign(_order=order).sort_values(["reader", "_order", "group"]).drop(columns="_order").reset_index(
        drop=True
    )


def accuracy_table(answers: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per reader, with synthetic as the positive class: sensitivity, specificity, accuracy, with Wilson CIs."""
    answers = _check(answers)
    rows = []
    for reader, part in answers.groupby("reader", sort=True):
        synthetic = part[part["origin"] == "synthetic"]
        real = part[part["origin"] == "real"]
        tp, tn = int((synthetic["answer"] == "synthetic").sum()), int((real["answer"] == "real").sum())
        correct = tp + tn
        row = {"reader": reader, "answered": len(part)}
        for name, k, n in (("sensitivity", tp, len(synthetic)), ("specificity", tn, len(real)),
                           ("accuracy", correct, len(part))):
            low, high = wilson_interval(k, n, level)
            row |= {name: k / n if n else math.nan, f"{name}_ci_low": low, f"{name}_ci_high": high}
        rows.append(row)
    return pd.DataFrame(rows)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (items, categories) matrix of how many raters put each item in each category.

    Every item must have the same number of raters (at least 2). Returns nan when chance agreement is
    perfect (all raters always used one category), where kappa is undefined.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError("counts must be a non-empty (items, categories) matrix")
    raters = counts.sum(axis=1)
    if not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise ValueError("every item needs the same number of raters, at least 2")
    n = raters[0]
    per_item = ((counts * counts).sum(axis=1) - n) / (n * (n - 1))
    observed = per_item.mean()
    shares = counts.sum(axis=0) / counts.sum()
    expected = float((shares * shares).sum())
    if math.isclose(expected, 1.0):
        return math.nan
    return float((observed - expected) / (1 - expected))


def _cohen(a: pd.Series, b: pd.Series) -> float:
    with warnings.catch_warnings():
        # Both readers giving one constant, identical answer makes kappa 0/0; report it as nan.
        warnings.simplefilter("ignore", RuntimeWarning)
        value = cohen_kappa_score(a, b, labels=list(ANSWERS))
    return float(value)


def agreement_table(answers: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa for every pair of readers and Fleiss' kappa over all, on images each of them answered."""
    answers = _check(answers)
    wide = answers.pivot_table(index="image_id", columns="reader", values="answer", aggfunc="first")
    readers = list(wide.columns)
    rows = []
    for first, second in itertools.combinations(readers, 2):
        both = wide[[first, second]].dropna()
        rows.append({"statistic": "Cohen's kappa", "readers": f"{first} vs {second}", "images": len(both),
                     "kappa": _cohen(both[first], both[second]) if len(both) else math.nan})
    if len(readers) >= 2:
        complete = wide.dropna()
        value = math.nan
        if len(complete):
            counts = np.stack([(complete == label).sum(axis=1).to_numpy() for label in ANSWERS], axis=1)
            value = fleiss_kappa(counts)
        rows.append({"statistic": "Fleiss' kappa", "readers": f"all {len(readers)}", "images": len(complete),
                     "kappa": value})
    return pd.DataFrame(rows, columns=["statistic", "readers", "images", "kappa"])


@dataclass(frozen=True)
class StudyResults:
    detection: pd.DataFrame
    accuracy: pd.DataFrame
    agreement: pd.DataFrame
    level: float


def study_results(answers: pd.DataFrame, level: float = 0.95) -> StudyResults:
    return StudyResults(detection_table(answers, level), accuracy_table(answers, level), agreement_table(answers),
                        level)


# ----------------------------------------------------------------------------- presentation
def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}%"


def format_rate(called: int, images: int, low: float, high: float) -> str:
    if images == 0:
        return "–"
    return f"{_percent(called / images)} ({called}/{images}; {_percent(low)}–{_percent(high)})"


def table4(detection: pd.DataFrame) -> pd.DataFrame:
    """Table-4 layout: one row per group (generators, then real), one column per reader, formatted cells."""
    if detection.empty:
        return pd.DataFrame(columns=["group", "measure"])
    cells = detection.assign(cell=[
        format_rate(r.called_synthetic, r.images, r.ci_low, r.ci_high) for r in detection.itertuples()
    ])
    wide = cells.pivot(index=["group", "measure"], columns="reader", values="cell").fillna("–")
    order = sorted(wide.index, key=lambda key: (key[0] == REAL_GROUP, key[0]))
    return wide.loc[order].reset_index().rename_axis(columns=None)


def accuracy_summary(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Sensitivity, specificity and accuracy per reader as formatted 'value (low–high)' cells."""
    rows = []
    for r in accuracy.to_dict("records"):
        row = {"reader": r["reader"], "answered": r["answered"]}
        for name in ("sensitivity", "specificity", "accuracy"):
            row[name] = (f"{_percent(r[name])} ({_percent(r[f'{name}_ci_low'])}–{_percent(r[f'{name}_ci_high'])})"
                         if not math.isnan(r[name]) else "–")
        rows.append(row)
    return pd.DataFrame(rows, columns=["reader", "answered", "sensitivity", "specificity", "accuracy"])


def agreement_summary(agreement: pd.DataFrame) -> pd.DataFrame:
    return agreement.assign(kappa=["–" if math.isnan(k) else f"{k:.3f}" for k in agreement["kappa"]])


__all__ = [
    "StudyResults", "accuracy_summary", "accuracy_table", "agreement_summary", "agreement_table", "detection_table",
    "fleiss_kappa", "format_rate", "study_results", "table4", "wilson_interval",
]
