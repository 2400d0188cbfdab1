"""The guided sampler's math against diffusers' schedulers, and a tiny model that has learned sampling cleanly.

Per-pixel-noise samples can come from a defect in the reverse steps or from the model; these tests pin
the steps (same x_t and network output in, same x_{t-1} out as diffusers' DDIM, DDPM and DPM-Solver++,
for epsilon- and v-prediction) and then require a network trained to convergence on two fixed images
to give samples as smooth as those images.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

from sonosynth.config import load_config
from sonosynth.data.images import save_png
from sonosynth.data.manifest import Manifest
from sonosynth.generators.base import to_uint8
from sonosynth.generators.guided.config import GuidedConfig, SampleConfig, ScheduleConfig
from sonosynth.generators.guided.diagnostics import neighbour_difference, saturated_share
from sonosynth.generators.guided.sampling import (
    GuidedModel,
    classifier_gradient,
    load_model,
    resolve_settings,
    sample_batch,
)
from sonosynth.generators.guided.schedules import (
    alphas_cumprod,
    ddim_update,
    ddpm_scheduler,
    ddpm_update,
    guide_by_score,
    min_snr_weight,
    predict_x0,
    split_output,
    velocity,
)
from sonosynth.generators.guided.training import fit

DIFFUSERS_PREDICTION = {"epsilon": "epsilon", "v": "v_prediction"}
SIDE = 16


def _betas(abar: torch.Tensor) -> np.ndarray:
    return (1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])).float().numpy()


def _noised(abar: torch.Tensor, t: int, prediction: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t of images in [-1, 1] and an imperfect network's output for it (the truth plus 10% error)."""
    gen = torch.Generator().manual_seed(seed + t)
    x0 = torch.rand(3, 1, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    a = abar[t].float()
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    truth = noise if prediction == "epsilon" else velocity(x0, noise, t, abar)
    return x_t, truth + 0.1 * torch.randn(x0.shape, generator=gen)


# ---------------------------------------------------------------------------------------------- tables
def test_the_linear_table_is_diffusers_linear_schedule():
    ours = alphas_cumprod(ScheduleConfig(num_train_timesteps=1000, schedule="linear"))
    theirs = torch.from_numpy(DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod.numpy())
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-4, atol=0)


