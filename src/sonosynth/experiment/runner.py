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
from sonosynth.data.split import make_folds, read_folds, same_assignment, split_fold, write_folds
from sonosynth.errors import SonosynthError
from sonosynth.experiment.cache import UnitCache
from sonosynth.experiment.spec import SYNTHETIC_REGIMES, GeneratorSpec, StudySpec

RESULTS_FILENAME = "results.csv"
QUALITY_FILENAME = "quality.csv"
CONFUSIONS_FILENAME = "confusions.csv"
SYNTHETIC_INDEX_FILENAME = "synthetic_sets.csv"


# ------------------------------------------------------------------------------------------ data
def prepare_data(spec: StudySpec, run_dir: Path, progress: bool = True) -> Manifest:
    """The real images of the study, ingested or simulated into `run_dir/data` when needed."""
    data = spec.data
    if data.manifest is not None:
        return Manifest.read(data.manifest)
    if data.phantom is not None:
        from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset

        manifest, _ = make_phantom_dataset(run_dir / "data", PhantomOptions(**data.phantom.model_dump()),
                                           progress=progress)
        return manifest
    if data.pocus is not None:
        from sonosynth.data.pocus import PocusIngestOptions, ingest_pocus

        manifest, _ = ingest_pocus(data.pocus.source, run_dir / "data", PocusIngestOptions(**data.pocus.options),
                                   progress=progress)
        return manifest
    from sonosynth.data.folder import FolderIngestOptions, ingest_folder

    manifest, _ = ingest_folder(data.folder.source, run_dir / "data", FolderIngestOptions(**data.folder.options),
                                progress=progress)
    return manifest


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


def count_units(spec: StudySpec, manifest: Manifest, folds: pd.DataFrame) -> int:
    """An upper bound on the units of work, for the progress bar's total and ETA."""
    total = 0
    for fold in _fold_list(spec):
        for keep in spec.split.keep:
            train = split_fold(manifest, folds, fold, keep).train
            for generator in spec.generators:
                classes = generator.classes or [spec.split.minority]
                groups = model_groups(select_generator_images(train, generator, classes), generator)
                total += 2 * len(groups) + (1 if spec.quality.enabled else 0)
            total += len(conditions(spec)) * len(spec.classifiers) * len(spec.seeds)
    return total


