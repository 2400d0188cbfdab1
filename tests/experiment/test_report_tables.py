"""Report table helpers: confidence intervals stay inside a metric's range."""

import pandas as pd
import pytest

from sonosynth.report.tables import ci95, ci_text, to_markdown


def test_ci_of_accuracies_near_one_is_clipped_to_one():
    values = pd.Series([1.0, 0.98, 1.0, 0.975, 1.0])
    low, high = ci95(values)
    assert high > 1.0  # the raw t-interval passes the metric's range ...
    text = ci_text(values)
    assert text.endswith(", 1.000]") and text.startswith(f"[{low:.3f}")  # ... the reported one does not


def test_ci_of_one_fold_is_empty():
    assert ci_text(pd.Series([0.7])) == ""


def _results(conditions, folds=4):
    rows = []
    for fold in range(folds):
        for i, condition in enumerate(conditions):
            regime, _, generator = condition.partition(" [")
            rows.append({"fold": fold, "keep": 0.25, "classifier": "small_cnn", "seed": 0, "condition": condition,
                         "regime": regime, "generator": generator.rstrip("]") or None,
                         "class": "pneumonia", "balanced_accuracy": 0.6 + 0.05 * i + 0.01 * fold, "f1": 0.5})
    return pd.DataFrame(rows)


def test_with_real_regular_the_report_also_pairs_synthetic_plus_regular_against_it():
    from sonosynth.report.build import _paired_baselines
    from sonosynth.report.tables import paired_table

    conditions = ["real", "real+regular", "real+synthetic [G]", "real+synthetic+regular [G]"]
    tables = list(_paired_baselines("real", set(conditions)))
    assert [against for against, _, _ in tables] == ["real", "real+regular"]
    against, only, _ = tables[1]
    paired = paired_table(_results(conditions), against)
    chosen = paired[paired["condition"].map(only)]
    assert list(chosen["condition"]) == ["real+synthetic+regular [G]"] and set(chosen["vs"]) == {"real+regular"}
    assert chosen["mean diff"].iloc[0] == pytest.approx(0.1)  # 0.75 - 0.65 on every fold
    assert [a for a, _, _ in _paired_baselines("real", {"real", "real+synthetic [G]"})] == ["real"]


def test_markdown_cells_print_rounding_noise_as_zero_and_keep_small_real_values():
    table = pd.DataFrame({"mean difference": [-2.220446049250313e-17, 0.0004, float("nan")], "p": [1.0, 0.0625, 0.5]})
    rows = to_markdown(table).splitlines()[2:]
    assert rows == ["| 0 | 1 |", "| 0.0004 | 0.0625 |", "|  | 0.5 |"]