# ---------------------------------------------------------------------------------------------- one step
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches_diffusers_at_every_timestep(prediction, eta):
    abar_config = ScheduleConfig(num_train_timesteps=1000, schedule="cosine", prediction=prediction)
    theirs = DDIMScheduler(num_train_timesteps=1000, trained_betas=_betas(alphas_cumprod(abar_config)),
                           clip_sample=True, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading",
                           prediction_type=DIFFUSERS_PREDICTION[prediction])
    theirs.set_timesteps(50)
    abar = theirs.alphas_cumprod.double()  # the same table on both sides: the step math is what is compared
    jump = 1000 // 50  # diffusers' DDIM always steps back T // steps
    for t in [int(t) for t in theirs.timesteps]:
        x_t, output = _noised(abar, t, prediction)
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t))
        expected = theirs.step(output, t, x_t, eta=eta, use_clipped_model_output=True,
                               variance_noise=noise).prev_sample
        got = ddim_update(output, x_t, t, t - jump if t - jump >= 0 else -1, abar, prediction, eta,
                          noise if eta > 0 and t - jump >= 0 else None)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4, msg=f"t={t}")
    assert t == 0  # the final step (to the clean image) was compared too


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_ddpm_step_matches_diffusers_at_every_tenth_timestep(prediction):
    config = ScheduleConfig(num_train_timesteps=1000, schedule="linear", prediction=prediction)
    theirs = DDPMScheduler(num_train_timesteps=1000, trained_betas=_betas(alphas_cumprod(config)), clip_sample=True,
                           variance_type="fixed_small", prediction_type=DIFFUSERS_PREDICTION[prediction])
    abar = theirs.alphas_cumprod.double()
    for t in [999, *range(990, -1, -10), 1]:
        x_t, output = _noised(abar, t, prediction)
        expected = theirs.step(output, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(ddpm_update(output, x_t, t, abar, prediction, noise), expected,
                                   rtol=1e-4, atol=1e-4, msg=f"t={t}")


# ---------------------------------------------------------------------------------------------- whole loops
class _ToyNet(nn.Module):
    """A fixed smooth function of (x, t): stands in for a trained denoiser in loop comparisons."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, t, class_labels=None):
        return torch.tanh(self.conv(x)) + 0.3 * x * (t.float() / 50).reshape(-1, 1, 1, 1)


def _toy_model(prediction: str, **schedule) -> SimpleNamespace:
    config = load_config(GuidedConfig, "guided", "smoke", {
        "image_size": 8, "schedule": {"num_train_timesteps": 50, "schedule": "cosine", "prediction": prediction,
                                      **schedule}})
    return SimpleNamespace(device=torch.device("cpu"), abar=alphas_cumprod(config.schedule), config=config,
                           denoiser=_ToyNet().eval(), classifier=None, classes=["a", "b"], precision="fp32")


def _initial(seeds: list[int]) -> tuple[list[torch.Generator], torch.Tensor]:
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return generators, torch.stack([torch.randn((1, 8, 8), generator=g) for g in generators])


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_whole_ddpm_loop_matches_diffusers_with_the_same_per_image_noise(prediction):
    model = _toy_model(prediction)
    theirs = DDPMScheduler(num_train_timesteps=50, trained_betas=_betas(model.abar), clip_sample=True,
                           variance_type="fixed_small", prediction_type=DIFFUSERS_PREDICTION[prediction])
    model.abar = theirs.alphas_cumprod.double()
    seeds = [3, 4]
    generators, x = _initial(seeds)
    with torch.no_grad():
        for t in range(49, -1, -1):
            output = model.denoiser(x, torch.full((2,), t), class_labels=None)
            x = theirs.step(output, t, x, generator=generators).prev_sample
    ours = sample_batch(model, [0, 1], seeds, SampleConfig(guidance="none", sampler="ddpm", conditional=False))
    torch.testing.assert_close(ours, x.clamp(-1, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_dpm_solver_loop_is_diffusers_dpm_solver_with_x0_clipping(prediction):
    """Ours hands the solver the clipped x0; diffusers' own conversion with thresholding at 1 must agree."""
    model = _toy_model(prediction)
    theirs = DPMSolverMultistepScheduler(num_train_timesteps=50, trained_betas=_betas(model.abar),
                                         algorithm_type="dpmsolver++", solver_order=2, thresholding=True,
                                         sample_max_value=1.0, prediction_type=DIFFUSERS_PREDICTION[prediction])
    theirs.set_timesteps(10)
    seeds = [5, 6]
    _, x = _initial(seeds)
    with torch.no_grad():
        for t in theirs.timesteps:
            x = theirs.step(model.denoiser(x, torch.full((2,), int(t))), t, x).prev_sample
    ours = sample_batch(model, [0, 1], seeds, SampleConfig(guidance="none", sampler="dpm++", steps=10,
                                                           conditional=False))
    torch.testing.assert_close(ours, x.clamp(-1, 1), rtol=1e-4, atol=1e-4)


def test_a_schedule_whose_alpha_bar_reaches_zero_samples_finite_images():
    model = _toy_model("epsilon", schedule="linear", beta_start=0.05, beta_end=1.0)
    assert float(ddpm_scheduler(model.config.schedule).alphas_cumprod[-1]) == 0.0
    for sampler in ("ddpm", "ddim", "dpm++"):
        images = sample_batch(model, [0], [1], SampleConfig(guidance="none", sampler=sampler, steps=10))
        assert torch.isfinite(images).all(), sampler


# ---------------------------------------------------------------------------------------------- guidance
def test_classifier_gradient_is_the_analytic_gradient_of_log_p():
    weight = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    classifier = lambda x, t: x.flatten(1) @ weight.T  # a linear classifier: its gradient is closed-form
    x = torch.randn(3, 1, 4, 4)
    labels = torch.tensor([0, 1, 1])
    probs = torch.softmax(x.flatten(1) @ weight.T, dim=-1)
    expected = (weight[labels] - probs @ weight).reshape(x.shape)
    torch.testing.assert_close(classifier_gradient(classifier, x, torch.zeros(3, dtype=torch.long), labels), expected)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_score_guidance_keeps_eps_and_x0_consistent_and_steps_along_the_gradient(prediction):
    abar = alphas_cumprod(ScheduleConfig(schedule="cosine"))
    t, t_prev = 500, 480
    x_t, output = _noised(abar, t, prediction)
    output = output * 0.1  # a small x0, so clipping does not hide the shift
    grad = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1)) * 0.05
    eps, x0 = split_output(output, x_t, t, abar, prediction)
    eps_g, x0_g = guide_by_score(eps, x0, grad, t, abar)
    torch.testing.assert_close(x0_g, predict_x0(x_t, eps_g, t, abar), rtol=1e-4, atol=1e-4)
    moved = ddim_update(output, x_t, t, t_prev, abar, prediction, grad=grad) - ddim_update(
        output, x_t, t, t_prev, abar, prediction)
    assert float((moved * grad).sum()) > 0  # towards higher log p(y | x)
    moved_ddpm = (ddpm_update(output, x_t, t, abar, prediction, None, grad=grad)
                  - ddpm_update(output, x_t, t, abar, prediction, None))
    cosine = float((moved_ddpm * grad).sum() / (moved_ddpm.norm() * grad.norm()))
    assert cosine > 0.999  # the DDPM mean moves by variance * grad


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_min_snr_weights_cap_the_low_noise_timesteps(prediction):
    abar = alphas_cumprod(ScheduleConfig(schedule="cosine"))
    t = torch.arange(1000)
    weight = min_snr_weight(t, abar, 5.0, prediction)
    snr = (abar / (1 - abar)).float()
    low_noise, high_noise = snr > 5, snr < 5
    expected_low = 5 / snr if prediction == "epsilon" else 5 / (snr + 1)
    expected_high = torch.ones_like(snr) if prediction == "epsilon" else snr / (snr + 1)
    torch.testing.assert_close(weight[low_noise], expected_low[low_noise])
    torch.testing.assert_close(weight[high_noise], expected_high[high_noise])
    assert weight[0] < 0.01 and torch.isfinite(weight).all()


