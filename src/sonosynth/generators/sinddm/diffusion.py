"""The forward process of Eq. 1 on tensors, and the schedule tables moved to a device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sonosynth.generators.sinddm.schedule import Schedule, blur_gammas, make_schedule, start_steps


@dataclass(frozen=True)
class DiffusionTables:
    """float32 lookup tables on the compute device; gammas[s, t] (row 0 all zeros) and start steps per scale."""

    schedule: Schedule
    alpha_bar: torch.Tensor
    gammas: torch.Tensor
    starts: tuple[int, ...]

    @classmethod
    def build(cls, timesteps: int, blur_levels: list[float] | tuple[float, ...],
              device: torch.device | str = "cpu") -> DiffusionTables:
        schedule = make_schedule(timesteps)
        return cls(schedule=schedule,
                   alpha_bar=torch.tensor(schedule.alpha_bar, dtype=torch.float32, device=device),
                   gammas=torch.tensor(blur_gammas(schedule, list(blur_levels)), dtype=torch.float32, device=device),
                   starts=tuple(start_steps(schedule, list(blur_levels))))

    @property
    def timesteps(self) -> int:
        return self.schedule.timesteps


def _column(values: torch.Tensor) -> torch.Tensor:
    return values[:, None, None, None]


def blend(sharp: torch.Tensor, blurry: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """gamma * blurry + (1 - gamma) * sharp, with one gamma per batch element."""
    gamma = _column(gamma)
    return gamma * blurry + (1.0 - gamma) * sharp


def forward_process(sharp: torch.Tensor, blurry: torch.Tensor, t: torch.Tensor, scale: int,
                    tables: DiffusionTables, noise: torch.Tensor) -> torch.Tensor:
    """Eq. 1: x_t^s = sqrt(ab_t) (g_t^s blurry + (1 - g_t^s) sharp) + sqrt(1 - ab_t) eps.

    At the coarsest scale gamma is 0, so this is the plain DDPM forward process. Training uses the
    unclamped gamma (the 0.55 clamp is a sampling-time choice of the official code).
    """
    clean = clean_target(sharp, blurry, t, scale, tables)
    alpha_bar = _column(tables.alpha_bar[t])
    return alpha_bar.sqrt() * clean + (1.0 - alpha_bar).sqrt() * noise


def clean_target(sharp: torch.Tensor, blurry: torch.Tensor, t: torch.Tensor, scale: int,
                 tables: DiffusionTables) -> torch.Tensor:
    """The x0 of Eq. 1 at scale `scale`: the sharp image at the coarsest scale, else the gamma_t blend."""
    return blend(sharp, blurry, tables.gammas[scale, t]) if scale > 0 else sharp


def velocity(clean: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """v = sqrt(ab) eps - sqrt(1 - ab) x0, the target of a v-prediction model (one ab per batch element).

    x0 is the forward process's clean image (the blend at a finer scale), so the identities
    eps = sqrt(1 - ab) x_t + sqrt(ab) v and x0 = sqrt(ab) x_t - sqrt(1 - ab) v hold exactly."""
    alpha_bar = _column(alpha_bar)
    return alpha_bar.sqrt() * noise - (1.0 - alpha_bar).sqrt() * clean


def eps_from_v(x: torch.Tensor, v: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """The noise a v-prediction implies at a scalar alpha_bar (what the eps-based sampler updates use)."""
    return (1.0 - alpha_bar) ** 0.5 * x + alpha_bar ** 0.5 * v


__all__ = ["DiffusionTables", "blend", "eps_from_v", "forward_process", "velocity"]
