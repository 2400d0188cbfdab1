"""Classification metrics on real validation images, their aggregation over folds, and paired comparisons.

Per-fold numbers come from scikit-learn. Five folds of a metric with a large spread say little on
their own, so two regimes run on the same folds are compared pairwise: a Wilcoxon signed-rank test
on the per-fold differences and a seeded paired bootstrap confidence interval of the mean difference.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError

PER_CLASS_METRICS = ("precision", "recall", "f1", "support")


@dataclass(frozen=True)
class ClassificationReport:
    """One evaluation: overall scores, a per-class table and the confusion matrix (rows true, columns predicted)."""

    accuracy: float
    balanced_accuracy: float
    per_class: pd.DataFrame  # index: class; columns: precision, recall, f1, support
    confusion: pd.DataFrame  # index: true class; columns: predicted class

    @property
    def classes(self) -> list[str]:
        return list(self.per_class.index)

    def to_dict(self) -> dict[str, Any]:
        """The `metrics.json` layout: accuracy, balanced_accuracy, macro_f1 and per_class[label][metric]."""
        per_class = {
            str(label): {"precision": float(row.precision), "recall": float(row.recall), "f1": float(row.f1),
                         "support": int(row.support)}
            for label, row in self.per_class.iterrows()
        }
        return {"accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy,
                "macro_f1": float(self.per_class["f1"].mean()), "per_class": per_class}


def classification_report(true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> ClassificationReport:
    """Scores of predicted against true labels, with `classes` fixing the row/column order.

    Classes absent from both sides still get a row (zeros), so folds always line up. Balanced
    accuracy is the mean recall over the classes that occur in `true` (scikit-learn's definition).
    """
    true = [str(t) for t in true]
    predicted = [str(p) for p in predicted]
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true labels but {len(predicted)} predictions")
    if not true:
        raise SonosynthError("no validation images to score; the evaluation fold is empty.")
    classes = [str(c) for c in classes]
    unknown = sorted((set(true) | set(predicted)) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {classes}")
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=classes, zero_division=0
    )
    per_class = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)},
        index=pd.Index(classes, name="class"),
    )
    matrix = confusion_matrix(true, predicted, labels=classes)
    confusion = pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted"))
    return ClassificationReport(
        accuracy=float(accuracy_score(true, predicted)),
        balanced_accuracy=float(_balanced_accuracy(true, predicted)),
        per_class=per_class,
        confusion=confusion,
    )


def _balanced_accuracy(true: list[str], predicted: list[str]) -> float:
    with warnings.catch_warnings():
        # sklearn warns when a predicted class never occurs in `true`; that is a normal outcome here.
        warnings.simplefilter("ignore", UserWarning)
        return balanced_accuracy_score(true, predicted)


def evaluate_manifest(validation: Manifest, predicted: Sequence[str], classes: Sequence[str]) -> ClassificationReport:
    """Score predictions for a validation manifest, refusing synthetic rows (they are never evaluation data)."""
    synthetic = validation.table["origin"] == "synthetic"
    if synthetic.any():
        raise SonosynthError(
            f"{validation.root}: {int(synthetic.sum())} synthetic image(s) in the evaluation set; "
            "metrics are computed on real validation images only."
        )
    return classification_report(validation.labels, predicted, classes)


# ----------------------------------------------------------------------------- across folds
def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """`metrics.json` content as flat `name -> value` (per-class entries become `per_class.<label>.<metric>`)."""
    flat = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for label, values in metrics.get("per_class", {}).items():
        for name, value in values.items():
            flat[f"per_class.{label}.{name}"] = float(value)
    return flat


def _as_dict(result: ClassificationReport | Mapping[str, Any]) -> Mapping[str, Any]:
    return result.to_dict() if isinstance(result, ClassificationReport) else result


def aggregate_folds(results: Sequence[ClassificationReport | Mapping[str, Any]]) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1) of every metric over folds, as the studies report them.

    One row per metric with `mean`, `std`, `folds` and `text` ("0.812 ± 0.035"). A metric missing in a
    fold (a class absent there) is averaged over the folds that have it.
    """
    if not results:
        raise ValueError("no fold results to aggregate")
    table = pd.DataFrame([flatten_metrics(_as_dict(r)) for r in results])
    summary = pd.DataFrame({
        "mean": table.mean(),
        "std": table.std(ddof=1) if len(table) > 1 else pd.Series(np.nan, index=table.columns),
        "folds": table.count(),
    })
    summary.index.name = "metric"
    summary["text"] = [
        f"{m:.3f}" if np.isnan(s) else f"{m:.3f} ± {s:.3f}" for m, s in zip(summary["mean"], summary["std"], strict=True)
    ]
    return summary


@dataclass(frozen=True)
class PairedComparison:
    """Regime B minus regime A over the same folds."""

    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    confidence: float
    wilcoxon_statistic: float
    p_value: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def paired_comparison(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95,
                      n_resamples: int = 10_000, seed: int = 0) -> PairedComparison:
    """Compare per-fold scores `b` against `a` (same folds, same order).

    The Wilcoxon signed-rank test (two-sided, exact for small n) asks whether the differences are
    centred at zero; with five folds its smallest possible p is 0.0625, which is itself worth knowing.
    The bootstrap resamples folds with replacement and gives a percentile interval of the mean
    difference; the same seed gives the same interval.
    """
    a_values = np.asarray(a, dtype=float)
    b_values = np.asarray(b, dtype=float)
    if a_values.shape != b_values.shape or a_values.ndim != 1:
        raise ValueError(f"paired scores need equal-length 1-D sequences, got {a_values.shape} and {b_values.shape}")
    if len(a_values) < 2:
        raise ValueError("a paired comparison needs at least two folds")
    if np.isnan(a_values).any() or np.isnan(b_values).any():
        raise ValueError("paired scores contain NaN; compare a metric every fold has")
    differences = b_values - a_values
    mean = float(differences.mean())
    if np.all(differences == differences[0]):
        low = high = mean  # no spread: every resample has the same mean
    else:
        interval = stats.bootstrap(
            (differences,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
            method="percentile", rng=np.random.default_rng(seed),
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
    with warnings.catch_warnings():
        # All-zero differences make scipy's normal approximation divide by zero; the result (p=1) is right.
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.wilcoxon(differences, zero_method="wilcox", alternative="two-sided")
    p_value = float(test.pvalue) if np.isfinite(test.pvalue) else 1.0
    statistic = float(test.statistic)
    return PairedComparison(n=len(differences), mean_difference=mean, ci_low=low, ci_high=high,
                            confidence=confidence, wilcoxon_statistic=statistic, p_value=p_value)


def compare_regimes(a: Sequence[ClassificationReport | Mapping[str, Any]],
                    b: Sequence[ClassificationReport | Mapping[str, Any]],
                    metric: str = "balanced_accuracy", **options: Any) -> PairedComparison:
    """Paired comparison of one metric (a flat name, e.g. `per_class.pneumonia.f1`) between two regimes' folds."""
    if len(a) != len(b):
        raise ValueError(f"regimes have {len(a)} and {len(b)} folds; pair them fold by fold")

    def values(results: Sequence[ClassificationReport | Mapping[str, Any]]) -> list[float]:
        flat = [flatten_metrics(_as_dict(r)) for r in results]
        missing = [i for i, f in enumerate(flat) if metric not in f]
        if missing:
            raise ValueError(f"metric {metric!r} is missing in fold result(s) {missing}")
        return [f[metric] for f in flat]

    return paired_comparison(values(a), values(b), **options)


# ----------------------------------------------------------------- classification accuracy score
CAS_KEYS = ("fold", "keep", "classifier", "seed")


def classification_accuracy_score(results: pd.DataFrame, synthetic_regime: str = "synthetic-only",
                                  real_regime: str = "real") -> pd.DataFrame:
    """CAS (Ravuri & Vinyals 2019): balanced accuracy of a classifier trained on synthetic images only,
    over that of the same classifier trained on real images only, both scored on the same real fold.

        CAS = BA(synthetic-only [generator], fold, keep, classifier, seed) / BA(real, fold, keep, classifier, seed)

    `results` is the study's results table (one row per class and run, or one per run), with columns
    fold, keep, regime, generator, classifier, seed, balanced_accuracy. Only pairs where both regimes
    ran are used. One row per (generator, fold, keep, classifier, seed) with both accuracies and `cas`;
    empty when no pair exists. Deliberate difference: the paper reports top-1 accuracy on ImageNet's
    balanced classes; a minority-class study needs balanced accuracy for the ratio to mean anything.
    1.0 means the synthetic images alone teach the classifier as much as the real ones.
    """
    columns = ["generator", *CAS_KEYS, "synthetic_balanced_accuracy", "real_balanced_accuracy", "cas"]
    needed = {"regime", "generator", "balanced_accuracy", *CAS_KEYS}
    if results.empty or not needed <= set(results.columns):
        return pd.DataFrame(columns=columns)
    runs = results.drop_duplicates([*CAS_KEYS, "regime", "generator"])
    synthetic = runs[runs["regime"] == synthetic_regime][["generator", *CAS_KEYS, "balanced_accuracy"]]
    real = runs[runs["regime"] == real_regime][[*CAS_KEYS, "balanced_accuracy"]]
    paired = synthetic.merge(real, on=list(CAS_KEYS), suffixes=("_synthetic", "_real"))
    paired = paired.rename(columns={"balanced_accuracy_synthetic": "synthetic_balanced_accuracy",
                                    "balanced_accuracy_real": "real_balanced_accuracy"})
    with np.errstate(divide="ignore", invalid="ignore"):
        paired["cas"] = paired["synthetic_balanced_accuracy"] / paired["real_balanced_accuracy"]
    return paired[columns].sort_values(["generator", *CAS_KEYS]).reset_index(drop=True)
