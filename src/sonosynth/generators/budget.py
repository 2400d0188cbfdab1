"""Training for a wall-time budget: durations, the step-rate probe and the schedule fitter.

With `budget: 20m` a generator does not train its preset's step count; instead

1. a short probe runs the generator's own training step on this device and measures steps/s
   (`measure_step_rate`, the first steps and one-off slow steps such as compilation excluded);
2. `fit_schedule` scales the preset's schedule to the steps that fit:

       steps       = max(1, floor(budget_seconds * steps_per_second))
       f           = steps / preset.steps
       milestone'  = max(1, round(f * milestone))       for every LR milestone
       ema_start'  = round(f * ema_start)
       checkpoint' = max(1, round(f * checkpoint_every))

   so LR drops, the EMA start and the checkpoints fall at the preset's fractions of the run;
3. the fitted schedule (with the measured rate) is recorded in the checkpoint, and a resumed run
   reuses it without probing again, so an interrupted budget run continues exactly.

The fit is pure (numbers in, a schedule out) so it is tested on a fake step timer; only the probe
touches the clock. A probe's estimate is a little pessimistic (it includes the loop's bookkeeping),
so a fitted run ends at or slightly before its budget.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

from pydantic import Field

from sonosynth.config import StrictModel
from sonosynth.errors import SonosynthError

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


def parse_duration(text: str | float) -> float:
    """'20m', '90s', '1h30m', '2.5h' (or a number of seconds) -> seconds; a clear error otherwise."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match or not any(match.groups()):
            raise ValueError(f"{text!r} is not a duration; write e.g. 20m, 90s or 1h30m")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


class Schedule(StrictModel):
    """The step-count-dependent part of a training config, in the generator's own step unit."""

    steps: int = Field(ge=1, description="optimizer steps (SinGAN: iterations per scale)")
    lr_milestones: list[int] = Field([], description="steps at which the learning-rate schedule changes")
    ema_start: int | None = Field(None, description="step from which the EMA averages (None: no such setting)")
    checkpoint_every: int = Field(ge=1, description="steps between checkpoints")


class BudgetRecord(StrictModel):
    """What a checkpoint records about its budget, so a resumed run repeats the same schedule."""

    budget: str
    seconds: float
    steps_per_second: float
    preset: Schedule
    fitted: Schedule


def fit_schedule(budget_seconds: float, steps_per_second: float, preset: Schedule) -> Schedule:
    """The preset's schedule scaled to the steps that fit in `budget_seconds` at `steps_per_second`."""
    if budget_seconds <= 0 or not math.isfinite(budget_seconds):
        raise SonosynthError(f"budget must be a positive number of seconds, got {budget_seconds}.")
    if steps_per_second <= 0 or not math.isfinite(steps_per_second):
        raise SonosynthError(f"the probe measured an unusable step rate ({steps_per_second} steps/s).")
    steps = max(1, math.floor(budget_seconds * steps_per_second))
    factor = steps / preset.steps
    return Schedule(
        steps=steps,
        lr_milestones=[max(1, round(m * factor)) for m in preset.lr_milestones],
        ema_start=None if preset.ema_start is None else round(preset.ema_start * factor),
        checkpoint_every=max(1, round(preset.checkpoint_every * factor)),
    )


class ProbeDone(Exception):
    """Raised by the probe's step callback to stop the probe's training run."""


OUTLIER_FACTOR = 10.0  # a step this many times the median step is a one-off (compilation), not the rate


def measure_step_rate(run: Callable[[Callable[[], None]], None], *, warmup: int = 2, seconds: float = 10.0,
                      max_steps: int = 50, clock: Callable[[], float] = time.perf_counter) -> float:
    """Steps/s of `run`, which trains and calls the given `tick()` after every step.

    The first `warmup` steps (allocation, kernel selection) are not counted, nor is any later step that
    takes more than OUTLIER_FACTOR x the median step: such a step is a one-off cost (a kernel compiled
    on the first use of a new image size), which the real run pays once, not every step. Steps that
    legitimately differ (SinDDM's scales cost up to ~6x each other) stay inside that factor. The probe
    stops after `max_steps` counted steps or `seconds` of counted time, whichever comes first (tick
    raises ProbeDone).
    """
    marks: list[float] = []

    def counted() -> list[float]:
        durations = [b - a for a, b in zip(marks[warmup:], marks[warmup + 1:], strict=False)]
        if not durations:
            return []
        typical = sorted(durations)[len(durations) // 2]
        return [d for d in durations if d <= OUTLIER_FACTOR * typical]

    def tick() -> None:
        marks.append(clock())
        kept = counted()
        if len(kept) >= max_steps or (kept and sum(kept) >= seconds):
            raise ProbeDone

    try:
        run(tick)
    except ProbeDone:
        pass
    kept = counted()
    if not kept:
        raise SonosynthError(f"the budget probe ran only {len(marks)} step(s); it needs at least {warmup + 2}. "
                             "Give a train step count instead of a budget for so short a run.")
    return len(kept) / max(sum(kept), 1e-9)


__all__ = ["BudgetRecord", "ProbeDone", "Schedule", "fit_schedule", "measure_step_rate", "parse_duration"]
