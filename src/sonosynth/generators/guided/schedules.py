"""Noise schedules (MONAI schedulers) and the closed-form diffusion math the sampling loop needs.

MONAI's schedulers own the beta/alpha tables and the forward noising. The reverse steps are written
here as pure functions of `alphas_cumprod`, because guidance has to reach inside a step (change the
mean, or the predicted noise) and DDIM with guidance must pair each timestep with the one it jumps to.
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


def alphas_cumprod(config: ScheduleConfig) -> torch.Tensor:
    """ᾱ_t for t = 0..T-1 in float64, from the MONAI schedule."""
    return ddpm_scheduler(config).alphas_cumprod.to(torch.float64)


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


def posterior(x0: torch.Tensor, x_t: torch.Tensor, t: int, abar: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 7), the DDPM reverse step."""
    a_t = float(abar[t])
    a_prev = float(abar[t - 1]) if t > 0 else 1.0
    beta_t = 1.0 - a_t / a_prev
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
