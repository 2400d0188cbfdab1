"""`--set` overrides: list items by index, and errors that name the field, the allowed range and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonosynth.config import deep_merge
from sonosynth.errors import SonosynthError
from sonosynth.experiment.spec import load_spec

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_an_override_addresses_a_list_item_by_index():
    base = {"generators": [{"name": "a", "n": 1}, {"name": "b", "n": 2}], "seed": 0}
    merged = deep_merge(base, {"generators": {"1": {"n": 5}}, "seed": 3})
    assert merged == {"generators": [{"name": "a", "n": 1}, {"name": "b", "n": 5}], "seed": 3}
    assert base["generators"][1]["n"] == 2  # the base is not changed
    with pytest.raises(SonosynthError, match=r"generators\.7: no such item; generators has 2 item\(s\)"):
        deep_merge(base, {"generators": {"7": {"n": 5}}})


def test_a_bad_value_in_a_list_item_names_the_field_and_the_allowed_range():
    with pytest.raises(SonosynthError) as caught:
        load_spec(DEMO, {"generators": {"0": {"samples_per_model": -1}}})
    message = str(caught.value)
    assert "generators[0].samples_per_model" in message and "greater than or equal to 1" in message
    assert "(got -1)" in message
    assert load_spec(DEMO, {"generators": {"0": {"samples_per_model": 3}}}).generators[0].samples_per_model == 3
