"""The study runner: walks folds x keep fractions x generators x regimes x classifiers through the cache.

The order of work per fold and keep fraction:
1. the generators' training images: the fold's *training* images of the classes each generator
   augments (never a validation patient), selected by `training_images`;
2. fit one model per image / per fold / per class, and sample `samples_per_model` from each;
3. train and evaluate every regime x classifier x seed on the real validation fold;
4. image-quality and memorization metrics of each generator's synthetic set.
Each step is a cache unit; the runner itself holds no state that is not on disk.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from sonosynth.atomic import write_text_atomic
from sonosynth.data.images import IMAGE_SUFFIXES
from sonosynth.data.manifest import Manifest, concat
from sonosynth.data.split import FoldData, make_folds, read_folds, same_assignment, split_fold, write_folds
from sonosynth.errors import SonosynthError
from sonosynth.experiment import units
from sonosynth.experiment.cache import UnitCache
from sonosynth.experiment.executor import Executor, Job
from sonosynth.experiment.spec import SYNTHETIC_REGIMES, ClassifierSpec, GeneratorSpec, StudySpec

log = logging.getLogger(__name__)
RESULTS_FILENAME = "results.csv"
QUALITY_FILENAME = "quality.csv"
CONFUSIONS_FILENAME = "confusions.csv"
MEMORIZATION_FILENAME = "memorization_flags.csv"
SYNTHETIC_INDEX_FILENAME = "synthetic_sets.csv"
UNITS_FILENAME = "units.csv"  # every unit of the study: kind, fold, keep, name, description, cache folder


# ------------------------------------------------------------------------------------------ data
def prepare_data(spec: StudySpec, run_dir: Path, progress: bool = True) -> Manifest:
    """The real images of the study, ingested or simulated into `run_dir/data` when needed."""
    data = spec.data
    if data.manifest is not None:
        return Manifest.read(data.manifest)
    if data.phantom is not None:
        from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset

        manifest, report = make_phantom_dataset(run_dir / "data", PhantomOptions(**data.phantom.model_dump()),
                                                progress=progress)
        return _logged_ingest(manifest, report, "the phantom simulator")
    if data.pocus is not None:
        from sonosynth.data.pocus import PocusIngestOptions, ingest_pocus

        manifest, report = ingest_pocus(data.pocus.source, run_dir / "data",
                                        PocusIngestOptions(**data.pocus.options), progress=progress)
        return _logged_ingest(manifest, report, str(data.pocus.source))
    from sonosynth.data.folder import FolderIngestOptions, ingest_folder

    manifest, report = ingest_folder(data.folder.source, run_dir / "data",
                                     FolderIngestOptions(**data.folder.options), progress=progress)
    return _logged_ingest(manifest, report, str(data.folder.source))


def _logged_ingest(manifest: Manifest, report, source: str) -> Manifest:
    """Log the ingest summary (the run's log keeps what was read, skipped and assumed)."""
    counts = manifest.counts()
    log.info("data from %s%s: %d images of %d patients (%s)", source, " (reused)" if report.reused else "",
             len(manifest), manifest.table["patient_id"].nunique(),
             ", ".join(f"{label}: {row.images} images / {row.patients} patients" for label, row in counts.iterrows()))
    if report.skipped:
        reasons = report.skip_reasons()
        log.warning("%d file(s) skipped (%s); the list is in %s", len(report.skipped),
                    ", ".join(f"{reason}: {n}" for reason, n in reasons.items()), "data/skipped.csv")
    for note, count in report.notes.items():
        log.info("note: %s: %d", note, count)
    return manifest


def generator_classes(generator: GeneratorSpec, train: Manifest, minority: str | None) -> list[str]:
    if generator.classes == "all":
        return train.classes
    if generator.classes:
        return list(generator.classes)
    if minority is None:
        raise SonosynthError(f"generator {generator.name}: set its `classes` or the split's `minority`.")
    return [minority]


def select_generator_images(train: Manifest, generator: GeneratorSpec, classes: list[str]) -> Manifest:
    """The training images a generator learns from, all from the fold's training side."""
    subset = train.with_labels(classes)
    table = subset.table
    if generator.training_images == "stills":
        # The lung study trained SinDDM on still images only, not on frames of videos.
        return subset.where(table["source"].fillna("").str.lower().str.endswith(IMAGE_SUFFIXES))
    if generator.training_images == "one_per_source":
        # One frame per clip or still: the middle one, so consecutive near-duplicates do not count twice.
        ordered = table.reset_index().sort_values(["source", "frame_index", "path"])
        picks = ordered.groupby("source", sort=True, dropna=False)["index"].apply(lambda ix: ix.iloc[len(ix) // 2])
        mask = table.index.isin(picks.to_numpy())
        return subset.where(mask)
    return subset


def model_groups(images: Manifest, generator: GeneratorSpec) -> list[Manifest]:
    """How the generator's training images are split into models."""
    if len(images) == 0:
        return []
    if generator.models == "per_image":
        groups = [images.where(images.table.index == i) for i in range(len(images))]
    elif generator.models == "per_class":
        groups = [images.with_labels([label]) for label in images.classes]
    else:
        groups = [images]
    return groups[: generator.max_models] if generator.max_models else groups


# ------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Condition:
    """One row of the results tables: a regime, with the generator whose images it uses (if any)."""

    regime: str
    generator: str | None

    @property
    def label(self) -> str:
        return self.regime if self.generator is None else f"{self.regime} [{self.generator}]"


def conditions(spec: StudySpec) -> list[Condition]:
    result = []
    for regime in spec.regimes:
        if regime in SYNTHETIC_REGIMES:
            result.extend(Condition(regime, g.name) for g in spec.generators)
        else:
            result.append(Condition(regime, None))
    return result


@dataclass
class StudyResult:
    run_dir: Path
    results: pd.DataFrame
    quality: pd.DataFrame
    cache_hits: int
    computed: int
    seconds: float
    synthetic_sets: dict[tuple[int, float, str], Manifest] = field(default_factory=dict)


def _fold_list(spec: StudySpec) -> list[int]:
    folds = spec.split.run_folds if spec.split.run_folds is not None else list(range(spec.split.folds))
    bad = [f for f in folds if not 0 <= f < spec.split.folds]
    if bad:
        raise SonosynthError(f"split.run_folds {bad} outside 0..{spec.split.folds - 1}.")
    return folds


def stopping_side(spec: StudySpec, train: Manifest) -> Manifest:
    """The fold's early-stopping patients, shared by every condition so model selection is identical.

    Carved once per fold and fraction (with the first classifier's settings and seed) and passed to
    every classifier run; the generators never see these patients, so no synthetic image is derived
    from an image that early stopping looks at.
    """
    return units.stopping_set(train, spec.classifiers[0], spec.seeds[0])


def generator_side(train: Manifest, stop: Manifest) -> Manifest:
    return train.where(~train.table["patient_id"].isin(set(stop.table["patient_id"])))


def count_units(spec: StudySpec, manifest: Manifest, folds: pd.DataFrame) -> int:
    """The jobs the run submits (identical ones included), for the progress bar's total and ETA."""
    total = 0
    for fold in _fold_list(spec):
        for keep in spec.split.keep:
            full = split_fold(manifest, folds, fold, keep).train
            train = generator_side(full, stopping_side(spec, full))
            for generator in spec.generators:
                classes = generator_classes(generator, train, spec.split.minority)
                groups = model_groups(select_generator_images(train, generator, classes), generator)
                labels = sum(len(set(g.labels)) for g in groups)
                total += len(groups) + labels + (1 if spec.quality.enabled else 0)
            total += len(conditions(spec)) * len(spec.classifiers) * len(spec.seeds)
            if spec.quality.enabled and spec.quality.features == "classifier":
                total += 1  # the fold's reference real classifier (usually the `real` condition's unit)
    return total


# ------------------------------------------------------------------------------------------ run
class StudyRunner:
    """Plans the study's units phase by phase (fits, samples, classifiers, quality) and executes them.

    Units within a phase are independent, so `jobs > 1` runs them in worker processes.
    """

    def __init__(self, spec: StudySpec, run_dir: str | os.PathLike, progress: bool = True,
                 on_unit: Callable[[str, bool], None] | None = None,
                 on_plan: Callable[[int], None] | None = None, jobs: int = 1,
                 on_start: Callable[[str], object] | None = None) -> None:
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.cache = UnitCache(self.run_dir / "cache")
        self.on_unit = on_unit or (lambda description, computed: None)
        self.on_plan = on_plan or (lambda total: None)
        self.executor = Executor(self.cache, jobs=jobs, device=spec.device, on_unit=self._unit_finished,
                                 on_start=on_start)

    def _unit_finished(self, description: str, computed: bool) -> None:
        self.on_unit(description, computed)

    # -- setup
    def prepare(self) -> tuple[Manifest, pd.DataFrame]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.run_dir / "spec.yaml", yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False))
        write_text_atomic(self.run_dir / "versions.json", json.dumps(software_versions(), indent=2))
        manifest = prepare_data(self.spec, self.run_dir, progress=self.progress)
        manifest.write(self.run_dir / "manifest.csv")
        manifest = Manifest.read(self.run_dir / "manifest.csv")
        if self.spec.split.minority is not None and self.spec.split.minority not in manifest.classes:
            raise SonosynthError(
                f"split.minority {self.spec.split.minority!r} is not a class of the data ({manifest.classes})."
            )
        folds = make_folds(manifest, self.spec.split.folds, self.spec.split.seed, self.spec.split.minority)
        folds_path = self.run_dir / "folds.csv"
        if folds_path.is_file() and not same_assignment(read_folds(folds_path), folds):
            raise SonosynthError(
                f"{folds_path} differs from the folds this spec gives (data or split changed); "
                "use a new run folder so cached results are not mixed."
            )
        write_folds(folds, folds_path)
        return manifest, folds

    # -- job builders: each returns a Job whose key covers its inputs' content and its config
    def _fit_job(self, generator: GeneratorSpec, images: Manifest, where: str = "") -> Job:
        from sonosynth.config import load_config
        from sonosynth.generators.base import create_generator

        implementation = create_generator(generator.kind)
        config = load_config(implementation.config_type, implementation.presets, generator.preset,
                             generator.overrides).model_dump(mode="json")
        payload = {"generator": generator.kind, "config": config, "images": self.cache.hasher.manifest(images)}
        return Job("fit", payload, units.fit_unit, (generator.kind, config, images, self.spec.device, False),
                   f"fit {generator.name} {where}".strip())

    def _sample_job(self, generator: GeneratorSpec, fit: Job, label: str, n: int) -> Job:
        where = fit.description.split(" ", 2)[2] if fit.description.count(" ") >= 2 else ""
        checkpoint = self.cache.unit_dir("fit", self.cache.key(fit.kind, fit.payload)) / "model"
        payload = {"fit": self.cache.key(fit.kind, fit.payload), "n": n, "label": label,
                   "settings": generator.sample_settings}
        return Job("sample", payload, units.sample_unit,
                   (generator.kind, checkpoint, n, label, generator.sample_settings, self.spec.device),
                   f"sample {generator.name} {where} {label}".replace("  ", " "))

    def _classify_job(self, condition: Condition, classifier: ClassifierSpec, seed: int, data: FoldData,
                      synthetic: Manifest | None, stop: Manifest, where: str = "") -> Job:
        payload = {
            "regime": condition.regime, "classifier": classifier.model_dump(mode="json"), "seed": seed,
            "train": self.cache.hasher.manifest(data.train), "validation": self.cache.hasher.manifest(data.validation),
            "synthetic": self.cache.hasher.manifest(synthetic) if synthetic is not None else None,
            "stop": self.cache.hasher.manifest(stop),
        }
        return Job("classify", payload, units.classify_unit,
                   (condition.regime, classifier, seed, data.train, data.validation, synthetic, stop,
                    self.spec.device, False),
                   f"classify {condition.label} {classifier.model} {where} seed {seed}".replace("  ", " "))

    def _quality_job(self, generator: GeneratorSpec, synthetic: Manifest, data: FoldData,
                     reference: Job | None, where: str = "") -> Job:
        reference_dir = self.cache.unit_dir("classify", self.cache.key("classify", reference.payload)) if reference else None
        payload = {"synthetic": self.cache.hasher.manifest(synthetic), "real": self.cache.hasher.manifest(data.train),
                   "held_out": self.cache.hasher.manifest(data.validation),
                   "quality": self.spec.quality.model_dump(mode="json"),
                   "reference": reference_dir.name if reference_dir else None}
        return Job("quality", payload, units.quality_unit,
                   (synthetic, data.train, self.spec.quality, reference_dir, self.spec.device, data.validation),
                   f"quality {generator.name} {where}".strip())

    # -- the grid
    def run(self) -> StudyResult:
        started = time.perf_counter()
        manifest, folds = self.prepare()
        self.on_plan(count_units(self.spec, manifest, folds))
        cells = [(fold, keep, split_fold(manifest, folds, fold, keep))
                 for fold in _fold_list(self.spec) for keep in self.spec.split.keep]
        stops = {(fold, keep): stopping_side(self.spec, data.train) for fold, keep, data in cells}

        # Phase 1: every generator model of every cell (nested fractions share models through the cache).
        groups: dict[tuple[int, float, str], list[tuple[Job, Manifest]]] = {}
        for fold, keep, data in cells:
            fit_side = generator_side(data.train, stops[(fold, keep)])
            for generator in self.spec.generators if self._needs_synthetic() else []:
                classes = generator_classes(generator, fit_side, self.spec.split.minority)
                models = model_groups(select_generator_images(fit_side, generator, classes), generator)
                if not models:
                    raise SonosynthError(
                        f"generator {generator.name}: fold {fold} at keep {keep:g} has no training images of "
                        f"{classes} ({generator.training_images}); lower max constraints or use training_images: all."
                    )
                groups[(fold, keep, generator.name)] = [
                    (self._fit_job(generator, group, _where(fold, keep, generator, number, len(models))), group)
                    for number, group in enumerate(models, start=1)]
        self.executor.run([job for pairs in groups.values() for job, _ in pairs])

        # Phase 2: samples of every model, per class it learned.
        by_name = {g.name: g for g in self.spec.generators}
        sample_jobs: dict[tuple[int, float, str], list[Job]] = {}
        for cell, pairs in groups.items():
            generator = by_name[cell[2]]
            jobs = []
            for fit, group in pairs:
                n = generator.samples_per_model * (len(group) if generator.samples_per_training_image else 1)
                jobs.extend(self._sample_job(generator, fit, label, n) for label in group.classes)
            sample_jobs[cell] = jobs
        self.executor.run([job for jobs in sample_jobs.values() for job in jobs])
        synthetic_sets = {
            cell: concat([Manifest.read(self.executor.folder(job) / "samples") for job in jobs], self.run_dir)
            for cell, jobs in sample_jobs.items()
        }

        # Phase 3: every condition x classifier x seed on the real validation fold.
        classify_jobs: list[tuple[int, float, Condition, str, int, Job]] = []
        references: dict[tuple[int, float], Job] = {}
        for fold, keep, data in cells:
            for condition in conditions(self.spec):
                extra = synthetic_sets.get((fold, keep, condition.generator)) if condition.generator else None
                for classifier in self.spec.classifiers:
                    for seed in self.spec.seeds:
                        job = self._classify_job(condition, classifier, seed, data, extra, stops[(fold, keep)],
                                                 f"fold {fold} keep {keep:g}")
                        classify_jobs.append((fold, keep, condition, classifier.model, seed, job))
            if self.spec.quality.enabled and self.spec.quality.features == "classifier":
                # The fold's real-only classifier gives the domain features for SIFID/FID/KID.
                references[(fold, keep)] = self._classify_job(Condition("real", None), self.spec.classifiers[0],
                                                              self.spec.seeds[0], data, None, stops[(fold, keep)],
                                                              f"fold {fold} keep {keep:g}")
        self.executor.run([entry[-1] for entry in classify_jobs] + list(references.values()))
        rows, confusion_rows = [], []
        for fold, keep, condition, model, seed, job in classify_jobs:
            folder = self.executor.folder(job)
            outcome = {"metrics": json.loads((folder / "metrics.json").read_text()),
                       "confusion": pd.read_csv(folder / "confusion.csv", index_col=0)}
            rows.extend(_result_rows(fold, keep, condition, model, seed, outcome))
            confusion_rows.extend(_confusion_rows(fold, keep, condition, model, seed, outcome["confusion"]))

        # Phase 4: image quality and memorization of each synthetic set.
        quality_rows, flag_rows = [], []
        if self.spec.quality.enabled:
            quality_jobs = {}
            for fold, keep, data in cells:
                for generator in self.spec.generators:
                    if (fold, keep, generator.name) in synthetic_sets:
                        quality_jobs[(fold, keep, generator.name)] = self._quality_job(
                            generator, synthetic_sets[(fold, keep, generator.name)], data,
                            references.get((fold, keep)), f"fold {fold} keep {keep:g}")
            self.executor.run(list(quality_jobs.values()))
            for (fold, keep, name), job in quality_jobs.items():
                table = pd.read_csv(self.executor.folder(job) / "quality.csv")
                quality_rows.append(table.assign(fold=fold, keep=keep, generator=name))
                audit = pd.read_csv(self.executor.folder(job) / "memorization.csv")
                flag_rows.append(audit[audit["flagged"]].assign(fold=fold, keep=keep, generator=name))

        results = pd.DataFrame(rows)
        quality = pd.concat(quality_rows, ignore_index=True) if quality_rows else pd.DataFrame()
        _write_csv(results, self.run_dir / RESULTS_FILENAME)
        _write_csv(quality, self.run_dir / QUALITY_FILENAME)
        flags = pd.concat(flag_rows, ignore_index=True) if flag_rows else pd.DataFrame()
        _write_csv(flags, self.run_dir / MEMORIZATION_FILENAME)
        _write_csv(pd.DataFrame(confusion_rows), self.run_dir / CONFUSIONS_FILENAME)
        for (fold, keep, name), images in synthetic_sets.items():
            images.write(self.run_dir / "synthetic" / f"fold{fold}-keep{keep:g}-{name}" / "manifest.csv")
        index = [{"fold": f, "keep": k, "generator": g, "manifest": f"synthetic/fold{f}-keep{k:g}-{g}/manifest.csv"}
                 for (f, k, g) in synthetic_sets]
        _write_csv(pd.DataFrame(index, columns=["fold", "keep", "generator", "manifest"]),
                   self.run_dir / SYNTHETIC_INDEX_FILENAME)
        units_index = [(fold, keep, name, "", "", fit) for (fold, keep, name), pairs in groups.items()
                       for fit, _ in pairs]
        units_index += [(fold, keep, name, "", "", job) for (fold, keep, name), jobs in sample_jobs.items()
                        for job in jobs]
        units_index += [(fold, keep, condition.label, model, seed, job)
                        for fold, keep, condition, model, seed, job in classify_jobs]
        if self.spec.quality.enabled:
            units_index += [(fold, keep, name, "", "", job) for (fold, keep, name), job in quality_jobs.items()]
        _write_csv(pd.DataFrame([{"kind": job.kind, "fold": fold, "keep": keep, "name": name, "classifier": model,
                                  "seed": seed, "description": job.description,
                                  "folder": os.path.relpath(self.executor.folder(job), self.run_dir)}
                                 for fold, keep, name, model, seed, job in units_index],
                                columns=["kind", "fold", "keep", "name", "classifier", "seed", "description",
                                         "folder"]),
                   self.run_dir / UNITS_FILENAME)
        stats = self.executor.stats
        return StudyResult(self.run_dir, results, quality, stats.hits, stats.computed,
                           time.perf_counter() - started, synthetic_sets)

    def _needs_synthetic(self) -> bool:
        return any(r in SYNTHETIC_REGIMES for r in self.spec.regimes) or self.spec.quality.enabled


def _where(fold: int, keep: float, generator: GeneratorSpec, number: int, models: int) -> str:
    """Where a generator model sits in the study, for its unit's description (logs, status, TensorBoard)."""
    what = {"per_image": "image", "per_class": "class"}.get(generator.models, "model")
    return f"fold {fold} keep {keep:g} {what} {number}/{models}"


def _result_rows(fold: int, keep: float, condition: Condition, classifier: str, seed: int, outcome: dict) -> list[dict]:
    metrics = outcome["metrics"]
    common = {"fold": fold, "keep": keep, "regime": condition.regime, "generator": condition.generator or "",
              "condition": condition.label, "classifier": classifier, "seed": seed,
              "accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"]}
    rows = []
    for label, values in metrics["per_class"].items():
        rows.append({**common, "class": label, **{k: values[k] for k in ("precision", "recall", "f1", "support")}})
    return rows


def _confusion_rows(fold: int, keep: float, condition: Condition, classifier: str, seed: int,
                    confusion: pd.DataFrame) -> list[dict]:
    common = {"fold": fold, "keep": keep, "condition": condition.label, "classifier": classifier, "seed": seed}
    return [{**common, "true": str(true), "predicted": str(predicted), "count": int(count)}
            for true, row in confusion.iterrows() for predicted, count in row.items()]


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    from sonosynth.atomic import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


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
