"""The study runner: prepares the run folder, plans the study, executes the plan, collects the tables.

The four phases of `StudyRunner.run`:
1. `prepare`: the spec, software versions, the real images (ingested or simulated) and the folds,
   written to the run folder (see `layout.py`);
2. `plan`: every unit of the study (`plan.build_plan`), built before anything runs;
3. `execute`: the plan's units through the executor (serial, worker processes, or a cluster), each
   through the one cache;
4. `collect`: the unit outputs into results.csv, confusions.csv, quality.csv, memorization_flags.csv
   and the SyntheticSets.
The runner itself holds no state that is not on disk.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from sonosynth.atomic import write_csv_atomic, write_text_atomic
from sonosynth.data.ingest import SKIPPED_FILENAME
from sonosynth.data.manifest import Manifest, concat
from sonosynth.data.split import dataset_folds, make_folds, read_folds, same_assignment, write_folds
from sonosynth.errors import SonosynthError
from sonosynth.experiment import outputs
from sonosynth.experiment.executor import Executor, local_executor
from sonosynth.experiment.layout import (
    CONFUSION_COLUMNS,
    DATA_DIR,
    RESULT_COLUMNS,
    SYNTHETIC_INDEX_COLUMNS,
    UNITS_COLUMNS,
    RunFolder,
)
from sonosynth.experiment.plan import Condition, StudyPlan, Unit, build_plan, resolve_study
from sonosynth.experiment.spec import StudySpec
from sonosynth.status import eta_group

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ data
def prepare_data(spec: StudySpec, run_dir: Path, progress: bool = True) -> Manifest:
    """The real images of the study, ingested or simulated into `run_dir/data` when needed."""
    data = spec.data
    if data.manifest is not None:
        return Manifest.read(data.manifest)
    if data.phantom is not None:
        from sonosynth.data.phantom_dataset import make_phantom_dataset

        manifest, report = make_phantom_dataset(RunFolder(run_dir).data, data.phantom, progress=progress)
        return _logged_ingest(manifest, report, "the phantom simulator")
    if data.pocus is not None:
        from sonosynth.data.pocus import ingest_pocus

        manifest, report = ingest_pocus(data.pocus.source, RunFolder(run_dir).data, data.pocus.options,
                                        progress=progress)
        return _logged_ingest(manifest, report, str(data.pocus.source))
    if data.fetal_planes is not None:
        from sonosynth.data.fetal_planes import ingest_fetal_planes

        manifest, report = ingest_fetal_planes(data.fetal_planes.source, RunFolder(run_dir).data,
                                               data.fetal_planes.options, progress=progress)
        return _logged_ingest(manifest, report, str(data.fetal_planes.source))
    from sonosynth.data.folder import ingest_folder

    manifest, report = ingest_folder(data.folder.source, RunFolder(run_dir).data, data.folder.options,
                                     progress=progress)
    return _logged_ingest(manifest, report, str(data.folder.source))


def make_study_folds(spec: StudySpec, manifest: Manifest) -> pd.DataFrame:
    """The folds table the spec's split gives on `manifest`."""
    if spec.split.minority is not None and spec.split.minority not in manifest.classes:
        raise SonosynthError(f"split.minority {spec.split.minority!r} is not a class of the data ({manifest.classes}).")
    if spec.split.scheme == "dataset":
        return dataset_folds(manifest, spec.split.seed, spec.split.minority)
    return make_folds(manifest, spec.split.folds, spec.split.seed, spec.split.minority)


def _logged_ingest(manifest: Manifest, report, source: str) -> Manifest:
    """Log the ingest summary (the run's log keeps what was read, skipped and assumed)."""
    counts = manifest.counts()
    log.info("data from %s%s: %d images of %d patients (%s)", source, " (reused)" if report.reused else "",
             len(manifest), manifest.table["patient_id"].nunique(),
             ", ".join(f"{label}: {row.images} images / {row.patients} patients" for label, row in counts.iterrows()))
    if report.skipped:
        reasons = report.skip_reasons()
        log.warning("%d file(s) skipped (%s); the list is in %s", len(report.skipped),
                    ", ".join(f"{reason}: {n}" for reason, n in reasons.items()), f"{DATA_DIR}/{SKIPPED_FILENAME}")
    for note, count in report.notes.items():
        log.info("note: %s: %d", note, count)
    return manifest


