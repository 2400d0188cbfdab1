"""Noise schedules (MONAI schedulers) and the closed-form diffusion math the sampling loop needs.

MONAI's schedulers own the beta/alpha tables and the forward noising. The reverse steps are written
here as pure functions of `alphas_cumprod`, because guidance has to reach inside a step (change the
mean, or the predicted noise) and DDIM with guidance must pair each timestep with the one it jumps to.
DPM-Solver++ is diffusers' scheduler, fed the x0 this module predicts (so guidance and clipping are
the same for every sampler). tests/generators/test_guided_sampling_math.py checks the DDIM and DDPM
steps against diffusers' schedulers.

Every function that reads the network's output takes the schedule's `prediction`: "epsilon" (the
noise) or "v" (v = sqrt(abar) eps - sqrt(1 - abar) x0).
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from sonosynth.generators.guided.config import ScheduleConfig

MONAI_SCHEDULES = {"linear": "linear_beta", "cosine": "cosine"}


def _schedule_args(config: ScheduleConfig) -> dict:
    if config.schedule == "linear":
        return {"beta_start": config.beta_start, "beta_end": config.beta_end}
    return {}


def ddpm_scheduler(config: ScheduleConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, schedule=MONAI_SCHEDULES[config.schedule],
                         clip_sample=True, **_schedule_args(config))


def ddim_scheduler(config: ScheduleConfig, steps: int) -> DDIMScheduler:
    scheduler = DDIMScheduler(num_train_timesteps=config.num_train_timesteps, schedule=MONAI_SCHEDULES[config.schedule],
                              clip_sample=True, **_schedule_args(config))
    scheduler.set_timesteps(steps)
    return scheduler


# A schedule whose last betas reach 1 (a linear schedule with beta_end = 1) has ᾱ = 0 there, where
# x0 from epsilon and the posterior divide by zero. ᾱ is floored at ABAR_FLOOR, halving slowly over
# the schedule so that ᾱ still strictly decreases (DPM-Solver divides by differences of log-SNR);
# no schedule whose ᾱ stays above 1e-12 is changed.
ABAR_FLOOR = 1e-12


def alphas_cumprod(config: ScheduleConfig) -> torch.Tensor:
    """ᾱ_t for t = 0..T-1 in float64, from the MONAI schedule (floored, see ABAR_FLOOR)."""
    abar = ddpm_scheduler(config).alphas_cumprod.to(torch.float64)
    floor = ABAR_FLOOR * 0.5 ** (torch.arange(len(abar), dtype=torch.float64) / len(abar))
    return torch.maximum(abar, floor)


def dpm_solver_scheduler(config: ScheduleConfig, steps: int):
    """diffusers' DPM-Solver++ (2M) on our ᾱ table, stepping on the x0 the sampling loop predicts.

    `prediction_type="sample"` hands the solver the guided, clipped x0 that every sampler uses, so
    the solver never converts a raw epsilon itself; DPM-Solver++ works on x0 ("data prediction") anyway.
    """
    from diffusers import DPMSolverMultistepScheduler

    abar = alphas_cumprod(config)
    betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=config.num_train_timesteps,
                                            trained_betas=betas.float().numpy(), algorithm_type="dpmsolver++",
                                            solver_order=2, prediction_type="sample", thresholding=False)
    scheduler.set_timesteps(steps)
    return scheduler


def _at(table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """table[t] broadcast to the shape of `like` (t a scalar or one timestep per image)."""
    value = table.to(like.device)[torch.as_tensor(t, device=like.device)]
    return value.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int, abar: torch.Tensor) -> torch.Tensor:
    a = _at(abar, t, x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def predict_eps(x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | int, abar: torch.Tensor) -> torch.Tensor:
    a = _at(abar, t, x_t)
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


def velocity(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int, abar: torch.Tensor) -> torch.Tensor:
    """v = sqrt(ᾱ) eps - sqrt(1 - ᾱ) x0, the v-prediction target."""
    a = _at(abar, t, x0)
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def training_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, abar: torch.Tensor,
                    prediction: str) -> torch.Tensor:
    """What the denoiser learns to output for x_t = sqrt(ᾱ) x0 + sqrt(1 - ᾱ) noise."""
    return noise if prediction == "epsilon" else velocity(x0, noise, t, abar)


def min_snr_weight(t: torch.Tensor, abar: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Per-sample loss weight of min-SNR-γ (Hang et al. 2023), SNR = ᾱ / (1 - ᾱ).

    It weights the x0 error by min(SNR, γ); an epsilon MSE already carries a factor SNR and a v MSE a
    factor SNR + 1, so the weights on those losses are min(SNR, γ) / SNR and min(SNR, γ) / (SNR + 1).
    """
    a = abar.to(t.device)[t]
    snr = a / (1 - a)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    weight = clipped / snr if prediction == "epsilon" else clipped / (snr + 1)
    return weight.float()


