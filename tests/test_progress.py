"""Progress off a terminal, the study's unit lines and ETA, status.json and `sonosynth status`."""

import json
import logging
import math

import pytest

from sonosynth import progress
from sonosynth.status import StudyProgress, read_status


@pytest.fixture
def plain(monkeypatch, caplog):
    """Output is not a terminal; every progress update may print (no 30 s wait)."""
    monkeypatch.setattr(progress, "interactive", lambda: False)
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger="sonosynth")
    return caplog


def test_durations_read_as_people_write_them():
    assert progress.format_duration(45) == "45s"
    assert progress.format_duration(130) == "2m10s"
    assert progress.format_duration(300, coarse=True) == "5m"
    assert progress.format_duration(3900) == "1h05m"
    assert progress.format_duration(math.inf) == "?"


def test_plain_lines_carry_the_unit_step_elapsed_eta_and_scalars(plain):
    progress.unit_labels["fit SinDDM fold 2 image 3"] = "[12/85] fit SinDDM fold 2 image 3"
    try:
        with progress.unit("fit SinDDM fold 2 image 3"), progress.task("SinDDM", 3600, completed=700,
                                                                        unit="step") as bar:
            bar.update(800, loss=0.0312, lr=2e-4)
    finally:
        progress.unit_labels.clear()
    lines = [r.getMessage() for r in plain.records]
    assert lines, "a plain progress line was expected"
    assert lines[0].startswith("[12/85] fit SinDDM fold 2 image 3: SinDDM: step 800/3600, ")
    assert "ETA " in lines[0] and "loss 0.0312" in lines[0] and "lr 0.0002" in lines[0]


def test_a_resumed_task_estimates_from_its_own_pace_not_from_the_steps_done_before():
    bar = progress.task("x", 100, completed=90, enabled=True)
    bar.started -= 10.0  # 10 s for the 5 steps since the resume
    bar.update(95)
    assert bar.eta() == pytest.approx(10.0, rel=0.05)
    bar.close()


def test_sampling_progress_moves_within_one_batch(plain):
    bar = progress.task("SinDDM sampling", 8, unit="image")
    for _ in range(4):
        bar.advance(8 / 10)  # one network call of ten, for a batch of 8 images
    assert bar.completed == pytest.approx(3.2)
    assert "image 3.2/8" in bar.line()
    bar.close()


def test_disabled_progress_is_silent(plain):
    assert list(progress.track(range(3), "quiet", enabled=False)) == [0, 1, 2]
    with progress.task("off", 3, enabled=False) as bar:
        bar.update(2, loss=1.0)
    assert not plain.records


def test_study_eta_counts_only_units_that_still_need_computing(tmp_path, plain):
    watch = StudyProgress(tmp_path)
    watch.plan(10, {"fit": 4, "classify": 6})
    for n in range(3):  # found finished in the cache: no time, and not part of the estimate
        watch.finished(f"fit cached {n}", computed=False)
    watch.started("fit G fold 0 image 4/4")
    watch.finished("fit G fold 0 image 4/4", computed=True, seconds=100.0)
    watch.started("classify real fold 0")
    watch.finished("classify real fold 0", computed=True, seconds=10.0)
    assert watch.left() == 5
    assert watch.eta() == pytest.approx(5 * 10.0)  # five classifiers to go at 10 s; every fit is done
    messages = [r.getMessage() for r in plain.records]
    assert any(m.startswith("[3/10] 3 unit(s)") for m in messages)
    assert any(m.startswith("[4/10] fit G fold 0 image 4/4: done in 1m40s") for m in messages)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["total"] == 10 and status["done"] == 5 and status["reused"] == 3 and status["state"] == "running"
    watch.close("finished")
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "finished"


def test_status_of_a_run_whose_process_is_gone_says_stopped(tmp_path):
    (tmp_path / "spec.yaml").write_text("name: x\n")
    watch = StudyProgress(tmp_path)
    watch.plan(4)
    watch.started("fit G fold 0 image 1/1")
    status = json.loads((tmp_path / "status.json").read_text())
    (tmp_path / "status.json").write_text(json.dumps({**status, "pid": 2 ** 22 + 12345}))
    watch.close("running")  # leaves the listener list clean
    (tmp_path / "status.json").write_text(json.dumps({**status, "pid": 2 ** 22 + 12345}))
    read = read_status(tmp_path)
    assert read.state == "stopped" and read.total == 4 and read.running == []
    assert any("gone" in note for note in read.notes)


def test_status_of_a_live_run_lists_what_is_running(tmp_path):
    (tmp_path / "spec.yaml").write_text("name: x\n")
    watch = StudyProgress(tmp_path)
    watch.plan(4)
    watch.started("fit G fold 0 image 1/1")
    read = read_status(tmp_path)
    watch.close("finished")
    assert read.state == "running" and read.left == 4
    assert [r["description"] for r in read.running] == ["fit G fold 0 image 1/1"]


def test_study_eta_times_each_generator_apart_and_does_not_guess_untimed_kinds(tmp_path, plain):
    watch = StudyProgress(tmp_path)
    watch.plan(12, {"fit SinDDM": 2, "fit SinGAN": 2, "sample SinDDM": 2, "classify": 6})
    watch.started("fit SinDDM fold 0 image 1")
    watch.finished("fit SinDDM fold 0 image 1", computed=True, seconds=300.0)
    # one SinDDM fit to go at 300 s; SinGAN fits borrow the fit mean; samples and classifiers are untimed
    assert watch.eta() == pytest.approx(300.0 + 2 * 300.0)
    assert watch.untimed() == 2 + 6
    assert any("study ETA >= 15m (+8 units not yet timed)" in r.getMessage() for r in plain.records)
    watch.started("fit SinGAN fold 0 image 1")
    watch.finished("fit SinGAN fold 0 image 1", computed=True, seconds=30.0)
    watch.started("classify real small_cnn fold 0")
    watch.finished("classify real small_cnn fold 0", computed=True, seconds=20.0)
    watch.started("sample SinDDM fold 0 image 1 pneumonia")
    watch.finished("sample SinDDM fold 0 image 1 pneumonia", computed=True, seconds=5.0)
    assert watch.untimed() == 0
    assert watch.eta() == pytest.approx(300.0 + 30.0 + 5.0 + 5 * 20.0)
    assert json.loads((tmp_path / "status.json").read_text())["eta_untimed_units"] == 0
    watch.close("finished")
