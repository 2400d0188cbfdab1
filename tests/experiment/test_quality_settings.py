"""`quality.preset` + `quality.overrides` are resolved once, validated with the field named, and reach every quality unit."""

from __future__ import annotations

import pytest
from tests.experiment.conftest import SMOKE, smoke_spec

from sonosynth.errors import SonosynthError
from sonosynth.experiment.dry_run import dry_run
from sonosynth.experiment.plan import resolve_study

SPLIT = {"folds": 3, "minority": "pneumonia", "keep": [1.0]}


def _quality_units(tmp_path, **quality):
    spec = smoke_spec(split=SPLIT, quality={**SMOKE["quality"], **quality})
    return dry_run(spec, tmp_path / "run").plan.of_kind("quality")


def test_reader_overrides_reach_every_quality_unit_and_change_its_key(tmp_path):
    plain = _quality_units(tmp_path / "a")
    full_size = _quality_units(tmp_path / "b", overrides={"reader": {"image_size": 128, "stem_stride": 2,
                                                                      "highpass_weight": 0.0}})
    assert plain and len(plain) == len(full_size)
    for unit in full_size:
        metrics = unit.args[4]
        assert (metrics.reader.image_size, metrics.reader.stem_stride, metrics.reader.highpass_weight) == (128, 2, 0.0)
        assert metrics.audit_size == plain[0].args[4].audit_size  # the rest is the preset's
    assert {u.key for u in plain}.isdisjoint(u.key for u in full_size)


def test_the_spec_threshold_and_reader_switch_win_over_the_preset(tmp_path):
    (unit, *_) = _quality_units(tmp_path, threshold=0.9, reader=False)
    assert unit.args[4].threshold == 0.9 and unit.args[4].reader_enabled is False


@pytest.mark.parametrize(("field", "value"), [("stem_stride", 3), ("highpass_weight", -1.0), ("gain_jitter", 1.0),
                                           ("crop_min", 0.0)])
def test_a_bad_override_names_the_spec_field(field, value):
    spec = smoke_spec(split=SPLIT, quality={**SMOKE["quality"], "overrides": {"reader": {field: value}}})
    with pytest.raises(SonosynthError, match=rf"quality\.overrides\.reader\.{field}"):
        resolve_study(spec)


def test_a_changed_preset_file_changes_the_quality_keys_though_the_spec_is_the_same(tmp_path, monkeypatch):
    from sonosynth import config

    before = _quality_units(tmp_path / "a")
    real_values = config.preset_values

    def edited(component, preset):
        values = real_values(component, preset)
        return {**values, "audit_size": values.get("audit_size", 64) + 8} if component == "quality" else values

    monkeypatch.setattr(config, "preset_values", edited)
    after = _quality_units(tmp_path / "b")
    assert after[0].args[4].audit_size == before[0].args[4].audit_size + 8
    assert {u.key for u in before}.isdisjoint(u.key for u in after)