def split_output(output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int, abar: torch.Tensor,
                 prediction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0) from the network's output at x_t (unclipped)."""
    if prediction == "epsilon":
        return output, predict_x0(x_t, output, t, abar)
    a = _at(abar, t, x_t)
    return a.sqrt() * output + (1 - a).sqrt() * x_t, a.sqrt() * x_t - (1 - a).sqrt() * output


def guide_by_score(eps: torch.Tensor, x0: torch.Tensor, grad: torch.Tensor, t: torch.Tensor | int,
                   abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier guidance on the score (Dhariwal & Nichol, Algorithm 2): eps - sqrt(1 - ᾱ) grad, and the
    x0 that goes with it at the same x_t, x0 + (1 - ᾱ) / sqrt(ᾱ) grad (whatever the network predicted)."""
    a = _at(abar, t, eps)
    return eps - (1 - a).sqrt() * grad, x0 + (1 - a) / a.sqrt() * grad


def posterior(x0: torch.Tensor, x_t: torch.Tensor, t: int, abar: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 7), the DDPM reverse step."""
    a_t = float(abar[t])
    a_prev = float(abar[t - 1]) if t > 0 else 1.0
    beta_t = min(max(1.0 - a_t / a_prev, 0.0), 1.0)  # ᾱ is floored above 0 (ABAR_FLOOR), so a_prev > 0
    mean = (a_prev**0.5 * beta_t / (1 - a_t)) * x0 + ((1 - beta_t) ** 0.5 * (1 - a_prev) / (1 - a_t)) * x_t
    variance = beta_t * (1 - a_prev) / (1 - a_t)
    return mean, variance


def ddim_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """`steps` evenly spaced timesteps from T-1 down to 0 (distinct, descending)."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"DDIM steps must be in 1..{num_train_timesteps}, got {steps}.")
    grid = torch.linspace(num_train_timesteps - 1, 0, steps).round().long().tolist()
    return sorted(set(grid), reverse=True)


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, abar: torch.Tensor, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """x_{t_prev} from the predicted x0 and noise (Song et al. eq. 12); t_prev = -1 means the clean image."""
    a_t = float(abar[t])
    a_prev = float(abar[t_prev]) if t_prev >= 0 else 1.0
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    x_prev = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0 and noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev


def _clip(x0: torch.Tensor, clip: float | None) -> torch.Tensor:
    return x0 if clip is None else x0.clamp(-clip, clip)


def guided_x0(output: torch.Tensor, x_t: torch.Tensor, t: int, abar: torch.Tensor, prediction: str,
              grad: torch.Tensor | None, clip: float | None = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0) of one step with classifier guidance on the score (grad: scale * grad log p(y | x_t), or
    None), x0 clipped to [-clip, clip] and eps recomputed from the clipped x0 (as ADM does).

    clip=None leaves x0 as predicted; latent diffusion clips to the training latents' range (latent.py)."""
    eps, x0 = split_output(output, x_t, t, abar, prediction)
    if grad is not None:
        eps, x0 = guide_by_score(eps, x0, grad, t, abar)
    if clip is None:
        return eps, x0
    x0 = x0.clamp(-clip, clip)
    return predict_eps(x_t, x0, t, abar), x0


def ddim_update(output: torch.Tensor, x_t: torch.Tensor, t: int, t_prev: int, abar: torch.Tensor, prediction: str,
                eta: float = 0.0, noise: torch.Tensor | None = None,
                grad: torch.Tensor | None = None, clip: float | None = 1.0) -> torch.Tensor:
    """One DDIM step of the sampling loop: the network's output at x_t -> x_{t_prev} (t_prev = -1: x0)."""
    eps, x0 = guided_x0(output, x_t, t, abar, prediction, grad, clip)
    return ddim_step(x0, eps, t, t_prev, abar, eta, noise)


def ddpm_update(output: torch.Tensor, x_t: torch.Tensor, t: int, abar: torch.Tensor, prediction: str,
                noise: torch.Tensor | None, grad: torch.Tensor | None = None,
                clip: float | None = 1.0) -> torch.Tensor:
    """One ancestral DDPM step: x0 clipped to [-clip, clip] (None: not clipped), the posterior mean moved by
    variance * grad, plus noise (t > 0)."""
    _, x0 = split_output(output, x_t, t, abar, prediction)
    mean, variance = posterior(_clip(x0, clip), x_t, t, abar)
    if grad is not None:
        mean = mean + variance * grad
    return mean + variance**0.5 * noise if t > 0 and noise is not None else mean