# ------------------------------------------------------------------------------------------ run
class StudyRunner:
    def __init__(self, spec: StudySpec, run_dir: str | os.PathLike, progress: bool = True,
                 on_unit: Callable[[str, bool], None] | None = None,
                 on_plan: Callable[[int], None] | None = None) -> None:
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.cache = UnitCache(self.run_dir / "cache")
        self.on_unit = on_unit or (lambda description, computed: None)
        self.on_plan = on_plan or (lambda total: None)

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
        if folds_path.is_file():
            if not same_assignment(read_folds(folds_path), folds):
                raise SonosynthError(
                    f"{folds_path} differs from the folds this spec gives (data or split changed); "
                    "use a new run folder so cached results are not mixed."
                )
        write_folds(folds, folds_path)
        return manifest, folds

    # -- generators
    def _fit(self, generator: GeneratorSpec, images: Manifest) -> Path:
        from sonosynth.config import load_config
        from sonosynth.generators.base import create_generator

        implementation = create_generator(generator.kind)
        config = load_config(implementation.config_type, implementation.presets, generator.preset, generator.overrides)
        payload = {"generator": generator.kind, "config": config.model_dump(mode="json"),
                   "images": self.cache.hasher.manifest(images)}

        def compute(folder: Path) -> None:
            implementation.fit(images, folder / "model", config, device=self.spec.device, resume=True,
                               progress=self.progress)

        before = self.cache.stats.computed
        folder = self.cache.run("fit", payload, compute)
        self.on_unit(f"fit {generator.name}", self.cache.stats.computed > before)
        return folder / "model"

    def _sample(self, generator: GeneratorSpec, checkpoint: Path, label: str) -> Manifest:
        from sonosynth.generators.base import create_generator

        implementation = create_generator(generator.kind)
        payload = {"checkpoint": str(checkpoint.parent.name), "n": generator.samples_per_model, "label": label,
                   "settings": generator.sample_settings}

        def compute(folder: Path) -> None:
            implementation.sample(checkpoint, generator.samples_per_model, folder / "samples", label=label, seed=0,
                                  device=self.spec.device, progress=False, **generator.sample_settings)

        before = self.cache.stats.computed
        folder = self.cache.run("sample", payload, compute)
        self.on_unit(f"sample {generator.name}", self.cache.stats.computed > before)
        return Manifest.read(folder / "samples")

    def synthetic_set(self, generator: GeneratorSpec, train: Manifest) -> Manifest:
        """All samples of one generator for one fold/keep: made only from that fold's training images."""
        classes = generator.classes or ([self.spec.split.minority] if self.spec.split.minority else train.classes)
        images = select_generator_images(train, generator, classes)
        sets = []
        for group in model_groups(images, generator):
            checkpoint = self._fit(generator, group)
            labels = group.classes
            for label in labels:
                sets.append(self._sample(generator, checkpoint, label))
        if not sets:
            raise SonosynthError(
                f"generator {generator.name}: no training images of {classes} on this fold's training side."
            )
        return concat(sets, self.run_dir)

    # -- classifiers
    def _classify(self, condition: Condition, classifier, seed: int, train: Manifest, validation: Manifest,
                  synthetic: Manifest | None) -> dict:
        from sonosynth.experiment.units import classify_unit

        payload = {
            "regime": condition.regime, "classifier": classifier.model_dump(mode="json"), "seed": seed,
            "train": self.cache.hasher.manifest(train), "validation": self.cache.hasher.manifest(validation),
            "synthetic": self.cache.hasher.manifest(synthetic) if synthetic is not None else None,
            "classes": train.classes,
        }

        def compute(folder: Path) -> None:
            classify_unit(condition.regime, classifier, seed, train, validation, synthetic, folder,
                          device=self.spec.device, progress=self.progress)

        before = self.cache.stats.computed
        folder = self.cache.run("classify", payload, compute)
        self.on_unit(f"classify {condition.label} {classifier.model}", self.cache.stats.computed > before)
        metrics = json.loads((folder / "metrics.json").read_text())
        confusion = pd.read_csv(folder / "confusion.csv", index_col=0)
        return {"metrics": metrics, "confusion": confusion}

    # -- quality
    def _quality(self, generator: GeneratorSpec, synthetic: Manifest, train: Manifest,
                 classifier_dir: Path | None) -> pd.DataFrame:
        from sonosynth.experiment.units import quality_unit

        payload = {"synthetic": self.cache.hasher.manifest(synthetic), "real": self.cache.hasher.manifest(train),
                   "quality": self.spec.quality.model_dump(mode="json"),
                   "classifier": str(classifier_dir.name) if classifier_dir else None}

        def compute(folder: Path) -> None:
            quality_unit(synthetic, train, self.spec.quality, classifier_dir, folder, device=self.spec.device)

        before = self.cache.stats.computed
        folder = self.cache.run("quality", payload, compute)
        self.on_unit(f"quality {generator.name}", self.cache.stats.computed > before)
        return pd.read_csv(folder / "quality.csv")

    # -- the grid
    def run(self) -> StudyResult:
        started = time.perf_counter()
        manifest, folds = self.prepare()
        self.on_plan(count_units(self.spec, manifest, folds))
        rows, confusion_rows, quality_rows, synthetic_sets = [], [], [], {}
        for fold in _fold_list(self.spec):
            for keep in self.spec.split.keep:
                data = split_fold(manifest, folds, fold, keep)
                synthetic = {g.name: self.synthetic_set(g, data.train) for g in self.spec.generators
                             if self._needs_synthetic()}
                for name, images in synthetic.items():
                    synthetic_sets[(fold, keep, name)] = images
                for condition in conditions(self.spec):
                    for classifier in self.spec.classifiers:
                        for seed in self.spec.seeds:
                            extra = synthetic.get(condition.generator) if condition.generator else None
                            outcome = self._classify(condition, classifier, seed, data.train, data.validation, extra)
                            rows.extend(_result_rows(fold, keep, condition, classifier.model, seed, outcome))
                            confusion_rows.extend(_confusion_rows(fold, keep, condition, classifier.model, seed,
                                                                  outcome["confusion"]))
                if self.spec.quality.enabled:
                    reference = self._reference_classifier(data.train, data.validation)
                    for generator in self.spec.generators:
                        if generator.name in synthetic:
                            table = self._quality(generator, synthetic[generator.name], data.train, reference)
                            quality_rows.append(table.assign(fold=fold, keep=keep, generator=generator.name))
        results = pd.DataFrame(rows)
        quality = pd.concat(quality_rows, ignore_index=True) if quality_rows else pd.DataFrame()
        _write_csv(results, self.run_dir / RESULTS_FILENAME)
        _write_csv(quality, self.run_dir / QUALITY_FILENAME)
        _write_csv(pd.DataFrame(confusion_rows), self.run_dir / CONFUSIONS_FILENAME)
        for (fold, keep, name), images in synthetic_sets.items():
            images.write(self.run_dir / "synthetic" / f"fold{fold}-keep{keep:g}-{name}" / "manifest.csv")
        index = [{"fold": f, "keep": k, "generator": g, "manifest": f"synthetic/fold{f}-keep{k:g}-{g}/manifest.csv"}
                 for (f, k, g) in synthetic_sets]
        _write_csv(pd.DataFrame(index, columns=["fold", "keep", "generator", "manifest"]),
                   self.run_dir / SYNTHETIC_INDEX_FILENAME)
        return StudyResult(self.run_dir, results, quality, self.cache.stats.hits, self.cache.stats.computed,
                           time.perf_counter() - started, synthetic_sets)

    def _needs_synthetic(self) -> bool:
        return any(r in SYNTHETIC_REGIMES for r in self.spec.regimes) or self.spec.quality.enabled

    def _reference_classifier(self, train: Manifest, validation: Manifest) -> Path | None:
        """The fold's real-only classifier, whose features the domain quality metrics use."""
        if self.spec.quality.features != "classifier":
            return None
        classifier = self.spec.classifiers[0]
        self._classify(Condition("real", None), classifier, self.spec.seeds[0], train, validation, None)
        payload = {
            "regime": "real", "classifier": classifier.model_dump(mode="json"), "seed": self.spec.seeds[0],
            "train": self.cache.hasher.manifest(train), "validation": self.cache.hasher.manifest(validation),
            "synthetic": None, "classes": train.classes,
        }
        return self.cache.unit_dir("classify", self.cache.key("classify", payload))


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
    import importlib.metadata as metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("sonosynth", "torch", "torchvision", "monai", "numpy", "scikit-learn", "pandas"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions
