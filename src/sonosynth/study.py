"""Running a study end to end from Python: spec -> run folder with results and report."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sonosynth import __version__
from sonosynth.data.manifest import MANIFEST_FILENAME
from sonosynth.device import hardware_summary
from sonosynth.errors import SonosynthError
from sonosynth.experiment.dry_run import DryRun, dry_run, training_sides
from sonosynth.experiment.executor import Executor, local_executor
from sonosynth.experiment.layout import RunFolder
from sonosynth.experiment.probe import format_hours, probe_study
from sonosynth.experiment.runner import StudyResult, StudyRunner
from sonosynth.experiment.spec import StudySpec
from sonosynth.logs import run_log
from sonosynth.progress import bars_enabled, format_duration, progress_display
from sonosynth.report.build import Report, write_report
from sonosynth.status import StudyProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyOutcome:
    result: StudyResult
    report: Report


def with_data_source(spec: StudySpec, data: str | os.PathLike | None) -> StudySpec:
    """The spec with its data source folder (or manifest) replaced, e.g. `--data ../shared/data/pocus`."""
    if data is None:
        return spec
    data = Path(data)
    source = spec.data
    if data.suffix.lower() == ".csv" or (data / MANIFEST_FILENAME).is_file():
        new = source.model_copy(update={"manifest": data, "pocus": None, "folder": None, "fetal_planes": None,
                                        "phantom": None})
    elif source.pocus is not None:
        new = source.model_copy(update={"pocus": source.pocus.model_copy(update={"source": data})})
    elif source.fetal_planes is not None:
        new = source.model_copy(update={"fetal_planes": source.fetal_planes.model_copy(update={"source": data})})
    elif source.folder is not None:
        new = source.model_copy(update={"folder": source.folder.model_copy(update={"source": data})})
    else:
        new = source.model_copy(update={"manifest": data, "phantom": None})
    return spec.model_copy(update={"data": type(source).model_validate(new.model_dump())})


EXECUTORS = ("local", "ray")


def make_executor(kind: str, run_dir: str | os.PathLike, jobs: int = 1, device: str = "auto",
                  address: str | None = None) -> Executor:
    """The executor `sonosynth run --executor KIND` asks for, over the run folder's cache."""
    cache_root = RunFolder(Path(run_dir)).cache
    if kind == "local":
        if address is not None:
            raise SonosynthError("--address names a Ray cluster: use it with --executor ray.")
        return local_executor(cache_root, jobs=jobs, device=device)
    if kind == "ray":
        if jobs > 1:
            raise SonosynthError("--jobs is for the local executor; on Ray the cluster's resources set how many "
                                 "units run at once.")
        from sonosynth.experiment.ray_executor import RayExecutor

        return RayExecutor(cache_root, address=address)
    raise SonosynthError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}.")


def run_study(spec: StudySpec, run_dir: str | os.PathLike, data: str | os.PathLike | None = None,
              progress: bool = True, jobs: int = 1, executor: Executor | None = None) -> StudyOutcome:
    """Run a study into `run_dir` (logged to `run_dir/run.log`, progress in `run_dir/status.json`)."""
    spec = with_data_source(spec, data)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_log(run_dir), progress_display() as display:
        log.info("sonosynth %s: study %r into %s on %s", __version__, spec.name, run_dir, hardware_summary())
        watch = StudyProgress(run_dir, display if progress and bars_enabled() else None)
        state = "failed"
        try:
            runner = StudyRunner(spec, run_dir, progress=progress, on_unit=watch.finished, on_start=watch.started,
                                 on_plan=watch.plan, jobs=jobs, executor=executor)
            result = runner.run()
            state = "finished"
        except KeyboardInterrupt:
            state = "interrupted"
            log.debug("interrupted: finished units are kept; re-run the same command to continue.")
            raise
        except Exception as exc:  # the CLI shows the error; the run's log keeps it with its traceback
            log.debug("study failed: %s", exc, exc_info=True)
            raise
        finally:
            watch.close(state)
        report = write_report(run_dir)
        log.info("study finished in %s: %d units computed, %d reused from the cache; report: %s",
                 format_duration(result.seconds), result.computed, result.cache_hits, report.html_path)
    return StudyOutcome(result, report)


def print_dry_run(spec: StudySpec, run_dir: str | os.PathLike, data: str | os.PathLike | None = None,
                  probe: bool = False) -> DryRun:
    """The CLI's `--dry-run [--probe]`: the plan (and the probe's table) on the console."""
    from sonosynth.console import console, print_table

    spec = with_data_source(spec, data)
    result = dry_run(spec, run_dir)
    summary = result.summary
    console.print(f"spec {spec.name!r} is valid: {len(spec.generators)} generator(s), {len(spec.classifiers)} "
                  f"classifier(s), regimes {', '.join(spec.regimes)}")
    console.print(f"data: {summary.real_images} real images of {summary.patients} patients; folds {summary.folds}, "
                  f"keep {summary.keeps}")
    print_table(summary.table(), title=f"plan: {sum(summary.units.values())} units")
    print_table(training_sides(result), title="per fold and fraction: training patients (fit side) and the "
                "early-stopping set, per class")
    if probe:
        from sonosynth.device import hardware_summary

        console.print(f"probe on {hardware_summary()} (device {spec.device})")
        def shown(row) -> None:  # each part as it finishes: a slow probe still shows what it has done
            console.print(f"  probed {row.unit}: {row.as_dict()['trainable'] or '-'} trainable, "
                          f"{row.as_dict()['frozen'] or '-'} frozen, batch {row.batch}, peak "
                          f"{row.as_dict()['peak MB']} MB, {row.probe_seconds:.1f} s")

        table = probe_study(result, spec.device, on_row=shown)
        cap = table.attrs.get("cap_mb")
        print_table(table, title="probe: one step of each network at the spec's size"
                    + (f" (memory cap {cap / 1024:.1f} GB)" if cap else ""))
        console.print(f"estimated full run on this device: {format_hours(table.attrs['total_seconds'])} "
                      "(fits, samples and classifier trainings; quality metrics not included)")
    return result
