"""SinGAN baseline: pyramid sizing, network shapes, learning, arbitrary sizes, resume and determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from sonosynth.checkpoint import load_checkpoint, load_weights
from sonosynth.commands.generators import parse_size
from sonosynth.config import load_config
from sonosynth.data.images import load_grayscale, save_png
from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import create_generator, manifest_from_images
from sonosynth.generators.singan.checkpoints import SinGANModel, losses_path
from sonosynth.generators.singan.config import SinGANConfig
from sonosynth.generators.singan.networks import PatchDiscriminator, ScaleGenerator, border
from sonosynth.generators.singan.pyramid import plan_pyramid
from sonosynth.generators.singan.sampling import generate
from sonosynth.generators.singan.training import fit


def smoke(**overrides) -> SinGANConfig:
    return load_config(SinGANConfig, "singan", "smoke", overrides)


@pytest.fixture(scope="module")
def two_images(phantom_manifest, tmp_path_factory) -> Manifest:
    """Two pneumonia phantom frames (64 px) as loose files, one model each."""
    paths = phantom_manifest.with_labels(["pneumonia"]).absolute_paths()[:4:3]
    return manifest_from_images(paths, label="pneumonia")


@pytest.fixture(scope="module")
def fitted(two_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("singan") / "fit"
    fit(two_images, out, smoke(), device="cpu", progress=False)
    return out


# ------------------------------------------------------------------------------ pyramid and networks
def test_pyramid_sizes_follow_the_reference_rule():
    # 560x560 with the defaults: shrunk to 250, 10 scales, coarsest side about 25, ratio (25/250)^(1/9).
    plan = plan_pyramid(560, 560)
    assert plan.num_scales == 10 and plan.shapes[-1] == (250, 250)
    assert 25 <= min(plan.shapes[0]) <= 26
    assert plan.scale_factor == pytest.approx((25 / 250) ** (1 / 9))
    # Landscape 600x800: the longer side becomes 250, the shorter keeps the aspect ratio.
    wide = plan_pyramid(600, 800)
    assert wide.shapes[-1] == (188, 250) and wide.num_scales == 9
    assert all(h < w for h, w in wide.shapes)
    assert all(a[0] < b[0] for a, b in zip(wide.shapes, wide.shapes[1:]))
    # An image below max_size is not enlarged.
    assert plan_pyramid(100, 120).shapes[-1] == (100, 120)
    # A cpu-sized pyramid.
    assert plan_pyramid(560, 560, max_size=128).shapes[-1] == (128, 128)


def test_too_small_image_is_a_clear_error():
    with pytest.raises(SonosynthError, match="too small"):
        plan_pyramid(20, 40)


def test_generator_and_critic_output_shapes():
    pad = border(5, 3)
    assert pad == 5
    for channels in (1, 3):
        G = ScaleGenerator(channels, 32, 32)
        D = PatchDiscriminator(channels, 32, 32)
        x = torch.randn(2, channels, 30 + 2 * pad, 41 + 2 * pad)
        assert G(x, x).shape == (2, channels, 30, 41)
        assert D(torch.randn(2, channels, 30, 41)).shape == (2, 1, 20, 31)  # one score per 11x11 patch


def test_widths_double_every_four_scales_up_to_the_cap():
    config = SinGANConfig()
    assert [config.widths(n)[0] for n in range(13)] == [32] * 4 + [64] * 4 + [128] * 5


# ------------------------------------------------------------------------------ learning
def test_reconstruction_loss_falls_by_a_clear_factor(two_images, tmp_path):
    config = smoke(max_size=20, min_size=16, iterations=60, lr_drop_at=60, checkpoint_every=100)
    out = fit(two_images.where([True, False]), tmp_path / "fit", config, device="cpu", progress=False)
    losses = pd.read_csv(losses_path(out, SinGANModel.from_pretrained(out, "cpu").pyramids[0].name))
    coarsest = losses[losses["scale"] == 0]["loss_rec"].to_numpy()
    assert coarsest[-5:].mean() < coarsest[:3].mean() / 4


def test_fit_writes_one_model_per_image_with_index_and_losses(fitted, two_images):
    record = json.loads((fitted / "generator.json").read_text())
    plan = plan_pyramid(64, 64, 0.75, 14, 24)
    assert record["complete"] and [len(m["scales"]) for m in record["details"]["models"]] == [plan.num_scales] * 2
    assert record["config"]["iterations"] == smoke().iterations
    assert record["step"] == 2 * plan.num_scales * smoke().iterations
    assert load_checkpoint(fitted / "training_state.safetensors")["partial"] is None
    for model in SinGANModel.from_pretrained(fitted, "cpu").pyramids:
        losses = pd.read_csv(losses_path(fitted, model.name))
        assert len(losses) == plan.num_scales * smoke().iterations
        assert model.scales[0].noise_amp == 1.0
        assert all(0 < s.noise_amp < 1 for s in model.scales[1:])  # 0.1 x RMSE of the reconstruction below
        assert model.scales[0].z_rec.abs().sum() > 0 and all(s.z_rec.abs().sum() == 0 for s in model.scales[1:])


# ------------------------------------------------------------------------------ sampling
def test_samples_spread_over_models_with_their_own_parents(fitted, two_images, tmp_path):
    manifest = create_generator("singan").sample(fitted, 5, tmp_path / "set", seed=10, device="cpu", progress=False)
    assert len(manifest) == 5 and set(manifest.table["origin"]) == {"synthetic"}
    parents = [p[0].resolve() for p in manifest.parent_paths()]
    firsts, seconds = two_images.absolute_paths()
    assert sorted(map(str, parents)) == sorted(map(str, [firsts] * 3 + [seconds] * 2))
    for path in manifest.absolute_paths():
        assert load_grayscale(path).shape == (24, 24)
    # Asking again is a no-op: every seed is already on disk.
    again = create_generator("singan").sample(fitted, 5, tmp_path / "set", seed=10, device="cpu", progress=False)
    assert len(again) == 5


def test_samples_at_arbitrary_sizes(fitted, tmp_path):
    model = SinGANModel.from_pretrained(fitted, "cpu").pyramids[0]
    for size in [(24, 24), (20, 37), (40, 30)]:
        images = generate(model, [0, 1], size)
        assert images.shape == (2, 1, *size)
    manifest = create_generator("singan").sample(fitted, 2, tmp_path / "wide", size=(18, 50), device="cpu",
                                                 progress=False)
    assert all(load_grayscale(p).shape == (18, 50) for p in manifest.absolute_paths())
    assert parse_size("18x50") == (18, 50) and parse_size("32") == (32, 32)
    with pytest.raises(SonosynthError):
        parse_size("tall")


def test_sampling_is_deterministic_per_seed_and_independent_of_batching(fitted):
    model = SinGANModel.from_pretrained(fitted, "cpu").pyramids[0]
    a = generate(model, [3, 4, 5, 6])
    b = generate(model, [3, 4, 5, 6])
    assert torch.equal(a, b)
    one = torch.cat([generate(model, [s]) for s in (3, 4, 5, 6)])
    assert torch.allclose(a, one, atol=1e-5)
    assert not torch.allclose(a[0], a[1])  # different seeds, different images


# ------------------------------------------------------------------------------ resume and determinism of fit
class Crash(Exception):
    pass


def _weights(out):
    return load_weights(out / "model.safetensors")[0]


def test_interrupted_fit_resumes_to_the_same_weights(two_images, tmp_path):
    images = two_images.where([True, False])
    config = smoke(iterations=6, checkpoint_every=2, lr_drop_at=4)
    full = fit(images, tmp_path / "full", config, device="cpu", progress=False)

    def crash_mid_scale(scale: int, iteration: int) -> None:
        if (scale, iteration) == (2, 4):  # after the checkpoint at 4 iterations of scale 2
            raise Crash

    with pytest.raises(Crash):
        fit(images, tmp_path / "cut", config, device="cpu", progress=False, on_iteration=crash_mid_scale)
    record = json.loads((tmp_path / "cut" / "generator.json").read_text())
    name = record["details"]["models"][0]["name"]
    assert len(record["details"]["models"][0]["scales"]) == 2 and not record["complete"]
    assert record["step"] == 2 * 6 + 4
    partial = load_checkpoint(tmp_path / "cut" / "training_state.safetensors")["partial"]
    assert (partial["scale"], partial["iteration"]) == (2, 4)
    with pytest.raises(SonosynthError, match="stopped after 2 of"):
        SinGANModel.from_pretrained(tmp_path / "cut")
    resumed = fit(images, tmp_path / "cut", config, device="cpu", progress=False)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = ["seconds"]
    la = pd.read_csv(losses_path(full, name)).drop(columns=drop)
    lb = pd.read_csv(losses_path(resumed, name)).drop(columns=drop)
    pd.testing.assert_frame_equal(la, lb)


def test_same_seed_same_model_other_seed_other_model(two_images, tmp_path):
    images = two_images.where([True, False])
    config = smoke(iterations=3, max_size=18, min_size=14)
    a = _weights(fit(images, tmp_path / "a", config, device="cpu", progress=False))
    b = _weights(fit(images, tmp_path / "b", config, device="cpu", progress=False))
    c = _weights(fit(images, tmp_path / "c", config.model_copy(update={"seed": 1}), device="cpu", progress=False))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_refuses_a_different_config(two_images, tmp_path):
    images = two_images.where([True, False])
    fit(images, tmp_path / "fit", smoke(iterations=2, max_size=18, min_size=14), device="cpu", progress=False)
    with pytest.raises(SonosynthError, match="different config"):
        fit(images, tmp_path / "fit", smoke(iterations=3, max_size=18, min_size=14), device="cpu", progress=False)


# ------------------------------------------------------------------------------ colour and CLI
def test_rgb_images_train_and_sample_in_colour(tmp_path):
    rng = np.random.default_rng(0)
    image = np.zeros((40, 48, 3), np.uint8)
    image[..., 0] = 200
    image[..., 2] = rng.integers(0, 255, (40, 48))
    save_png(tmp_path / "colour.png", image)
    config = smoke(channels=3, iterations=3, max_size=20, min_size=14)
    out = fit(manifest_from_images([tmp_path / "colour.png"]), tmp_path / "fit", config, device="cpu", progress=False)
    manifest = create_generator("singan").sample(out, 2, tmp_path / "set", device="cpu", progress=False)
    from PIL import Image

    with Image.open(manifest.absolute_paths()[0]) as sample:
        assert sample.mode == "RGB" and sample.size == (20, 17)


def test_cli_train_and_generate(two_images, tmp_path):
    from typer.testing import CliRunner

    from sonosynth.cli import app

    image = str(two_images.absolute_paths()[0])
    runner = CliRunner()
    result = runner.invoke(app, ["train", "singan", image, "--preset", "smoke", "--out", str(tmp_path / "ckpt"),
                                 "--set", "iterations=2", "--set", "max_size=18", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["generate", "singan", str(tmp_path / "ckpt"), "-n", "3", "--size", "20x30",
                                 "--out", str(tmp_path / "set"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    manifest = Manifest.read(tmp_path / "set")
    assert len(manifest) == 3 and set(manifest.labels) == {"unlabelled"}
    assert math.prod(load_grayscale(manifest.absolute_paths()[0]).shape) == 600
