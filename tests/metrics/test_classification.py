"""Classification metrics against hand-computed values, fold aggregation and the paired comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError
from sonosynth.metrics.classification import (
    aggregate_folds,
    classification_report,
    compare_regimes,
    evaluate_manifest,
    paired_comparison,
)

CLASSES = ["a", "b", "c"]


def test_report_matches_a_hand_computed_confusion_matrix():
    true = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "c", "c"]
    report = classification_report(true, predicted, CLASSES)
    # rows true, columns predicted
    assert report.confusion.to_numpy().tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report.accuracy == pytest.approx(4 / 6)
    # recalls 2/3, 1/2, 1 -> their mean
    assert report.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    np.testing.assert_allclose(report.per_class["precision"], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(report.per_class["recall"], [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(report.per_class["f1"], [0.8, 0.5, 2 / 3])
    assert report.per_class["support"].tolist() == [3, 2, 1]


def test_absent_and_never_true_classes_keep_their_rows():
    # "c" never occurs as truth: it gets support 0 and stays out of the balanced accuracy.
    report = classification_report(["a", "a", "b", "b"], ["a", "c", "b", "b"], CLASSES)
    assert report.confusion.loc["a"].tolist() == [1, 0, 1]
    assert report.per_class.loc["c"].tolist() == [0.0, 0.0, 0.0, 0]
    assert report.balanced_accuracy == pytest.approx((0.5 + 1.0) / 2)
    # and "d" as a prediction is not a known class
    with pytest.raises(ValueError, match="not among the classes"):
        classification_report(["a"], ["d"], CLASSES)


def test_metrics_json_layout():
    data = classification_report(["a", "b", "c"], ["a", "b", "b"], CLASSES).to_dict()
    assert {"accuracy", "balanced_accuracy", "per_class"} <= data.keys()
    assert set(data["per_class"]) == set(CLASSES)
    assert data["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert isinstance(data["per_class"]["a"]["support"], int)


def test_evaluation_refuses_synthetic_rows(tmp_path):
    rows = [
        {"path": "x.png", "label": "a", "patient_id": "p1"},
        {"path": "y.png", "label": "b", "patient_id": "s", "origin": "synthetic", "generator": "g"},
    ]
    manifest = Manifest.from_rows(rows, tmp_path)
    with pytest.raises(SonosynthError, match="real validation images only"):
        evaluate_manifest(manifest, ["a", "b"], CLASSES)
    report = evaluate_manifest(manifest.where(manifest.table["origin"] == "real"), ["a"], CLASSES)
    assert report.accuracy == 1.0


def test_aggregation_is_mean_and_sample_std_over_folds():
    folds = [
        {"accuracy": 0.5, "balanced_accuracy": 0.4, "per_class": {"a": {"f1": 0.1, "support": 3}}},
        {"accuracy": 0.7, "balanced_accuracy": 0.6, "per_class": {"a": {"f1": 0.3, "support": 3}}},
        {"accuracy": 0.9, "balanced_accuracy": 0.8, "per_class": {"a": {"f1": 0.5, "support": 3}}},
    ]
    summary = aggregate_folds(folds)
    assert summary.loc["accuracy", "mean"] == pytest.approx(0.7)
    assert summary.loc["accuracy", "std"] == pytest.approx(0.2)  # ddof=1
    assert summary.loc["per_class.a.f1", "mean"] == pytest.approx(0.3)
    assert summary.loc["accuracy", "text"] == "0.700 ± 0.200"
    assert summary.loc["accuracy", "folds"] == 3


def test_paired_comparison_on_known_differences():
    a = [0.5, 0.5, 0.5, 0.5, 0.5]
    b = [1.5, 2.5, 3.5, 4.5, 5.5]  # differences 1..5
    result = paired_comparison(a, b, seed=0)
    assert result.n == 5
    assert result.mean_difference == pytest.approx(3.0)
    # exact two-sided Wilcoxon: all 5 ranks positive -> W- = 0, p = 2 / 2**5
    assert result.wilcoxon_statistic == 0.0
    assert result.p_value == pytest.approx(0.0625)
    # a resampled mean of values in [1, 5] stays in [1, 5]; the interval holds the observed mean
    assert 1.0 <= result.ci_low < 3.0 < result.ci_high <= 5.0
    assert paired_comparison(a, b, seed=0) == result  # seeded: reproducible

    one_negative = paired_comparison([0] * 5, [-1, 2, 3, 4, 5])
    assert one_negative.wilcoxon_statistic == 1.0  # the rank of |-1|
    assert one_negative.p_value == pytest.approx(0.125)  # 4 of 32 sign patterns are as extreme


def test_paired_comparison_without_spread_and_without_difference():
    constant = paired_comparison([0.2, 0.4, 0.6], [0.3, 0.5, 0.7])
    assert (constant.ci_low, constant.ci_high) == pytest.approx((0.1, 0.1))
    none = paired_comparison([0.2, 0.4, 0.6], [0.2, 0.4, 0.6])
    assert none.mean_difference == 0.0 and none.p_value == 1.0


def test_bootstrap_interval_has_the_normal_width_on_many_folds():
    rng = np.random.default_rng(1)
    differences = rng.normal(0.3, 1.0, size=400)
    result = paired_comparison(np.zeros(400), differences, n_resamples=4000, seed=3)
    half_width = 1.96 * differences.std(ddof=1) / np.sqrt(len(differences))
    assert result.ci_low == pytest.approx(differences.mean() - half_width, abs=0.2 * half_width)
    assert result.ci_high == pytest.approx(differences.mean() + half_width, abs=0.2 * half_width)
    assert result.p_value < 1e-3


def test_compare_regimes_pairs_fold_results_by_metric_name():
    base = [{"accuracy": 0.5, "balanced_accuracy": v, "per_class": {"p": {"f1": v}}} for v in (0.4, 0.5, 0.6)]
    better = [{"accuracy": 0.6, "balanced_accuracy": v + 0.1, "per_class": {"p": {"f1": v + 0.2}}}
              for v in (0.4, 0.5, 0.6)]
    assert compare_regimes(base, better).mean_difference == pytest.approx(0.1)
    assert compare_regimes(base, better, metric="per_class.p.f1").mean_difference == pytest.approx(0.2)
    with pytest.raises(ValueError, match="pair them fold by fold"):
        compare_regimes(base, better[:2])
    with pytest.raises(ValueError, match="missing"):
        compare_regimes(base, better, metric="per_class.q.f1")


# ----------------------------------------------------------------- classification accuracy score
def test_cas_is_synthetic_only_over_real_on_the_same_fold_and_classifier():
    from sonosynth.metrics.classification import classification_accuracy_score

    def run(fold, regime, generator, accuracy, classifier="small_cnn"):
        # Two rows per run (one per class), as the study's results.csv has them.
        return [{"fold": fold, "keep": 0.25, "regime": regime, "generator": generator, "classifier": classifier,
                 "seed": 0, "class": label, "balanced_accuracy": accuracy} for label in ("a", "b")]

    rows = (run(0, "real", "", 0.8) + run(0, "synthetic-only", "SinGAN", 0.4) + run(0, "synthetic-only", "SinDDM", 0.6)
            + run(1, "real", "", 0.5) + run(1, "synthetic-only", "SinDDM", 0.5)
            + run(2, "synthetic-only", "SinDDM", 0.9)  # no real run on fold 2: no CAS there
            + run(0, "real", "", 0.9, classifier="resnet18") + run(0, "real+synthetic", "SinDDM", 0.7))
    cas = classification_accuracy_score(pd.DataFrame(rows))
    assert list(zip(cas["generator"], cas["fold"], cas["cas"].round(6), strict=True)) == [
        ("SinDDM", 0, 0.75), ("SinDDM", 1, 1.0), ("SinGAN", 0, 0.5)]
    assert classification_accuracy_score(pd.DataFrame(run(0, "real", "", 0.8))).empty
