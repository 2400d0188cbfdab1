"""The Ray executor on a local Ray cluster the test starts (two CPUs, loopback only)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from tests.experiment.conftest import SMOKE, smoke_spec

from sonosynth.experiment.layout import RunFolder
from sonosynth.experiment.runner import StudyRunner

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'sonosynth[cluster]'")

from sonosynth.experiment.ray_executor import TIMELINE_NAME, RayExecutor

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


@dataclasses.dataclass(frozen=True)
class DieOnce:
    """A unit function whose first call in a run folder kills its own worker process, as an OOM kill would."""

    function: Callable[..., None]

    def __call__(self, *args) -> None:
        marker = Path(args[-1]).parents[2] / "killed-once"  # the last argument is run/cache/<kind>/<key>
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        self.function(*args)


@dataclasses.dataclass(frozen=True)
class Fails:
    """A unit function that counts its calls in the run folder and raises an error of its own."""

    function: Callable[..., None]

    def __call__(self, *args) -> None:
        from sonosynth.errors import SonosynthError

        with (Path(args[-1]).parents[2] / "calls").open("a") as calls:
            calls.write("called\n")
        raise SonosynthError("broken on purpose")


class WrappedRunner(StudyRunner):
    """The plan's units of one kind run through a test wrapper (`DieOnce`, `Fails`)."""

    def __init__(self, *args, wrapper, kind: str, **options) -> None:
        super().__init__(*args, **options)
        self.wrapper, self.kind = wrapper, kind

    def plan(self, manifest, folds):
        plan = super().plan(manifest, folds)
        units = tuple(dataclasses.replace(unit, function=self.wrapper(unit.function)) if unit.kind == self.kind
                      else unit for unit in plan.units)
        return dataclasses.replace(plan, units=units)


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # pytest imports this file under a name Ray's workers cannot import: ship its classes by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def _ray_runner(spec, run_dir: Path) -> StudyRunner:
    import torch

    # The local serial run's thread count: torch's CPU sums depend on it, and the numbers are compared bit for bit.
    executor = RayExecutor(RunFolder(run_dir).cache, threads=torch.get_num_threads())
    return StudyRunner(spec, run_dir, progress=False, executor=executor)


def test_the_smoke_study_on_ray_gives_the_local_results(cluster, smoke_study, tmp_path):
    run_dir = tmp_path / "ray"
    result = _ray_runner(smoke_spec(), run_dir).run()
    assert result.computed == len(smoke_study.plan) and result.cache_hits == 0
    assert (run_dir / "results.csv").read_bytes() == (smoke_study.run_dir / "results.csv").read_bytes()
    assert (run_dir / "quality.csv").read_bytes() == (smoke_study.run_dir / "quality.csv").read_bytes()
    timeline = pd.read_csv(run_dir / TIMELINE_NAME)
    assert sorted(timeline["key"]) == sorted(unit.key for unit in smoke_study.plan)
    assert (timeline["attempts"] == 1).all() and timeline["node_id"].notna().all()
    # Each unit started after the units it reads had ended.
    ends = dict(zip(timeline["key"], pd.to_datetime(timeline["end"]), strict=True))
    starts = dict(zip(timeline["key"], pd.to_datetime(timeline["start"]), strict=True))
    for unit in smoke_study.plan:
        assert all(starts[unit.key] >= ends[upstream] for upstream in unit.depends_on)
    # A second run finds every unit finished and submits nothing.
    again = _ray_runner(smoke_spec(), run_dir).run()
    assert again.computed == 0 and again.cache_hits == len(smoke_study.plan)


def test_a_unit_whose_worker_dies_is_retried_and_the_study_completes(cluster, tmp_path):
    generator = {**SMOKE["generators"][1], "models": "per_fold"}
    spec = smoke_spec(generators=[generator], split={"folds": 3, "minority": "pneumonia", "keep": [1.0], "run_folds": [0]},
                      quality={"enabled": False})
    run_dir = tmp_path / "run"
    result = WrappedRunner(spec, run_dir, progress=False, executor=RayExecutor(RunFolder(run_dir).cache),
                           wrapper=DieOnce, kind="fit").run()
    assert (run_dir / "killed-once").is_file()  # the first attempt did die
    assert result.computed == 4 and len(result.results) == 2 * 3  # fit, sample, 2 classifier runs
    timeline = pd.read_csv(run_dir / TIMELINE_NAME).set_index("kind")
    assert timeline.loc["fit", "attempts"] == 2
    assert timeline.loc["fit", "pid"] != int((run_dir / "killed-once").read_text())
    assert (timeline.drop(index="fit")["attempts"] == 1).all()


def test_an_error_of_the_unit_itself_is_not_retried_and_stops_the_study(cluster, tmp_path):
    from sonosynth.errors import SonosynthError

    spec = smoke_spec(generators=[], regimes=["real"], split={"folds": 3, "keep": [1.0], "run_folds": [0]},
                      quality={"enabled": False})
    run_dir = tmp_path / "run"
    runner = WrappedRunner(spec, run_dir, progress=False, executor=RayExecutor(RunFolder(run_dir).cache),
                           wrapper=Fails, kind="classify")
    with pytest.raises(SonosynthError, match="broken on purpose"):
        runner.run()
    assert (run_dir / "calls").read_text() == "called\n"


def test_the_local_executor_imports_no_ray(tmp_path):
    code = (
        "import sys\n"
        "import sonosynth.cli, sonosynth.commands.experiment, sonosynth.experiment.runner, sonosynth.study\n"
        "from sonosynth.study import make_executor\n"
        f"make_executor('local', {str(tmp_path)!r})\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_without_ray_the_cluster_executor_names_the_extra_to_install(tmp_path, monkeypatch):
    from sonosynth.errors import SonosynthError
    from sonosynth.experiment import ray_executor
    from sonosynth.study import make_executor

    monkeypatch.setattr(ray_executor, "ray_available", lambda: False)
    with pytest.raises(SonosynthError, match=r"pip install 'sonosynth\[cluster\]'"):
        make_executor("ray", tmp_path)
    with pytest.raises(SonosynthError, match="--executor ray"):
        make_executor("local", tmp_path, address="auto")


def test_the_run_command_names_a_bad_executor_choice_in_one_line(tmp_path, monkeypatch, capsys):
    from sonosynth.cli import main

    for args, message in ((["--executor", "slurm"], "unknown executor 'slurm'"),
                          (["--address", "auto"], "--address names a Ray cluster")):
        monkeypatch.setattr("sys.argv", ["sonosynth", "run", str(DEMO), "--out", str(tmp_path / "run"), *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        out = capsys.readouterr()
        assert exit_.value.code == 2 and message in out.out and "Traceback" not in out.out + out.err
    assert not (tmp_path / "run").exists()  # refused before anything was written
