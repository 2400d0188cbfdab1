"""Every shipped study preset must be a valid spec naming registered generators and classifiers."""

from pathlib import Path

import pytest

from sonosynth.experiment.spec import load_spec

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_the_presets_exist():
    assert {p.stem for p in CONFIGS} >= {"lung-paper", "fetal-paper", "fetal-cpu"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_preset_is_a_valid_spec(path):
    from sonosynth.classify import classifier_names
    from sonosynth.config import load_config, preset_names
    from sonosynth.generators.base import create_generator

    spec = load_spec(path)
    for classifier in spec.classifiers:
        assert classifier.model in classifier_names()
        assert classifier.preset in preset_names("classifier")
    for generator in spec.generators:
        implementation = create_generator(generator.kind)
        # Loading validates the preset plus the spec's overrides against the generator's config type.
        load_config(implementation.config_type, implementation.presets, generator.preset, generator.overrides)
