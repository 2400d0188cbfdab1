"""Report table helpers: confidence intervals stay inside a metric's range."""

import pandas as pd

from sonosynth.report.tables import ci95, ci_text


def test_ci_of_accuracies_near_one_is_clipped_to_one():
    values = pd.Series([1.0, 0.98, 1.0, 0.975, 1.0])
    low, high = ci95(values)
    assert high > 1.0  # the raw t-interval passes the metric's range ...
    text = ci_text(values)
    assert text.endswith(", 1.000]") and text.startswith(f"[{low:.3f}")  # ... the reported one does not


def test_ci_of_one_fold_is_empty():
    assert ci_text(pd.Series([0.7])) == ""
