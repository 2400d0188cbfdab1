"""The generator contract, checked on every registered generator (timm-style): fit, save, load, sample, resume.

The test also registers a fourth generator, `mean-image`, to show what adding one takes (and that the
contract holds for it): a config deriving from GeneratorConfig, a PretrainedGenerator with four small
methods, and a `fit` that calls `start_fit` and `commit_checkpoint`. It is registered for this test only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from sonosynth.config import load_config
from sonosynth.data.images import load_grayscale
from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError
from sonosynth.generators import base
from sonosynth.generators.base import (
    BaseGenerator,
    CheckpointRecord,
    GeneratorConfig,
    PretrainedGenerator,
    SampleGroup,
    SampleSettings,
    commit_checkpoint,
    create_generator,
    generator_names,
    load_training_images,
    single_label,
    start_fit,
    to_uint8,
)


# ------------------------------------------------------------------------------ a fourth generator
class MeanImageConfig(GeneratorConfig):
    noise: float = 0.1  # std of the noise added to the mean image, in [-1, 1] units


class MeanImageModel(PretrainedGenerator):
    """'Learns' the mean training image; a sample is the mean plus seeded noise."""

    kind = "mean-image"
    config_type = MeanImageConfig

    def __init__(self, folder, record, config, mean: torch.Tensor) -> None:
        super().__init__(folder, record, config)
        self.mean = mean

    @classmethod
    def _from_weights(cls, folder, record, config, tensors, device):
        return cls(folder, record, config, tensors["mean"].to(device))

    def weights(self):
        return {"mean": self.mean}

    def draw(self, group: SampleGroup, seeds, size, settings: SampleSettings) -> np.ndarray:
        noise = torch.stack([torch.randn(self.mean.shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return to_uint8((self.mean + self.config.noise * noise).clamp(-1, 1)[:, None].numpy())


class MeanImageGenerator(BaseGenerator):
    name: ClassVar[str] = "mean-image"
    config_type = MeanImageConfig
    model_type = MeanImageModel
    presets = "mean-image"

    def fit(self, training, out, config, *, device="auto", resume=True, progress=True) -> Path:
        single_label(training, self.name)
        start = start_fit(self.name, (self.name,), training, out, config, resume)  # no probe: no budget
        if start.record is None:
            images = np.stack(load_training_images(training)).astype(np.float32) / 127.5 - 1.0
            record = CheckpointRecord(kind=self.name, config=start.config.model_dump(mode="json"),
                                      training_images=start.images, step=1, complete=True)
            commit_checkpoint(out, record, {"mean": torch.from_numpy(images.mean(0))}, {"images": len(images)})
        return Path(out)


@pytest.fixture(autouse=True)
def _fourth_generator(monkeypatch):
    from sonosynth import config

    # `@register_generator("mean-image")` on the class would register it for good; a test registers it for itself.
    monkeypatch.setitem(base._GENERATORS._entries, "mean-image", MeanImageGenerator)
    real = config._presets
    monkeypatch.setattr(config, "_presets", lambda c: {"smoke": {}} if c == "mean-image" else real(c))


# ------------------------------------------------------------------------------ the contract
SMOKE = {  # the smoke preset, shrunk further so every generator fits in seconds
    "sinddm": {"train_steps": 4, "precision": "fp32"},
    "fewddm": {"train_steps": 4, "precision": "fp32"},
    "singan": {"iterations": 2, "max_size": 18, "min_size": 14},
    "guided": {"image_size": 16, "train": {"steps": 2, "checkpoint_every": 2}},
    "mean-image": {},
}
# Every generator the package registers (test helpers such as the runner tests' noisy-copy stand-in are not
# product generators), plus the fourth one above.
SHIPPED = sorted(name for name in generator_names() if type(create_generator(name)).__module__.startswith("sonosynth."))
KINDS = [*SHIPPED, "mean-image"]


def test_every_registered_generator_is_covered():
    assert {"sinddm", "fewddm", "singan", "guided"} <= set(SHIPPED)
    assert set(KINDS) <= set(SMOKE), f"add a smoke setting for {set(KINDS) - set(SMOKE)}"


def _training(kind: str, phantom: Manifest) -> Manifest:
    if kind == "guided":  # class-conditional: two classes, a few images each
        return phantom.where(phantom.table.groupby("label").cumcount() < 4)
    count = 2 if kind in ("fewddm", "singan") else 1
    pneumonia = phantom.with_labels(["pneumonia"])
    return pneumonia.where([i < count for i in range(len(pneumonia))])


@contextlib.contextmanager
def captured_log(name: str):
    """Messages of one logger, whatever handlers and propagation the CLI's logging setup installed."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.parametrize("kind", KINDS)
