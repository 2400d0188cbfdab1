"""Latent diffusion in the guided generator: config, the autoencoder stage, resume, checkpoint and sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sonosynth.checkpoint import load_weights
from sonosynth.config import load_config
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import read_record
from sonosynth.generators.guided import latent
from sonosynth.generators.guided.config import GuidedConfig
from sonosynth.generators.guided.data import load_training_tensors, resolve_classes
from sonosynth.generators.guided.sampling import classify_images, load_model, resolve_settings, sample_batch
from sonosynth.generators.guided.schedules import alphas_cumprod, ddim_update
from sonosynth.generators.guided.training import fit

AE = latent.AUTOENCODER_NAME


def tiny_latent(**latent_overrides) -> GuidedConfig:
    """16 px images, an autoencoder with one halving (8x8x4 latents), the smoke denoiser and classifier."""
    values = {"enabled": True, "channels": [8, 16], "latent_channels": 4, "norm_num_groups": 8, "steps": 20,
              "batch_size": 8, "lr": 2e-3, "log_every": 10, **latent_overrides}
    return load_config(GuidedConfig, "guided", "smoke", {
        "image_size": 16, "latent": values, "train": {"steps": 4, "checkpoint_every": 2, "hflip": True}})


def _with_steps(config: GuidedConfig, steps: int) -> GuidedConfig:
    return config.model_validate({**config.model_dump(), "train": {**config.train.model_dump(), "steps": steps}})


# ---------------------------------------------------------------------------------------------- config
def test_latent_is_off_in_the_existing_presets_and_on_in_cpu_latent():
    for preset in ("smoke", "cpu", "paper"):
        config = load_config(GuidedConfig, "guided", preset)
        assert not config.latent.enabled
        assert config.diffusion_shape == (config.in_channels, config.image_size, config.image_size)
    config = load_config(GuidedConfig, "guided", "cpu-latent")
    assert config.latent.enabled and config.latent.factor == 4 and config.diffusion_shape == (4, 16, 16)


def test_sizes_must_divide_in_latent_space():
    # 48 px divides by the U-Net's 2**3 in pixel space, but its latent side 12 does not.
    assert load_config(GuidedConfig, "guided", "cpu", {"image_size": 48}).image_size == 48
    with pytest.raises(SonosynthError, match="latent side 12"):
        load_config(GuidedConfig, "guided", "cpu-latent", {"image_size": 48})
    with pytest.raises(SonosynthError, match="divisible by 4"):
        load_config(GuidedConfig, "guided", "cpu-latent", {"image_size": 66})
    with pytest.raises(SonosynthError, match="norm_num_groups"):
        load_config(GuidedConfig, "guided", "cpu-latent", {"latent": {"channels": [12, 32, 64]}})


# ---------------------------------------------------------------------------------------------- the autoencoder
def test_kl_loss_is_zero_for_the_prior_and_positive_otherwise():
    mu, sigma = torch.zeros(2, 4, 3, 3), torch.ones(2, 4, 3, 3)
    assert float(latent.kl_loss(mu, sigma)) == 0.0
    # 0.5 * (1 + 1 - 0 - 1) per element, 36 elements per image.
    assert float(latent.kl_loss(mu + 1, sigma)) == pytest.approx(18.0)


def test_autoencoder_reconstructs_its_training_images_better_than_their_mean(phantom_manifest):
    config = load_config(GuidedConfig, "guided", "smoke", {"image_size": 32, "latent": {
        "enabled": True, "channels": [8, 16], "norm_num_groups": 8, "steps": 150, "batch_size": 8, "lr": 2e-3}})
    classes = resolve_classes(phantom_manifest, None)
    images = load_training_tensors(phantom_manifest, classes, 32, 1).images
    autoencoder, log = latent.train_autoencoder(images, config, torch.device("cpu"))
    with torch.no_grad():
        reconstruction = autoencoder.decode(latent.encode_mean(autoencoder, images, torch.device("cpu")))
    ae_error = float((reconstruction.clamp(-1, 1) - images).abs().mean())
    mean_error = float((images.mean(0, keepdim=True) - images).abs().mean())
    assert log[-1]["reconstruction"] < log[0]["reconstruction"]
    assert ae_error < 0.75 * mean_error, (ae_error, mean_error)


# ---------------------------------------------------------------------------------------------- fit and resume
@pytest.fixture(scope="module")
def latent_run(phantom_manifest, tmp_path_factory):
    """A latent fit of 2 steps, then resumed to 4; the autoencoder must not train on resume."""
    out = tmp_path_factory.mktemp("latent") / "run"
    config = tiny_latent()
    fit(phantom_manifest, out, _with_steps(config, 2), progress=False)
    first, _ = load_weights(out / "model.safetensors")
    real = latent.train_autoencoder

    def refuse(*args, **kwargs):
        raise AssertionError("the autoencoder was trained again on resume")

    latent.train_autoencoder = refuse
    try:
        fit(phantom_manifest, out, config, progress=False)
    finally:
        latent.train_autoencoder = real
    return out, first


def test_latent_fit_checkpoints_the_autoencoder_and_its_scale(latent_run):
    out, first = latent_run
    record = read_record(out)
    assert record.step == 4 and record.complete
    scale, clip = record.details["latent_scale"], record.details["latent_clip"]
    assert np.isfinite(scale) and scale > 0 and clip > 1
    tensors, _ = load_weights(out / "model.safetensors")
    prefixes = {k.split(".")[0] for k in tensors}
    assert prefixes == {"ema", "denoiser", "classifier", "autoencoder"}
    # The denoiser works on the 4x8x8 latents, not on 1x16x16 pixels.
    assert tensors["denoiser.conv_in.conv.weight"].shape[1] == 4
    saved, _ = load_weights(out / AE)
    for name, value in saved.items():
        torch.testing.assert_close(tensors[f"autoencoder.{name}"], value, rtol=0, atol=0)
        torch.testing.assert_close(first[f"autoencoder.{name}"], value, rtol=0, atol=0)


def test_resume_refuses_a_missing_autoencoder(latent_run, phantom_manifest, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(latent_run[0], out)
    (out / AE).unlink()
    with pytest.raises(SonosynthError, match="is missing"):
        fit(phantom_manifest, out, _with_steps(tiny_latent(), 6), progress=False)


def test_hflip_draws_the_latents_of_flipped_images(latent_run, phantom_manifest):
    out, _ = latent_run
    model = load_model(out)
    config = model.config
    pixels = load_training_tensors(phantom_manifest, model.classes, config.image_size, config.in_channels)
    stage = latent.LatentStage(model.autoencoder, model.latent_scale, model.latent_clip)
    data = latent.latent_tensors(stage, pixels, config, torch.device("cpu"))
    index = torch.arange(3)
    expected = latent.encode_mean(model.autoencoder, pixels.images[:3].flip(-1), torch.device("cpu")) * stage.scale
    torch.testing.assert_close(data.mirrored(index), expected)
    assert not torch.allclose(data.mirrored(index), data.images[:3].flip(-1), atol=1e-3)
    assert float(data.images.std()) == pytest.approx(1.0, rel=1e-3)  # the scale factor makes unit variance
    assert model.latent_clip == pytest.approx(float(data.images.abs().max()), rel=1e-5)


# ---------------------------------------------------------------------------------------------- sampling
def test_latent_samples_are_decoded_images_in_range_and_deterministic_per_seed(latent_run):
    model = load_model(latent_run[0])
    for overrides in ({"guidance": "classifier", "sampler": "ddim", "steps": 4},
                      {"guidance": "cfg", "sampler": "dpm++", "steps": 4}):
        settings = resolve_settings(model, overrides)
        batch = sample_batch(model, [0, 1, 2], [5, 6, 7], settings)
        assert batch.shape == (3, 1, 16, 16)
        assert float(batch.min()) >= -1 and float(batch.max()) <= 1
        alone = sample_batch(model, [2], [7], settings)
        torch.testing.assert_close(batch[2:], alone, atol=1e-4, rtol=1e-4)
        again = sample_batch(model, [0, 1, 2], [5, 6, 7], settings)
        torch.testing.assert_close(batch, again, atol=0, rtol=0)
        assert not torch.allclose(batch[0], batch[1])


def test_classify_images_encodes_them_first(latent_run, phantom_manifest):
    model = load_model(latent_run[0])
    predicted = classify_images(model, phantom_manifest)
    assert len(predicted) == len(phantom_manifest) and set(predicted) <= set(model.classes)


def test_x0_is_clipped_to_the_given_bound():
    abar = alphas_cumprod(tiny_latent().schedule)
    x_t = torch.full((1, 4, 2, 2), 3.0)
    output = torch.zeros_like(x_t)  # epsilon 0: x0 = x_t / sqrt(abar) > 3
    t = 10
    pixel = ddim_update(output, x_t, t, -1, abar, "epsilon")
    latent_bound = ddim_update(output, x_t, t, -1, abar, "epsilon", clip=2.5)
    free = ddim_update(output, x_t, t, -1, abar, "epsilon", clip=None)
    assert float(pixel.max()) == pytest.approx(1.0)
    assert float(latent_bound.max()) == pytest.approx(2.5)
    torch.testing.assert_close(free, x_t / abar[t].sqrt().float())


def test_budget_fit_trains_the_autoencoder_once_before_the_probe(phantom_manifest, tmp_path, monkeypatch):
    calls = []
    real = latent.train_autoencoder

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(latent, "train_autoencoder", counted)
    config = tiny_latent(steps=5).model_copy(update={"budget": "4s"})
    out = fit(phantom_manifest, tmp_path / "budget", config, progress=False)
    record = read_record(out)
    assert calls == [1]
    assert record.budget is not None and record.step == record.budget.fitted.steps >= 1
    assert (out / AE).is_file() and "latent_scale" in record.details