@dataclass
class StudyResult:
    run_dir: Path
    results: pd.DataFrame
    quality: pd.DataFrame
    cache_hits: int
    computed: int
    seconds: float
    synthetic_sets: dict[tuple[int, float, str], Manifest] = field(default_factory=dict)
    units: int = 0


class StudyRunner:
    """Runs a study spec into a run folder: prepare, plan, execute, collect.

    Every configuration is resolved when the runner is made, so a typo in the spec fails before any
    data is ingested or any model is fitted.
    """

    def __init__(self, spec: StudySpec, run_dir: str | os.PathLike, progress: bool = True,
                 on_unit: Callable[[str, bool], None] | None = None,
                 on_plan: Callable[[int, dict[str, int]], None] | None = None, jobs: int = 1,
                 executor: Executor | None = None, on_start: Callable[[str], object] | None = None) -> None:
        self.spec = spec
        self.study = resolve_study(spec)
        self.folder = RunFolder(Path(run_dir))
        self.run_dir = self.folder.root
        self.progress = progress
        self.on_unit = on_unit or (lambda description, computed: None)
        self.on_plan = on_plan or (lambda total, groups: None)
        self.on_start = on_start
        self.executor = executor or local_executor(self.folder.cache, jobs=jobs, device=spec.device)

    def prepare(self) -> tuple[Manifest, pd.DataFrame]:
        """Write the spec and versions, make the real images and the folds; refuse folds that changed."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.folder.spec, yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False))
        write_text_atomic(self.folder.versions, json.dumps(software_versions(), indent=2))
        manifest = prepare_data(self.spec, self.run_dir, progress=self.progress)
        manifest.write(self.folder.manifest)
        manifest = Manifest.read(self.folder.manifest)
        folds = make_study_folds(self.spec, manifest)
        if self.folder.folds.is_file() and not same_assignment(read_folds(self.folder.folds), folds):
            raise SonosynthError(
                f"{self.folder.folds} differs from the folds this spec gives (data or split changed); "
                "use a new run folder so cached results are not mixed."
            )
        write_folds(folds, self.folder.folds)
        return manifest, folds

    def plan(self, manifest: Manifest, folds: pd.DataFrame) -> StudyPlan:
        return build_plan(self.study, manifest, folds)

    def execute(self, plan: StudyPlan) -> None:
        def finished(unit: Unit, computed: bool) -> None:
            self.on_unit(unit.description, computed)

        def started(unit: Unit) -> None:
            if self.on_start is not None:
                self.on_start(unit.description)

        self.executor.run(plan.units, finished, started)

    def collect(self, plan: StudyPlan) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[int, float, str], Manifest]]:
        """The study's tables from the finished units' outputs, written into the run folder."""
        cache = self.folder.cache

        def folder(key: str) -> Path:
            return plan.unit(key).folder(cache)

        rows, confusion_rows = [], []
        for run in plan.classifier_runs:
            metrics = outputs.read_metrics(folder(run.key))
            confusion = outputs.read_confusion(folder(run.key))
            rows.extend(_result_rows(run.fold, run.keep, run.condition, run.classifier, run.seed, metrics))
            confusion_rows.extend(_confusion_rows(run.fold, run.keep, run.condition, run.classifier, run.seed,
                                                  confusion))
        quality_rows, flag_rows = [], []
        for run in plan.quality_runs:
            quality_rows.append(outputs.read_quality(folder(run.key)).assign(fold=run.fold, keep=run.keep,
                                                                             generator=run.generator))
            audit = outputs.read_memorization(folder(run.key))
            flag_rows.append(audit[audit["flagged"]].assign(fold=run.fold, keep=run.keep, generator=run.generator))
        synthetic_sets = {
            cell: concat([outputs.read_samples(folder(key)) for key in keys], self.run_dir)
            for cell, keys in plan.synthetic_sets.items()
        }

        results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
        quality = pd.concat(quality_rows, ignore_index=True) if quality_rows else pd.DataFrame()
        write_csv_atomic(results, self.folder.results)
        write_csv_atomic(quality, self.folder.quality)
        write_csv_atomic(pd.concat(flag_rows, ignore_index=True) if flag_rows else pd.DataFrame(),
                         self.folder.memorization)
        write_csv_atomic(pd.DataFrame(confusion_rows, columns=list(CONFUSION_COLUMNS)), self.folder.confusions)
        for (fold, keep, name), images in synthetic_sets.items():
            images.write(self.folder.synthetic_manifest(fold, keep, name))
        index = [{"fold": f, "keep": k, "generator": g, "manifest": RunFolder.synthetic_manifest_relative(f, k, g)}
                 for (f, k, g) in synthetic_sets]
        write_csv_atomic(pd.DataFrame(index, columns=list(SYNTHETIC_INDEX_COLUMNS)), self.folder.synthetic_index)
        write_csv_atomic(_units_index(plan, cache, self.run_dir), self.folder.units)
        return results, quality, synthetic_sets

    def run(self) -> StudyResult:
        started = time.perf_counter()
        manifest, folds = self.prepare()
        plan = self.plan(manifest, folds)
        self.on_plan(len(plan), dict(Counter(eta_group(unit.description) for unit in plan)))
        self.execute(plan)
        results, quality, synthetic_sets = self.collect(plan)
        stats = self.executor.stats
        return StudyResult(self.run_dir, results, quality, stats.hits, stats.computed,
                           time.perf_counter() - started, synthetic_sets, len(plan))


def _units_index(plan: StudyPlan, cache: Path, run_dir: Path) -> pd.DataFrame:
    """Each unit at every place of the study it serves (fold, keep, name), fits first, as the report reads them."""
    places: list[tuple[int, float, str, str, object, str]] = []
    for (fold, keep, name), keys in plan.synthetic_sets.items():
        fits = dict.fromkeys(plan.unit(key).depends_on[0] for key in keys)
        places += [(fold, keep, name, "", "", key) for key in fits]
    places += [(fold, keep, name, "", "", key) for (fold, keep, name), keys in plan.synthetic_sets.items()
               for key in keys]
    places += [(run.fold, run.keep, run.condition.label, run.classifier, run.seed, run.key)
               for run in plan.classifier_runs]
    # The study's one domain feature network serves every quality cell: listed at each, so fold and keep stay numbers.
    features = {unit.key for unit in plan.of_kind("features")}
    places += list(dict.fromkeys((run.fold, run.keep, "domain features", "", "", key) for run in plan.quality_runs
                                 for key in plan.unit(run.key).depends_on if key in features))
    places += [(run.fold, run.keep, run.generator, "", "", run.key) for run in plan.quality_runs]
    rows = []
    for fold, keep, name, classifier, seed, key in places:
        unit = plan.unit(key)
        rows.append({"kind": unit.kind, "fold": fold, "keep": keep, "name": name, "classifier": classifier,
                     "seed": seed, "description": unit.description,
                     "folder": os.path.relpath(unit.folder(cache), run_dir)})
    return pd.DataFrame(rows, columns=list(UNITS_COLUMNS))


def _result_rows(fold: int, keep: float, condition: Condition, classifier: str, seed: int, metrics: dict) -> list[dict]:
    common = {"fold": fold, "keep": keep, "regime": condition.regime, "generator": condition.generator or "",
              "condition": condition.label, "classifier": classifier, "seed": seed,
              "accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"]}
    rows = []
    for label, values in metrics["per_class"].items():
        rows.append({**common, "class": label, **{k: values[k] for k in outputs.PER_CLASS_KEYS}})
    return rows


def _confusion_rows(fold: int, keep: float, condition: Condition, classifier: str, seed: int,
                    confusion: pd.DataFrame) -> list[dict]:
    common = {"fold": fold, "keep": keep, "condition": condition.label, "classifier": classifier, "seed": seed}
    return [{**common, "true": str(true), "predicted": str(predicted), "count": int(count)}
            for true, row in confusion.iterrows() for predicted, count in row.items()]


def software_versions() -> dict[str, str]:
    from importlib import metadata

    from sonosynth.device import hardware_summary

    versions = {"python": platform.python_version(), "platform": platform.platform(), "hardware": hardware_summary()}
    for package in ("sonosynth", "torch", "torchvision", "monai", "numpy", "scikit-learn", "pandas"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions
