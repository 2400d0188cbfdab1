"""The dry-run probe's sampling estimate: a sample call's fixed cost is paid once per call, not once per step."""

from __future__ import annotations

import pytest

from sonosynth.experiment import probe
from sonosynth.experiment.probe import GeneratorProbe, _sample_attempt, sample_estimate


def test_the_fixed_cost_of_a_call_is_not_multiplied_by_the_step_count():
    # 2 timed steps of 0.1 s in a 10 s call: 9.8 s of loading and decoding, paid by each of 5 calls.
    estimate = sample_estimate(10.0, 0.1, 2, 50, batch=4, images=100, calls=5)
    assert estimate == pytest.approx(5 * 9.8 + 25 * 50 * 0.1)
    whole_call_scaled = 10.0 / 4 * (50 / 2) * 100  # the whole call's time scaled by the step count: 6,250 s
    assert estimate * 30 < whole_call_scaled


def test_a_partial_batch_costs_a_whole_batch_and_noise_never_makes_time_negative():
    assert sample_estimate(1.0, 0.5, 2, 10, batch=4, images=5, calls=1) == pytest.approx(0 + 2 * 10 * 0.5)
    assert sample_estimate(0.2, 0.0, 2, 10, batch=4, images=8, calls=3) == pytest.approx(0.6)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_the_attempt_times_two_step_counts_after_a_warm_up(tmp_path, monkeypatch):
    clock, calls = _Clock(), []

    class FakeGenerator:
        def sample(self, checkpoint, n, out, label, seed, device, progress, steps=None, **settings):
            calls.append(steps)
            # 30 s of first-call warm-up, 4 s of loading per call, 0.5 s per step.
            clock.now += (30.0 if len(calls) == 1 else 0.0) + 4.0 + 0.5 * steps

    monkeypatch.setattr(probe, "time", clock)
    monkeypatch.setattr("sonosynth.generators.base.create_generator", lambda kind: FakeGenerator())
    spec = GeneratorProbe("G", "fake", dict, {}, None, tmp_path, {}, "pneumonia")
    attempt = _sample_attempt(spec, 50, "ddim", "cpu", 4)
    assert calls == [probe.PROBE_SAMPLE_STEPS, probe.PROBE_SAMPLE_STEPS, 2 * probe.PROBE_SAMPLE_STEPS]
    assert attempt.step_seconds == pytest.approx(0.5)
    assert attempt.seconds == pytest.approx(4.0 + 0.5 * probe.PROBE_SAMPLE_STEPS)
    assert sample_estimate(attempt.seconds, attempt.step_seconds, probe.PROBE_SAMPLE_STEPS, 50, 4, 8, 1) \
        == pytest.approx(4.0 + 2 * 50 * 0.5)
