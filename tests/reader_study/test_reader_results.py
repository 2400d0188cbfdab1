"""Results against answers worked out by hand: rates, Wilson intervals, sensitivity/specificity, kappas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sonosynth.reader_study.results import (
    accuracy_table,
    agreement_table,
    detection_table,
    fleiss_kappa,
    table4,
    wilson_interval,
)

Z = 1.959963984540054  # the 97.5% normal quantile


def answers_frame(rows: list[tuple[str, str, str | None, str]]) -> pd.DataFrame:
    """(reader, image_id, generator or None for real, answer) -> the answers table."""
    return pd.DataFrame(
        [{"reader": r, "image_id": i, "origin": "real" if g is None else "synthetic", "generator": g, "answer": a}
         for r, i, g, a in rows]
    )


def one_reader() -> pd.DataFrame:
    # Generator X: 3 of 4 caught; generator Y: 1 of 4 caught; real: 1 of 4 falsely called synthetic.
    s, r = "synthetic", "real"
    rows = [("ann", f"x{k}", "X", a) for k, a in enumerate([s, s, s, r])]
    rows += [("ann", f"y{k}", "Y", a) for k, a in enumerate([s, r, r, r])]
    rows += [("ann", f"r{k}", None, a) for k, a in enumerate([s, r, r, r])]
    return answers_frame(rows)


def test_wilson_interval_by_hand():
    # 3/32: p = 0.09375, z^2 = 3.8415; centre = (p + z^2/64) / (1 + z^2/32), half-width from the score formula.
    low, high = wilson_interval(3, 32)
    assert low == pytest.approx(0.0324016, abs=1e-6) and high == pytest.approx(0.2421815, abs=1e-6)
    # At 0/n the upper bound is z^2 / (n + z^2), at n/n the lower bound is n / (n + z^2).
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z**2 / (10 + Z**2)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + Z**2), 1.0))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_detection_rates_per_generator_and_false_alarms():
    table = detection_table(one_reader())
    assert table["group"].tolist() == ["X", "Y", "real"]
    assert table["measure"].tolist() == ["fake-detection rate", "fake-detection rate", "false-alarm rate"]
    assert table["called_synthetic"].tolist() == [3, 1, 1]
    assert table["images"].tolist() == [4, 4, 4]
    assert table["rate"].tolist() == [0.75, 0.25, 0.25]
    assert table.loc[0, ["ci_low", "ci_high"]].tolist() == pytest.approx(list(wilson_interval(3, 4)))


def test_sensitivity_and_specificity():
    row = accuracy_table(one_reader()).iloc[0]
    assert row["answered"] == 12
    assert row["sensitivity"] == pytest.approx(4 / 8)  # 3 + 1 of 8 synthetic called synthetic
    assert row["specificity"] == pytest.approx(3 / 4)  # 3 of 4 real called real
    assert row["accuracy"] == pytest.approx(7 / 12)
    assert (row["specificity_ci_low"], row["specificity_ci_high"]) == pytest.approx(wilson_interval(3, 4))


def test_table4_cells():
    table = table4(detection_table(one_reader()))
    assert table.columns.tolist() == ["group", "measure", "ann"]
    assert table["ann"].iloc[0].startswith("75.0% (3/4; ")
    assert table["group"].iloc[-1] == "real"


def test_cohen_kappa_two_readers_by_hand():
    # 10 images; the readers agree on 8. Each says synthetic 5 times: p_e = 0.5, kappa = (0.8 - 0.5) / 0.5 = 0.6.
    a = ["synthetic"] * 5 + ["real"] * 5
    b = ["synthetic"] * 4 + ["real"] * 5 + ["synthetic"]
    rows = [("ann", f"i{k}", "X", v) for k, v in enumerate(a)] + [("bob", f"i{k}", "X", v) for k, v in enumerate(b)]
    table = agreement_table(answers_frame(rows))
    cohen = table[table["statistic"] == "Cohen's kappa"].iloc[0]
    assert cohen["readers"] == "ann vs bob" and cohen["images"] == 10
    assert cohen["kappa"] == pytest.approx(0.6)
    # With equal marginals Fleiss' kappa for two readers is the same 0.6.
    assert table[table["statistic"] == "Fleiss' kappa"]["kappa"].iloc[0] == pytest.approx(0.6)


def test_fleiss_kappa_by_hand():
    # Three raters, four images, counts [synthetic, real]. P_i = 1, 1, 1/3, 1 -> mean 5/6;
    # category shares 2/3 and 1/3 -> p_e = 5/9; kappa = (5/6 - 5/9) / (4/9) = 5/8.
    assert fleiss_kappa(np.array([[3, 0], [3, 0], [2, 1], [0, 3]])) == pytest.approx(5 / 8)
    # Balanced shares: mean P_i = 2/3, p_e = 1/2 -> kappa = 1/3.
    assert fleiss_kappa(np.array([[3, 0], [0, 3], [2, 1], [1, 2]])) == pytest.approx(1 / 3)
    assert math.isnan(fleiss_kappa(np.array([[3, 0], [3, 0]])))  # one category only: undefined
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([[2, 0], [3, 0]]))


def test_agreement_uses_images_all_readers_answered():
    s, r = "synthetic", "real"
    rows = [("ann", f"i{k}", "X", v) for k, v in enumerate([s, s, s, r])]
    rows += [("bob", f"i{k}", "X", v) for k, v in enumerate([s, s, r, r])]
    rows += [("cy", f"i{k}", "X", v) for k, v in enumerate([s, r, s])]  # cy stopped after three
    table = agreement_table(answers_frame(rows))
    assert table["statistic"].tolist() == ["Cohen's kappa"] * 3 + ["Fleiss' kappa"]
    assert table["images"].tolist() == [4, 3, 3, 3]
    # Fleiss over i0..i2: counts [3,0], [2,1], [2,1]; P_i = 1, 1/3, 1/3 -> 5/9; shares 7/9, 2/9 -> p_e = 53/81.
    expected = (5 / 9 - 53 / 81) / (1 - 53 / 81)
    assert table["kappa"].iloc[-1] == pytest.approx(expected)


def test_single_reader_has_no_agreement_rows():
    assert agreement_table(one_reader()).empty


def test_unknown_answers_are_refused():
    frame = one_reader()
    frame.loc[0, "answer"] = "maybe"
    with pytest.raises(ValueError, match="maybe"):
        detection_table(frame)
