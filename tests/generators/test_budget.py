"""Training for a wall-time budget: the duration format, the probe on a fake step timer, the fitted
schedule, and a budget fit that records its schedule so a resumed run repeats it exactly."""

from __future__ import annotations

import json
import math

import pytest

from sonosynth.config import load_config
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import CheckpointClock, create_generator
from sonosynth.generators.budget import Schedule, fit_schedule, measure_step_rate, parse_duration
from sonosynth.generators.sinddm import training as sinddm_training
from sonosynth.generators.sinddm.config import SinDDMConfig


def test_durations_parse_and_bad_ones_are_clear_errors():
    assert parse_duration("20m") == 1200 and parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("2.5h") == 9000 and parse_duration(45) == 45
    for bad in ("20 minutes", "", "m", "-5m", "0s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(SonosynthError, match="budget.*not a duration"):
        load_config(SinDDMConfig, "sinddm", "smoke", {"budget": "twenty minutes"})
    assert load_config(SinDDMConfig, "sinddm", "smoke", {"budget": "20m"}).budget_seconds == 1200


class FakeTimer:
    """A clock that advances a fixed time per training step (slower warm-up steps first)."""

    def __init__(self, seconds_per_step: float, warmup_seconds: float = 3.0) -> None:
        self.now, self.per_step, self.warmup = 0.0, seconds_per_step, warmup_seconds
        self.steps = 0

    def clock(self) -> float:
        return self.now

    def run(self, tick) -> None:
        while True:  # a training loop that never ends by itself: the probe stops it
            self.steps += 1
            self.now += self.warmup if self.steps <= 2 else self.per_step
            tick()


@pytest.mark.parametrize(("seconds_per_step", "budget_seconds"), [(0.25, 1200), (2.6, 1200), (0.013, 90), (40, 60)])
def test_the_fitted_schedule_fits_the_budget_on_a_fake_step_timer(seconds_per_step, budget_seconds):
    timer = FakeTimer(seconds_per_step)
    rate = measure_step_rate(timer.run, seconds=30, max_steps=40, clock=timer.clock)
    assert rate == pytest.approx(1 / seconds_per_step)  # the slow warm-up steps are not counted
    preset = Schedule(steps=3600, lr_milestones=[2200, 2900, 3300], ema_start=1400, checkpoint_every=500)
    fitted = fit_schedule(budget_seconds, rate, preset)
    assert fitted.steps * seconds_per_step <= budget_seconds + 1e-6  # it fits ...
    assert fitted.steps == 1 or (fitted.steps + 1) * seconds_per_step > budget_seconds - 1e-6  # ... and uses it
    factor = fitted.steps / preset.steps
    for new, old in zip(fitted.lr_milestones, preset.lr_milestones, strict=True):
        assert abs(new - old * factor) <= 0.5 or new == 1  # milestones at the preset's fractions
    assert abs(fitted.ema_start - preset.ema_start * factor) <= 0.5
    assert fitted.checkpoint_every >= 1 and abs(fitted.checkpoint_every - max(1, preset.checkpoint_every * factor)) <= 1


def test_the_probe_stops_by_time_and_needs_some_steps():
    timer = FakeTimer(1.0)
    measure_step_rate(timer.run, seconds=5, max_steps=1000, clock=timer.clock)
    assert timer.steps == 2 + 5 + 1  # warm-up, then until 5 s of counted steps passed
    with pytest.raises(SonosynthError, match="probe ran only"):
        measure_step_rate(lambda tick: tick(), clock=timer.clock)


def test_the_probe_ignores_a_one_off_slow_step_but_keeps_steps_of_different_sizes():
    durations = iter([3.0, 3.0] + [0.1, 0.5] * 3 + [20.0] + [0.1, 0.5] * 20)  # warm-up, two scales, a compile
    now = [0.0]

    def run(tick):
        while True:
            now[0] += next(durations)
            tick()

    rate = measure_step_rate(run, seconds=1000, max_steps=20, clock=lambda: now[0])
    assert rate == pytest.approx(1 / 0.3)  # the mean of the two step sizes; the 20 s step is not the rate


def test_checkpoints_come_by_steps_and_by_wall_time():
    now = [0.0]
    clock = CheckpointClock(every=100, seconds=60, clock=lambda: now[0])
    due = []
    for step in range(1, 301):
        now[0] += 2.0 if step < 50 else 0.1  # slow first steps: the wall-time rule writes the first checkpoint
        if clock.due(step, 300):
            due.append(step)
    assert due[0] == 30 and 100 in due and 300 in due


@pytest.fixture()
def stripes(tmp_path):
    import numpy as np

    from sonosynth.data.images import save_png
    from sonosynth.generators.base import manifest_from_images

    x = np.arange(48)[None, :].repeat(48, 0)
    save_png(tmp_path / "stripes.png", np.where(np.sin(x / 3 * np.pi) > 0, 220, 30).astype(np.uint8))
    return manifest_from_images([tmp_path / "stripes.png"], label="pneumonia")


def test_a_budget_fit_records_its_schedule_and_resumes_it_without_probing(stripes, tmp_path, monkeypatch):
    probes = []

    def fake_probe(data, config, device, **kwargs):
        probes.append(1)
        return 1 / 3.0  # seconds per step: a 4 s budget fits 12 steps

    monkeypatch.setattr(sinddm_training, "measure_step_seconds", fake_probe)
    generator = create_generator("sinddm")
    config = load_config(SinDDMConfig, "sinddm", "smoke", {"precision": "fp32", "budget": "4s"})
    out = generator.fit(stripes, tmp_path / "run", config, device="cpu", progress=False)
    record = json.loads((out / "generator.json").read_text())
    preset = config.training_schedule()
    assert record["budget"]["fitted"]["steps"] == record["step"] == record["config"]["train_steps"] == 12
    assert record["budget"]["preset"] == preset.model_dump() and record["budget"]["steps_per_second"] == 3.0
    assert record["config"]["lr_milestones"] == [round(m * 12 / preset.steps) for m in preset.lr_milestones]
    assert probes == [1]
    generator.fit(stripes, out, config, device="cpu", progress=False)  # resume: the recorded schedule, no probe
    assert probes == [1]
    with pytest.raises(SonosynthError, match="budget '5s'"):
        generator.fit(stripes, out, config.model_copy(update={"budget": "5s"}), device="cpu", progress=False)
    assert math.isclose(record["budget"]["seconds"], 4.0)


def test_the_sinddm_probe_weights_each_scale_by_how_often_training_draws_it(stripes, monkeypatch):
    from sonosynth.generators.base import load_training_images
    from sonosynth.generators.sinddm.data import prepare_training_data

    config = load_config(SinDDMConfig, "sinddm", "smoke", {"precision": "fp32", "scale_sampling": "equal_time"})
    data = prepare_training_data(load_training_images(stripes, 1), config)
    cost = [0.01 * 4 ** s for s in range(data.n_scales)]  # each finer scale costs 4x the coarser one
    now = [0.0]

    def fake_step(state, data, tables, config, precision, batch=None):
        now[0] += cost[batch.scale]

    monkeypatch.setattr(sinddm_training, "train_step", fake_step)
    monkeypatch.setattr(sinddm_training.time, "perf_counter", lambda: now[0])
    probabilities = sinddm_training.scale_probabilities(data, config).tolist()
    expected = sum(p * c for p, c in zip(probabilities, cost, strict=True))
    assert sinddm_training.measure_step_seconds(data, config, "cpu") == pytest.approx(expected)
    assert probabilities[0] > probabilities[-1]  # equal time: the cheap coarsest scale is drawn most


@pytest.mark.parametrize("kind", ["sinddm", "singan", "guided"])
def test_every_generator_maps_its_schedule_both_ways(kind):
    generator = create_generator(kind)
    config = load_config(generator.config_type, generator.presets, "cpu")
    schedule = config.training_schedule()
    halved = schedule.model_copy(update={"steps": schedule.steps // 2,
                                         "lr_milestones": [m // 2 for m in schedule.lr_milestones],
                                         "checkpoint_every": max(1, schedule.checkpoint_every // 2)})
    assert config.with_training_schedule(halved).training_schedule() == halved
