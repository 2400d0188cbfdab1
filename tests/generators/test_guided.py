"""Guided diffusion: networks, schedules, training (resume, DDP, NaN), guidance and sampling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sonosynth.checkpoint import load_checkpoint
from sonosynth.config import load_config
from sonosynth.data.images import save_png
from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError
from sonosynth.generators.guided.config import GuidedConfig
from sonosynth.generators.guided.networks import build_classifier, build_denoiser
from sonosynth.generators.guided.sampling import (
    generate_rounds,
    load_model,
    resolve_settings,
    sample_batch,
)
from sonosynth.generators.guided.schedules import (
    ScheduleConfig,
    alphas_cumprod,
    ddim_scheduler,
    ddpm_scheduler,
    predict_x0,
)
from sonosynth.generators.guided.training import LOG_NAME, fit

STATE = "training_state.safetensors"


def smoke(**overrides) -> GuidedConfig:
    return load_config(GuidedConfig, "guided", "smoke", overrides)


def tiny(**train) -> GuidedConfig:
    """16x16, the cheapest model that still learns something in a few dozen steps."""
    return smoke(image_size=16, train={"steps": 4, **train})


# ---------------------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("channels", [1, 3])
def test_networks_have_the_expected_shapes_at_32(channels):
    config = smoke(in_channels=channels)
    denoiser, classifier = build_denoiser(config, 3), build_classifier(config, 3)
    x = torch.randn(2, channels, 32, 32)
    t = torch.tensor([0, 99])
    assert denoiser(x, t, class_labels=torch.tensor([0, 3])).shape == (2, channels, 32, 32)  # 3 = "no label"
    assert classifier(x, t).shape == (2, 3)


def test_presets_validate_and_image_size_must_divide():
    for preset in ("smoke", "cpu", "paper"):
        assert load_config(GuidedConfig, "guided", preset).image_size in (32, 64, 128)
    with pytest.raises(SonosynthError, match="divisible"):
        load_config(GuidedConfig, "guided", "smoke", {"image_size": 30})


# ---------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_noising_then_x0_prediction_from_the_true_noise_recovers_x0(schedule):
    config = ScheduleConfig(num_train_timesteps=1000, schedule=schedule)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    ddpm = ddpm_scheduler(config)
    abar = alphas_cumprod(config)
    for t in (0, 10, 500, 990):
        x_t = ddpm.add_noise(x0, noise, torch.full((4,), t))
        assert not torch.allclose(x_t, x0, atol=1e-2) or t == 0
        assert torch.allclose(predict_x0(x_t, noise, t, abar), x0, atol=1e-3)
        _, monai_x0 = ddpm.step(noise, t, x_t)
        assert torch.allclose(monai_x0, x0, atol=1e-3)
    ddim = ddim_scheduler(config, steps=50)
    t = int(ddim.timesteps[10])
    _, monai_x0 = ddim.step(noise, t, ddpm.add_noise(x0, noise, torch.full((4,), t)))
    assert torch.allclose(monai_x0, x0, atol=1e-3)


# ---------------------------------------------------------------------------------------------- training
def test_resume_continues_exactly_like_an_uninterrupted_run(phantom_manifest, tmp_path):
    straight = fit(phantom_manifest, tmp_path / "a", tiny(steps=4, checkpoint_every=4), progress=False)
    fit(phantom_manifest, tmp_path / "b", tiny(steps=2, checkpoint_every=2), progress=False)
    resumed = fit(phantom_manifest, tmp_path / "b", tiny(steps=4, checkpoint_every=2), progress=False)
    a, b = pd.read_csv(straight / LOG_NAME), pd.read_csv(resumed / LOG_NAME)
    assert list(b["step"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(a[["loss", "classifier_loss"]], b[["loss", "classifier_loss"]], rtol=1e-5)
    sa = load_checkpoint(straight / STATE)
    sb = load_checkpoint(resumed / STATE)
    for key in ("denoiser", "ema", "classifier"):
        for name, tensor in sa[key].items():
            torch.testing.assert_close(tensor, sb[key][name], rtol=1e-5, atol=1e-6)


def test_existing_run_needs_resume_and_same_config(phantom_manifest, tmp_path):
    fit(phantom_manifest, tmp_path / "run", tiny(steps=1, checkpoint_every=1), progress=False)
    with pytest.raises(SonosynthError, match="refuses to overwrite"):
        fit(phantom_manifest, tmp_path / "run", tiny(steps=2), resume=False, progress=False)
    with pytest.raises(SonosynthError, match="different config"):
        fit(phantom_manifest, tmp_path / "run", tiny(steps=2, lr=1.0), resume=True, progress=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(phantom_manifest, tmp_path, monkeypatch):
    from sonosynth.generators.guided import training

    real = training.denoiser_loss

    def poisoned(denoiser, data, config, scheduler, step, rank, device):
        loss = real(denoiser, data, config, scheduler, step, rank, device)
        return loss * float("nan") if step == 2 else loss

    monkeypatch.setattr(training, "denoiser_loss", poisoned)
    with pytest.raises(SonosynthError, match=r"diverged at step 3.*step 2.* is kept"):
        fit(phantom_manifest, tmp_path / "run", tiny(steps=4, checkpoint_every=1), progress=False)
    assert load_checkpoint(tmp_path / "run" / STATE)["step"] == 2


def test_bad_training_input_is_a_clear_error(phantom_manifest, tmp_path):
    with pytest.raises(SonosynthError, match="at least two classes"):
        fit(phantom_manifest.with_labels(["covid"]), tmp_path / "one", tiny(), progress=False)
    with pytest.raises(SonosynthError, match="no images"):
        fit(phantom_manifest, tmp_path / "missing", tiny().model_copy(update={"classes": ["covid", "viral"]}),
            progress=False)


def test_torchrun_two_process_ddp_smoke_run_writes_one_checkpoint(phantom_manifest, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "sonosynth", "train",
         "guided", str(phantom_manifest.root), "--preset", "smoke", "--out", str(out), "--set", "image_size=16"],
        check=False, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors", STATE]
    payload = load_checkpoint(out / STATE)
    assert payload["step"] == 4 and len(pd.read_csv(out / LOG_NAME)) == 4


# ---------------------------------------------------------------------------------------------- sampling
def _left_right_manifest(root: Path, per_class: int = 24, size: int = 16) -> Manifest:
    """Two trivially separable classes: the bright half is on the left or on the right."""
    rng = np.random.default_rng(0)
    rows = []
    for label in ("left", "right"):
        for i in range(per_class):
            image = rng.integers(0, 40, (size, size)).astype(np.uint8)
            half = slice(0, size // 2) if label == "left" else slice(size // 2, size)
            image[:, half] = rng.integers(200, 255, (size, size // 2))
            path = root / label / f"{i}.png"
            save_png(path, image)
            rows.append({"path": f"{label}/{i}.png", "label": label, "patient_id": f"{label}-{i % 4}"})
    return Manifest.from_rows(rows, root)


@pytest.fixture(scope="module")
def left_right_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("left-right")
    manifest = _left_right_manifest(root / "data")
    config = smoke(image_size=16, train={"steps": 120, "batch_size": 16, "lr": 2e-3, "label_dropout": 0.5,
                                         "checkpoint_every": 120, "ema_decay": 0.9},
                   classifier={"batch_size": 16, "lr": 2e-3})
    torch.manual_seed(0)
    return fit(manifest, root / "ckpt", config, progress=False)


def _in_asked_class(images: torch.Tensor, labels: list[int]) -> float:
    left = images[..., : images.shape[-1] // 2].mean(dim=(1, 2, 3))
    right = images[..., images.shape[-1] // 2:].mean(dim=(1, 2, 3))
    landed = torch.where(left > right, 0, 1)
    return float((landed == torch.tensor(labels)).float().mean())


def test_classifier_guidance_moves_samples_toward_the_asked_class(left_right_checkpoint):
    model = load_model(left_right_checkpoint)
    labels = [0, 1] * 12
    seeds = list(range(len(labels)))
    # The denoiser sees the "no label" token, so only the classifier's gradient knows the asked class.
    unguided = resolve_settings(model, {"guidance": "none", "conditional": False, "steps": 10})
    guided = resolve_settings(model, {"guidance": "classifier", "scale": 20.0, "conditional": False, "steps": 10})
    free = _in_asked_class(sample_batch(model, labels, seeds, unguided), labels)
    steered = _in_asked_class(sample_batch(model, labels, seeds, guided), labels)
    assert steered >= 0.9 and steered >= free + 0.25, (free, steered)


def test_samples_are_deterministic_per_seed_whatever_the_batch(left_right_checkpoint):
    model = load_model(left_right_checkpoint)
    for overrides in ({"guidance": "classifier", "sampler": "ddim", "steps": 5, "eta": 0.5},
                      {"guidance": "cfg", "sampler": "ddim", "steps": 5},
                      {"guidance": "classifier", "sampler": "ddpm"}):
        settings = resolve_settings(model, overrides)
        batch = sample_batch(model, [0, 1, 0], [7, 8, 9], settings)
        alone = sample_batch(model, [0], [9], settings)
        torch.testing.assert_close(batch[2:], alone, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(batch[0], batch[2])


def test_generation_in_rounds_resumes_and_never_exceeds_the_count(left_right_checkpoint, tmp_path):
    out = tmp_path / "synthetic"
    first = generate_rounds(left_right_checkpoint, out, per_class=3, rounds=2, progress=False, steps=3)
    assert [len(m) for m in first] == [6, 6]
    assert set(first[0].table["seed"]).isdisjoint(first[1].table["seed"])
    row = first[0].table.iloc[0]
    assert row["generator"] == "guided" and '"guidance": "classifier"' in row["settings"]
    (out / "round-2" / first[1].table["path"].iloc[-1]).unlink()  # an interrupted round
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = generate_rounds(left_right_checkpoint, out, per_class=3, rounds=2, progress=False, steps=3)
    assert [m.counts()["images"].tolist() for m in again] == [[3, 3], [3, 3]]
    assert all(p.stat().st_mtime_ns == stamps[p] for p in out.rglob("*.png") if p in stamps)


def test_sampling_rejects_unknown_labels_and_guidance_without_classifier(left_right_checkpoint, phantom_manifest,
                                                                          tmp_path):
    with pytest.raises(SonosynthError, match="was not trained"):
        generate_rounds(left_right_checkpoint, tmp_path / "x", per_class=1, labels=["up"], progress=False)
    config = tiny(steps=1, checkpoint_every=1).model_copy(update={"classifier": smoke().classifier.model_copy(
        update={"enabled": False})})
    bare = fit(phantom_manifest, tmp_path / "bare", config, progress=False)
    with pytest.raises(SonosynthError, match="without a noisy classifier"):
        generate_rounds(bare, tmp_path / "y", per_class=1, guidance="classifier", progress=False)
    assert len(generate_rounds(bare, tmp_path / "z", per_class=1, guidance="cfg", steps=2, progress=False)[0]) == 3