# ---------------------------------------------------------------------------------------------- a model that learned
def _two_fixed_images() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    gradient = (40 + 175 * xx / (SIDE - 1)).astype(np.uint8)
    disk = np.where((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 25, 210, 40).astype(np.uint8)
    return {"disk": disk, "gradient": gradient}  # sorted: class 0 is the disk


@pytest.fixture(scope="module")
def converged(tmp_path_factory) -> Path:
    """v-prediction on the cpu preset's cosine schedule, trained on 4 copies of one image per class."""
    root = tmp_path_factory.mktemp("two-images")
    rows = []
    for label, image in _two_fixed_images().items():
        for i in range(4):
            save_png(root / "data" / label / f"{i}.png", image)
            rows.append({"path": f"{label}/{i}.png", "label": label, "patient_id": f"{label}-{i}"})
    config = load_config(GuidedConfig, "guided", "smoke", {
        "image_size": SIDE, "schedule": {"num_train_timesteps": 1000, "schedule": "cosine", "prediction": "v"},
        "train": {"steps": 150, "batch_size": 16, "lr": 3e-3, "warmup_steps": 20, "ema_decay": 0.95,
                  "checkpoint_every": 150, "label_dropout": 0.2},
        "classifier": {"batch_size": 16, "lr": 2e-3}})
    return fit(Manifest.from_rows(rows, root / "data"), root / "ckpt", config, progress=False)


def test_the_smoothness_check_rejects_per_pixel_noise():
    real = neighbour_difference(np.stack(list(_two_fixed_images().values())))
    noise = to_uint8(torch.randn(8, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0)).clamp(-1, 1).numpy())
    assert neighbour_difference(noise) > 2 * real


@pytest.mark.parametrize("overrides", [
    {"sampler": "ddim", "steps": 20, "guidance": "classifier", "scale": 1.0},
    {"sampler": "dpm++", "steps": 20, "guidance": "cfg", "scale": 2.0},
    {"sampler": "dpm++", "steps": 20, "guidance": "none"},
])
def test_a_converged_model_samples_images_as_smooth_as_its_training_images(converged, overrides):
    images = _two_fixed_images()
    real = neighbour_difference(np.stack(list(images.values())))
    model = load_model(converged)
    labels = [0, 1] * 4
    samples = to_uint8(sample_batch(model, labels, list(range(8)), resolve_settings(model, overrides)).numpy())
    energy = neighbour_difference(samples)
    assert real / 2 <= energy <= 2 * real, (energy, real)
    assert saturated_share(samples) < 0.05
    targets = [images["disk"], images["gradient"]]
    for sample, label in zip(samples.astype(float), labels, strict=True):
        own, other = (np.abs(sample - targets[label]).mean(), np.abs(sample - targets[1 - label]).mean())
        assert own < other / 2, (label, own, other)


def test_sampling_uses_the_ema_weights_and_layout_and_bf16_keep_the_images(converged):
    model = load_model(converged)
    for name, value in model.denoiser.state_dict().items():
        torch.testing.assert_close(value, model.tensors[f"ema.{name}"])
    assert any(not torch.equal(model.tensors[f"ema.{n}"], model.tensors[f"denoiser.{n}"])
               for n in model.denoiser.state_dict())
    settings = resolve_settings(model, {"sampler": "dpm++", "steps": 20, "guidance": "classifier", "scale": 1.0})
    baseline = sample_batch(model, [0, 1], [0, 1], settings)
    for update, tolerance in (({"channels_last": True}, 1e-4), ({"precision": "bf16"}, 0.1)):
        variant = GuidedModel(model.folder, model.record, model.config.model_copy(update=update), model.tensors,
                              model.device)
        difference = float((sample_batch(variant, [0, 1], [0, 1], settings) - baseline).abs().mean())
        assert difference < tolerance, (update, difference)
