"""Running a study end to end from Python: spec -> run folder with results and report."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sonosynth.experiment.runner import StudyResult, StudyRunner
from sonosynth.experiment.spec import StudySpec
from sonosynth.progress import progress_display
from sonosynth.report.build import Report, write_report


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
    if data.suffix.lower() == ".csv" or (data / "manifest.csv").is_file():
        new = source.model_copy(update={"manifest": data, "pocus": None, "folder": None, "phantom": None})
    elif source.pocus is not None:
        new = source.model_copy(update={"pocus": source.pocus.model_copy(update={"source": data})})
    elif source.folder is not None:
        new = source.model_copy(update={"folder": source.folder.model_copy(update={"source": data})})
    else:
        new = source.model_copy(update={"manifest": data, "phantom": None})
    return spec.model_copy(update={"data": type(source).model_validate(new.model_dump())})


def run_study(spec: StudySpec, run_dir: str | os.PathLike, data: str | os.PathLike | None = None,
              progress: bool = True, jobs: int = 1) -> StudyOutcome:
    spec = with_data_source(spec, data)
    if not progress:
        runner = StudyRunner(spec, run_dir, progress=False, jobs=jobs)
        result = runner.run()
    else:
        with progress_display() as display:
            task = display.add_task("study", total=None)

            def advance(description: str, computed: bool) -> None:
                display.update(task, description=f"study: {description}")
                display.advance(task)

            runner = StudyRunner(spec, run_dir, progress=True, on_unit=advance, jobs=jobs,
                                 on_plan=lambda total: display.update(task, total=total))
            result = runner.run()
    return StudyOutcome(result, write_report(run_dir))
