"""A study run leaves a log, a status file and TensorBoard events in its run folder."""

import importlib.util

from tests.experiment.conftest import smoke_spec as _spec

from sonosynth.status import read_status
from sonosynth.study import run_study


def test_a_run_folder_keeps_its_log_status_and_event_files(tmp_path):
    run = tmp_path / "run"
    outcome = run_study(_spec(split={"folds": 3, "minority": "pneumonia", "keep": [1.0]}), run, progress=False)
    text = (run / "run.log").read_text()
    assert "units planned" in text and "data from the phantom simulator" in text
    status = read_status(run)
    assert status.total >= outcome.result.computed > 0
    assert f"/{status.total}] classify real small_cnn fold 0 keep 1 seed 0: done in" in text
    assert "unit timings: " in text
    assert status.state == "finished" and status.done == status.total
    if importlib.util.find_spec("tensorboard") is not None:  # the optional extra sonosynth[tensorboard]
        events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
        assert any("classify_real_small_cnn_fold_0" in str(p) for p in events)