def test_generator_contract(kind, phantom_manifest, tmp_path, monkeypatch):
    generator = create_generator(kind)
    config = load_config(generator.config_type, generator.presets, "smoke", SMOKE[kind])
    assert isinstance(config, GeneratorConfig)
    training = _training(kind, phantom_manifest)

    # fit writes the shared layout; the record's training images resolve from the checkpoint folder
    out = generator.fit(training, tmp_path / "fit", config, device="cpu", progress=False)
    assert {"generator.json", "model.safetensors", "training_state.safetensors"} <= {p.name for p in out.iterdir()}
    assert not list(out.rglob("*.pt")), "no pickles"
    record = json.loads((out / "generator.json").read_text())
    assert record["kind"] == kind and record["complete"] and record["code_version"]
    assert all(not Path(i["path"]).is_absolute() for i in record["training_images"])

    # the record resolves from any working directory (here: through a relative path from elsewhere)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    model = PretrainedGenerator.from_pretrained(Path("..") / "fit", device="cpu")
    assert model.kind == generator.model_type.kind and model.step == record["step"]
    assert sorted(map(str, model.training_images)) == sorted(map(str, training.absolute_paths()))

    # save_pretrained -> from_pretrained: same weights, training images re-anchored to the new folder
    moved = model.save_pretrained(tmp_path / "deeper" / "copy")
    again = type(model).from_pretrained(moved, device="cpu")
    assert again.training_images == model.training_images
    for key, value in model.weights().items():
        assert torch.equal(value.cpu(), again.weights()[key].cpu()), key
    shutil.copy2(out / "training_state.safetensors", moved)  # what resume needs besides the weights

    # n is the total per call (of the asked label); parents resolve; a re-run adds nothing
    label = training.labels[0]
    samples = generator.sample(moved, 3, tmp_path / "set", label=label, seed=5, device="cpu", progress=False)
    assert len(samples) == 3 and set(samples.labels) == {label}
    assert sorted(samples.table["seed"]) == sorted(samples.table["seed"].unique())
    for parents in samples.parent_paths():
        assert parents and all(p.is_file() for p in parents)
    for checkpoint in samples.table["checkpoint"]:
        assert (samples.root / checkpoint / "generator.json").is_file()
    assert load_grayscale(samples.absolute_paths()[0]).ndim == 2
    assert len(generator.sample(moved, 3, tmp_path / "set", label=label, seed=5, device="cpu", progress=False)) == 3
    # with no label, n is the total (dealt round-robin over classes or models)
    assert len(generator.sample(moved, 4, tmp_path / "all", device="cpu", progress=False)) == 4

    # resume: the same config continues (here: nothing left to do) and says from which step
    with captured_log("sonosynth.generators.base") as messages:
        generator.fit(training, moved, config, device="cpu", progress=False)
    assert f"{moved}: resuming from step {record['step']}" in messages

    # a changed field that may not change on resume is refused, naming the field and the fix
    with pytest.raises(SonosynthError, match=r"seed: 0 -> 7.*another --out"):
        generator.fit(training, moved, config.model_copy(update={"seed": 7}), device="cpu", progress=False)
    # resume=False on a checkpoint refuses and deletes nothing
    with pytest.raises(SonosynthError, match="refuses to overwrite"):
        generator.fit(training, moved, config, device="cpu", resume=False, progress=False)
    assert (moved / "model.safetensors").is_file()
    # other training images are refused
    other = phantom_manifest.where(~phantom_manifest.table["path"].isin(training.table["path"]))
    with pytest.raises(SonosynthError, match="other images"):
        generator.fit(_training(kind, other), moved, config, device="cpu", progress=False)

    # unknown sampling settings are a clear error listing the known ones
    with pytest.raises(SonosynthError, match="known"):
        generator.sample(moved, 1, tmp_path / "bad", bogus=1, device="cpu", progress=False)
