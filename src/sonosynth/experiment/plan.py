"""The study plan: every unit of work of a study, built once from the spec before anything runs.

Two steps, both before any fit:

1. `resolve_study(spec)` resolves and validates every configuration the spec names: each
   generator's preset plus `overrides` into its typed config, its `sample_settings`, and each
   classifier's training config per seed. A typo fails here, naming the field
   (`generators[1].overrides.dim: Extra inputs are not permitted`).
2. `build_plan(study, manifest, folds)` walks folds x keep fractions x generators x regimes x
   classifiers x seeds into a `StudyPlan`: the unique `Unit`s in dependency order (all fits, then
   all samples, then all classifier runs, then the study's one domain feature network when
   `quality.features` is `domain`, then all quality units), plus the index the results collector
   needs to turn unit outputs into the study's tables.

A unit's `key` covers everything its outputs depend on: its kind and code version, its resolved
config, the *content* of its real input images, and the keys of the upstream units it reads. A unit
reads upstream outputs from the upstream units' cache folders (`Upstream` arguments are resolved to
those folders when the unit runs), so the whole plan can be built here and shipped to worker
processes or a Ray cluster as it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ValidationError

from sonosynth.classify.training import ClassifierTrainConfig
from sonosynth.config import format_validation_error
from sonosynth.data.images import IMAGE_SUFFIXES
from sonosynth.data.manifest import Manifest
from sonosynth.data.split import FoldData, split_fold
from sonosynth.errors import SonosynthError
from sonosynth.experiment import image_choice, outputs, units
from sonosynth.experiment.hashes import FileHasher
from sonosynth.experiment.spec import SYNTHETIC_REGIMES, GeneratorSpec, StudyClassifierSpec, StudySpec
from sonosynth.hashing import file_sha1

# Bump a kind's version when its unit function computes something different from the same inputs,
# so caches made by the older code are not reused for the newer.
CODE_VERSIONS: dict[str, int] = {"fit": 1, "sample": 1, "classify": 1, "features": 1, "quality": 1}
# The plan's order of kinds (each kind reads only kinds before it); status, dry run and report list them so.
UNIT_KINDS: tuple[str, ...] = ("fit", "sample", "classify", "features", "quality")
# Round r of a generator's sampling draws with seed (r - 1) * this: far apart, so rounds never share a draw.
SAMPLE_ROUND_SEED_STEP = 1_000_003


# ------------------------------------------------------------------------------- resolved configs
@dataclass(frozen=True)
class ResolvedGenerator:
    spec: GeneratorSpec
    config: BaseModel  # the generator's typed config: preset + overrides, validated
    sample_settings: dict[str, Any]  # as the spec gives them; validated by the generator's settings type if it has one
    code_version: str  # the generator's own version when it declares one


@dataclass(frozen=True)
class ResolvedClassifier:
    spec: StudyClassifierSpec
    configs: dict[int, BaseModel]  # the training config per seed
    pretrained: str  # identity of the starting weights: none | imagenet | a file with its content hash
    weights: str | None


@dataclass(frozen=True)
class ResolvedStudy:
    """The spec with every configuration resolved: nothing downstream parses a preset again."""

    spec: StudySpec
    generators: tuple[ResolvedGenerator, ...]
    classifiers: tuple[ResolvedClassifier, ...]
    domain: BaseModel | None = None  # the domain feature network's training config (quality.features: domain)
    quality: BaseModel | None = None  # the quality metrics' settings (quality.preset + overrides), if enabled

    def generator(self, name: str) -> ResolvedGenerator:
        """The generator of a name or of one of its arms (`Guided-2rounds`)."""
        return next(g for g in self.generators if name in (g.spec.name, *(arm for arm, _ in g.spec.arms())))

    def base_generator(self, name: str) -> str:
        return self.generator(name).spec.name


def _file_identity(source: str | Path | None) -> str | None:
    """A weights source for a cache key: a file by its content (a retrained file at the same path must not
    reuse results), anything else (none, imagenet) by name."""
    if source is None:
        return None
    if str(source) in ("none", "imagenet") or not Path(source).is_file():
        return str(source)
    return f"{source}#sha1={file_sha1(source)}"


def _resolve(model: type[BaseModel], component: str, preset: str, overrides: dict[str, Any], where: str,
             fields: tuple[str, str] = ("preset", "overrides")) -> Any:
    """`preset` + `overrides` validated as `model`; an error names the spec field (`generators[1].overrides.dim`).

    `fields` names the spec's preset and overrides fields under `where` (`quality.domain_overrides`).
    """
    from sonosynth.config import deep_merge, preset_values

    preset_field, overrides_field = fields
    try:
        values = preset_values(component, preset)
    except SonosynthError as exc:
        raise SonosynthError(f"invalid spec: {where}.{preset_field}: {exc}") from exc
    try:
        return model.model_validate(deep_merge(values, overrides))
    except ValidationError as exc:
        # A field the overrides set is named there; anything else comes from the preset itself.
        problems = [(e["loc"][0] in overrides if e["loc"] else False) for e in exc.errors()]
        prefix = f"{where}.{overrides_field}" if any(problems) else f"{where}.{preset_field} {preset!r}"
        raise SonosynthError(f"invalid spec: {format_validation_error(exc, prefix)}") from exc


def resolve_generator(index: int, generator: GeneratorSpec) -> ResolvedGenerator:
    from sonosynth.generators.base import create_generator, generator_names

    where = f"generators[{index}]"
    if generator.kind not in generator_names():
        raise SonosynthError(f"invalid spec: {where}.kind: unknown generator {generator.kind!r}; "
                             f"available: {', '.join(generator_names())}.")
    implementation = create_generator(generator.kind)
    if generator.gpus > 1 and not getattr(implementation, "distributed_fit", False):
        raise SonosynthError(f"invalid spec: {where}.gpus: {generator.kind} trains in one process; only "
                             f"{', '.join(n for n in generator_names() if getattr(create_generator(n), 'distributed_fit', False)) or 'none'} "
                             "can train one model on several GPUs. Set gpus: 1.")
    config = _resolve(implementation.config_type, implementation.presets, generator.preset, generator.overrides, where)
    settings = dict(generator.sample_settings)
    # A generator with a typed sampling-settings model (`model_type.settings_type`) has them checked here,
    # before any fit; the generator's `sample` parses the same dict again when it runs.
    settings_type = getattr(getattr(implementation, "model_type", None), "settings_type", None)
    if settings_type is not None:
        try:
            settings_type.model_validate(settings)
        except ValidationError as exc:
            raise SonosynthError(
                f"invalid spec: {format_validation_error(exc, f'{where}.sample_settings')}") from exc
    return ResolvedGenerator(generator, config, settings, str(getattr(implementation, "code_version", "")))


def resolve_classifier(index: int, classifier: StudyClassifierSpec, seeds: list[int]) -> ResolvedClassifier:
    from sonosynth.classify import classifier_names
    from sonosynth.classify.training import ClassifierTrainConfig

    where = f"classifiers[{index}]"
    if classifier.model not in classifier_names():
        raise SonosynthError(f"invalid spec: {where}.model: unknown classifier {classifier.model!r}; "
                             f"available: {', '.join(classifier_names())}.")
    configs = {seed: _resolve(ClassifierTrainConfig, "classifier", classifier.preset, {**classifier.overrides, "seed": seed},
                              where)
               for seed in seeds}
    check_architecture(where, classifier, configs[seeds[0]])
    return ResolvedClassifier(classifier, configs, _file_identity(classifier.pretrained),
                              _file_identity(classifier.weights))


def check_architecture(where: str, classifier: StudyClassifierSpec, config: BaseModel) -> None:
    """Build the classifier on the meta device (no memory, no weights): a bad option or size fails here."""
    import torch

    from sonosynth.classify import build_classifier

    input_mode = "native" if classifier.pretrained == "none" else "imagenet"
    arch = {"name": classifier.model, "num_classes": 2, "in_channels": config.in_channels,
            "image_size": config.image_size, "input_mode": input_mode, "options": classifier.options}
    try:
        try:
            with torch.device("meta"):
                build_classifier(arch)
        except NotImplementedError:  # a builder that reads tensor values: build it for real
            build_classifier(arch)
    except TypeError as exc:  # an option the builder does not take
        raise SonosynthError(f"invalid spec: {where}.options: {exc}") from exc
    except SonosynthError as exc:
        raise SonosynthError(f"invalid spec: {where}: {exc}") from exc


AUGMENTING_REGIMES = ("real+regular", "real+synthetic+regular")


def check_settings_take_effect(spec: StudySpec, classifiers: tuple[ResolvedClassifier, ...]) -> None:
    """A spec setting that nothing in the study would use is an error, not a silent no-op."""
    for index, classifier in enumerate(classifiers):
        config = classifier.configs[spec.seeds[0]]
        if "augmentation" in classifier.spec.overrides and not config.augment_real \
                and not any(r in AUGMENTING_REGIMES for r in spec.regimes):
            raise SonosynthError(
                f"invalid spec: classifiers[{index}].overrides.augmentation: no regime of this spec augments "
                f"({', '.join(spec.regimes)}), so the setting would have no effect; set augment_real: true to "
                f"augment the real images in every regime (the fetal study), or add {' / '.join(AUGMENTING_REGIMES)}.")


def resolve_domain(spec: StudySpec) -> BaseModel | None:
    """The domain feature network's training config: `quality.domain_preset` + `domain_overrides`, validated.

    None unless the study computes quality metrics in the domain space. The seed is the preset's (0 in
    every shipped preset), never the study's `seeds`: the feature space stays one fixed network.
    """
    from sonosynth.classify.training import ClassifierTrainConfig

    quality = spec.quality
    if not (quality.enabled and quality.features == "domain"):
        return None
    config = _resolve(ClassifierTrainConfig, "classifier", quality.domain_preset, quality.domain_overrides,
                      "quality", ("domain_preset", "domain_overrides"))
    if config.stop_fraction <= 0:
        raise SonosynthError("invalid spec: quality.domain_overrides.stop_fraction: the domain network keeps the "
                             "epoch of lowest loss on held-out patients; give a fraction above 0 (e.g. 0.2).")
    return config


def resolve_quality(spec: StudySpec) -> BaseModel | None:
    """The quality metrics' settings: `quality.preset` + `overrides` + the spec's threshold and reader switch."""
    from sonosynth.metrics.quality.config import QualityConfig

    quality = spec.quality
    if not quality.enabled:
        return None
    overrides = {**quality.overrides, "threshold": quality.threshold, "reader_enabled": quality.reader}
    return _resolve(QualityConfig, "quality", quality.preset, overrides, "quality")


def resolve_study(spec: StudySpec) -> ResolvedStudy:
    """Resolve and validate every configuration of `spec`; errors name the spec field."""
    classifiers = tuple(resolve_classifier(i, c, spec.seeds) for i, c in enumerate(spec.classifiers))
    check_settings_take_effect(spec, classifiers)
    return ResolvedStudy(spec, tuple(resolve_generator(i, g) for i, g in enumerate(spec.generators)), classifiers,
                         resolve_domain(spec), resolve_quality(spec))


# ------------------------------------------------------------------------------------ the units
@dataclass(frozen=True)
class Resources:
    """What one unit needs from the machine it runs on (a Ray task's resource request)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int | None = None


@dataclass(frozen=True)
class Upstream:
    """An argument that is a path inside an upstream unit's cache folder, resolved when the unit runs."""

    kind: str
    key: str
    path: str = ""

    def resolve(self, cache_root: Path) -> Path:
        folder = Path(cache_root) / self.kind / self.key
        return folder / self.path if self.path else folder


@dataclass(frozen=True)
class RunFolderPath:
    """An argument that is the run folder (the cache root's parent, see `layout.py`), resolved at run time."""


RUN_FOLDER = RunFolderPath()


@dataclass(frozen=True)
class Unit:
    """One unit of work: `function(*args, folder)` writes its outputs into `cache_root/kind/key`."""

    kind: str  # fit | sample | classify | features | quality
    key: str
    description: str
    function: Callable[..., None]  # module-level, so a worker process or Ray task can import it
    args: tuple  # `Upstream` entries (also inside tuples) become upstream folders at run time
    payload: dict[str, Any]  # what the key covers, written to the unit folder as unit.json
    depends_on: tuple[str, ...] = ()
    resources: Resources = Resources()

    def folder(self, cache_root: str | Path) -> Path:
        return Path(cache_root) / self.kind / self.key

    def resolved_args(self, cache_root: str | Path) -> tuple:
        def resolve(value: Any) -> Any:
            if isinstance(value, Upstream):
                return value.resolve(Path(cache_root))
            if isinstance(value, RunFolderPath):
                return Path(cache_root).parent
            if isinstance(value, tuple):
                return tuple(resolve(v) for v in value)
            return value

        return tuple(resolve(arg) for arg in self.args)

    def check_outputs(self, folder: Path) -> None:
        """Raise `outputs.DamagedOutput` when a finished unit's files are missing or unreadable."""
        outputs.check(self.kind, folder)


def _stable_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def unit_key(kind: str, payload: dict[str, Any]) -> str:
    return hashlib.sha256(_stable_json({"kind": kind, **payload}).encode()).hexdigest()[:20]


def _unit(kind: str, payload: dict[str, Any], function: Callable[..., None], args: tuple, description: str,
          depends_on: tuple[str, ...] = (), resources: Resources = Resources()) -> Unit:
    payload = {"version": CODE_VERSIONS[kind], **payload}
    return Unit(kind, unit_key(kind, payload), description, function, args, payload, depends_on, resources)


def unit_resources(device: str, gpus: int = 1) -> Resources:
    """What a unit asks a Ray cluster for: a GPU (or `gpus` of one node, one CPU per process) unless the spec
    runs on the CPU. The Ray executor drops GPU asks on a cluster without GPUs."""
    if device == "cpu":
        return Resources(cpus=float(gpus), gpus=0.0)
    return Resources(cpus=float(gpus), gpus=float(gpus))


def regime_unit(regime: str, model: str, config: ClassifierTrainConfig, fold: FoldData, synthetic: Manifest | None,
                stop: Manifest | None, pretrained: str = "none", weights: Path | None = None,
                device: str = "auto", progress: bool = True) -> Unit:
    """One classifier run on explicit manifests as a unit (the `classify` command runs it in its --out folder)."""
    hasher = FileHasher()
    payload = {
        "regime": regime, "model": model, "config": config.unit_fields(),
        "pretrained": _file_identity(pretrained), "weights": _file_identity(weights),
        "train": hasher.manifest(fold.train), "validation": hasher.manifest(fold.validation),
        "synthetic": hasher.manifest(synthetic) if synthetic is not None else None,
        "stop": hasher.manifest(stop) if stop is not None else None,
    }
    return _unit("classify", payload, units.regime_unit,
                 (regime, model, config, fold.train, fold.validation, synthetic, stop, pretrained, weights, device,
                  progress), f"classify {regime} {model}")


# ------------------------------------------------------------------------------------- the plan
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
            result.extend(Condition(regime, arm) for g in spec.generators for arm, _ in g.arms())
        else:
            result.append(Condition(regime, None))
    return result


@dataclass(frozen=True)
class ClassifierRun:
    """A classify unit's place in the results table."""

    fold: int
    keep: float
    condition: Condition
    classifier: str
    seed: int
    key: str


@dataclass(frozen=True)
class QualityRun:
    fold: int
    keep: float
    generator: str
    key: str


@dataclass(frozen=True)
class StudyPlan:
    """The study's unique units in dependency order, and where each result lands in the tables."""

    units: tuple[Unit, ...]
    classifier_runs: tuple[ClassifierRun, ...] = ()
    quality_runs: tuple[QualityRun, ...] = ()
    # (fold, keep, generator) -> the sample units whose outputs make that SyntheticSet, in order
    synthetic_sets: dict[tuple[int, float, str], tuple[str, ...]] = field(default_factory=dict)
    # (fold, keep) -> the early-stopping (model-selection) patients every classifier run of that cell shares
    stopping_sets: dict[tuple[int, float], Manifest] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units)

    def unit(self, key: str) -> Unit:
        return self._by_key[key]

    @property
    def _by_key(self) -> dict[str, Unit]:
        return {unit.key: unit for unit in self.units}

    def of_kind(self, kind: str) -> list[Unit]:
        return [unit for unit in self.units if unit.kind == kind]


def fold_list(spec: StudySpec) -> list[int]:
    if spec.split.scheme == "dataset":  # fold 0 is the dataset's test set; fold 1 only ever trains
        if spec.split.run_folds not in (None, [0]):
            raise SonosynthError("split.run_folds: with scheme dataset the only evaluated fold is 0 (the test set).")
        return [0]
    folds = spec.split.run_folds if spec.split.run_folds is not None else list(range(spec.split.folds))
    bad = [f for f in folds if not 0 <= f < spec.split.folds]
    if bad:
        raise SonosynthError(f"split.run_folds {bad} outside 0..{spec.split.folds - 1}.")
    return folds


def generator_classes(generator: GeneratorSpec, train: Manifest, minority: str | None) -> list[str]:
    if generator.classes == "all":
        return train.classes
    if generator.classes:
        return list(generator.classes)
    if minority is None:
        raise SonosynthError(f"generator {generator.name}: set its `classes` or the split's `minority`.")
    return [minority]


def is_still(manifest: Manifest) -> pd.Series:
    """Per row: whether its source is a still image (not a frame of a video)."""
    return manifest.table["source"].fillna("").str.lower().str.endswith(IMAGE_SUFFIXES)


def middle_frame_per_source(manifest: Manifest) -> Manifest:
    """One row per source (clip or still): its middle frame, so consecutive near-duplicates count once."""
    table = manifest.table
    ordered = table.reset_index().sort_values(["source", "frame_index", "path"])
    picks = ordered.groupby("source", sort=True, dropna=False)["index"].apply(lambda ix: ix.iloc[len(ix) // 2])
    return manifest.where(table.index.isin(picks.to_numpy()))


def select_generator_images(train: Manifest, generator: GeneratorSpec, classes: list[str]) -> Manifest:
    """The training images a generator learns from, all from the fold's training side."""
    subset = train.with_labels(classes)
    if generator.training_images == "stills":
        # The lung study trained SinDDM on still images only, not on frames of videos.
        return subset.where(is_still(subset))
    if generator.training_images == "one_per_source":
        return middle_frame_per_source(subset)
    return subset


def model_groups(images: Manifest, generator: GeneratorSpec) -> list[Manifest]:
    """How the generator's training images are split into models."""
    if len(images) == 0:
        return []
    if generator.max_models or generator.max_images_per_model:
        images = image_choice.choose(images, generator.image_choice)
    if generator.models == "per_image":
        groups = [images.where(images.table.index == i) for i in range(len(images))]
    elif generator.models == "per_class":
        groups = [images.with_labels([label]) for label in images.classes]
    else:
        groups = [images]
    if generator.max_images_per_model:
        groups = [group.where([i < generator.max_images_per_model for i in range(len(group))]) for group in groups]
    return groups[: generator.max_models] if generator.max_models else groups


def stopping_side(study: ResolvedStudy, train: Manifest) -> Manifest:
    """The fold's early-stopping patients, shared by every condition so model selection is identical.

    Carved once per fold and fraction (with the first classifier's settings and seed) and passed to
    every classifier run; the generators never see these patients, so no synthetic image is derived
    from an image that early stopping looks at.
    """
    from sonosynth.classify.training import carve_stopping_set

    config = study.classifiers[0].configs[study.spec.seeds[0]]
    return carve_stopping_set(train, config.stop_fraction, config.seed)[1]


def split_stopping_set(spec: StudySpec, train: Manifest) -> Manifest:
    """`split.stopping`: its fraction of the training patients of its classes, seeded by the split's seed."""
    from sonosynth.classify.training import carve_stopping_set

    stopping = spec.split.stopping
    classes = train.classes if stopping.classes == "all" else [c for c in stopping.classes if c in train.classes]
    return carve_stopping_set(train.with_labels(classes), stopping.fraction, spec.split.seed)[1]


def generator_side(train: Manifest, stop: Manifest) -> Manifest:
    return train.where(~train.table["patient_id"].isin(set(stop.table["patient_id"])))


def needs_generators(spec: StudySpec) -> bool:
    return any(r in SYNTHETIC_REGIMES for r in spec.regimes) or spec.quality.enabled


class _PlanBuilder:
    """Collects units, keeping the first of identical ones (a model on an image two fractions share)."""

    def __init__(self, study: ResolvedStudy) -> None:
        self.study = study
        self.spec = study.spec
        self.hasher = FileHasher()
        self.units: dict[str, Unit] = {}

    def add(self, unit: Unit) -> Unit:
        return self.units.setdefault(unit.key, unit)

    def fit(self, generator: ResolvedGenerator, images: Manifest, where: str = "") -> Unit:
        spec = generator.spec
        payload = {"generator": spec.kind, "generator_version": generator.code_version,
                   "config": generator.config.model_dump(mode="json"), "images": self.hasher.manifest(images)}
        function, args = units.fit_unit, (spec.kind, generator.config, images, self.spec.device, False)
        if spec.gpus > 1:
            from sonosynth.experiment import multi_gpu

            # The processes share out each batch, so the world size changes the model: it is part of the key.
            payload["processes"] = spec.gpus
            function, args = multi_gpu.distributed_fit_unit, (*args[:4], spec.gpus, False)
        return self.add(_unit("fit", payload, function, args, f"fit {spec.name} {where}".strip(),
                              resources=unit_resources(self.spec.device, spec.gpus)))

    def sample(self, generator: ResolvedGenerator, fit: Unit, label: str, n: int, round_: int | None = None) -> Unit:
        spec = generator.spec
        payload = {"fit": fit.key, "n": n, "label": label, "settings": generator.sample_settings}
        seed = 0
        if round_ is not None:  # only specs with rounds carry one, so other specs keep their cache keys
            payload["round"] = round_
            seed = SAMPLE_ROUND_SEED_STEP * (round_ - 1)
        where = fit.description.split(" ", 2)[2] if fit.description.count(" ") >= 2 else ""
        shown = f" round {round_}" if round_ is not None else ""
        return self.add(_unit("sample", payload, units.sample_unit,
                              (spec.kind, Upstream("fit", fit.key, "model"), n, label, generator.sample_settings,
                               self.spec.device, seed), f"sample {spec.name} {where} {label}{shown}".replace("  ", " "),
                              (fit.key,), unit_resources(self.spec.device)))

    def classify(self, condition: Condition, classifier: ResolvedClassifier, seed: int, data: FoldData,
                 synthetic: tuple[Unit, ...] | None, stop: Manifest, where: str = "") -> Unit:
        config = classifier.configs[seed]
        payload = {
            "regime": condition.regime, "model": classifier.spec.model, "config": config.unit_fields(),
            "pretrained": classifier.pretrained, "weights": classifier.weights,
            **({"options": classifier.spec.options} if classifier.spec.options else {}),
            "train": self.hasher.manifest(data.train), "validation": self.hasher.manifest(data.validation),
            "synthetic": [u.key for u in synthetic] if synthetic is not None else None,
            "stop": self.hasher.manifest(stop),
        }
        sample_outputs = tuple(Upstream("sample", u.key, "samples") for u in synthetic) if synthetic else None
        return self.add(_unit(
            "classify", payload, units.classify_unit,
            (condition.regime, classifier.spec, config, data.train, data.validation, sample_outputs, RUN_FOLDER,
             stop, self.spec.device, False),
            f"classify {condition.label} {classifier.spec.model} {where} seed {seed}".replace("  ", " "),
            tuple(u.key for u in synthetic or ()), unit_resources(self.spec.device)))

    def features(self, manifest: Manifest) -> Unit:
        """The study's one domain feature network, on every real image of the study (see classify/domain.py).

        Its key covers the network, its training config and the content of those images, so the same
        data and settings reuse it, and a new image or setting retrains it (and so every quality unit).
        """
        from sonosynth.classify.domain import DOMAIN_MODEL

        real = manifest.where(manifest.table["origin"] == "real")
        payload = {"model": DOMAIN_MODEL, "config": self.study.domain.model_dump(mode="json"),
                   "images": self.hasher.manifest(real)}
        return self.add(_unit("features", payload, units.features_unit,
                              (self.study.domain, real, self.spec.device, False),
                              f"features {DOMAIN_MODEL} on all {len(real)} real images",
                              resources=unit_resources(self.spec.device)))

    def quality(self, generator: str, synthetic: tuple[Unit, ...], data: FoldData, reference: Unit | None,
                where: str = "") -> Unit:
        """One synthetic set's quality unit; `reference` is the unit whose model.pt gives the feature space:
        the study's `features` unit (features=domain) or the fold's real-only classify unit (classifier)."""
        quality = self.spec.quality
        # The domain network's settings are covered by its unit's key (in `reference`), not repeated here,
        # so quality units of the other feature spaces keep the keys they had before those settings existed.
        payload = {"synthetic": [u.key for u in synthetic], "real": self.hasher.manifest(data.train),
                   "held_out": self.hasher.manifest(data.validation),
                   # Empty overrides are left out, so specs without them keep the keys they had before it existed.
                   "quality": quality.model_dump(mode="json", exclude={"domain_preset", "domain_overrides"}
                                                 | (set() if quality.overrides else {"overrides"})),
                   # The resolved settings, so a changed preset file recomputes (the spec names only the preset).
                   "settings": self.study.quality.model_dump(mode="json"),
                   "inception_weights": _file_identity(quality.inception_weights),
                   "reference": reference.key if reference else None}
        depends = tuple(u.key for u in synthetic) + ((reference.key,) if reference else ())
        return self.add(_unit(
            "quality", payload, units.quality_unit,
            (tuple(Upstream("sample", u.key, "samples") for u in synthetic), RUN_FOLDER, data.train, quality,
             self.study.quality, Upstream(reference.kind, reference.key) if reference else None, self.spec.device,
             data.validation),
            f"quality {generator} {where}".strip(), depends, unit_resources(self.spec.device)))


def _where(fold: int, keep: float, generator: GeneratorSpec, number: int, models: int) -> str:
    """Where a generator model sits in the study, for its unit's description (logs, status, TensorBoard)."""
    what = {"per_image": "image", "per_class": "class"}.get(generator.models, "model")
    return f"fold {fold} keep {keep:g} {what} {number}/{models}"


def build_plan(study: ResolvedStudy, manifest: Manifest, folds: pd.DataFrame) -> StudyPlan:
    """Every unit of the study on `manifest` split by `folds`, in dependency order."""
    spec = study.spec
    builder = _PlanBuilder(study)
    if spec.split.stopping is None:
        cells = [(fold, keep, split_fold(manifest, folds, fold, keep))
                 for fold in fold_list(spec) for keep in spec.split.keep]
        stops = {(fold, keep): stopping_side(study, data.train) for fold, keep, data in cells}
    else:
        # The stopping set first, from the whole training side; then the minority cut among the others.
        fold_stops = {fold: split_stopping_set(spec, split_fold(manifest, folds, fold, 1.0).train)
                      for fold in fold_list(spec)}
        cells = [(fold, keep, split_fold(manifest, folds, fold, keep, set(fold_stops[fold].table["patient_id"])))
                 for fold in fold_list(spec) for keep in spec.split.keep]
        stops = {(fold, keep): fold_stops[fold] for fold, keep, _ in cells}

    # Fits: every generator model of every cell (nested fractions share models: identical units are one).
    fits: dict[tuple[int, float, str], list[tuple[Unit, Manifest]]] = {}
    for fold, keep, data in cells:
        fit_side = generator_side(data.train, stops[(fold, keep)])
        for generator in study.generators if needs_generators(spec) else ():
            classes = generator_classes(generator.spec, fit_side, spec.split.minority)
            models = model_groups(select_generator_images(fit_side, generator.spec, classes), generator.spec)
            if not models:
                raise SonosynthError(
                    f"generator {generator.spec.name}: fold {fold} at keep {keep:g} has no training images of "
                    f"{classes} ({generator.spec.training_images}); lower max constraints or use training_images: all."
                )
            fits[(fold, keep, generator.spec.name)] = [
                (builder.fit(generator, group, _where(fold, keep, generator.spec, number, len(models))), group)
                for number, group in enumerate(models, start=1)]

    # Samples: of every model, per class it learned.
    # With `rounds`, each arm's set is the samples of rounds 1..k.
    samples: dict[tuple[int, float, str], tuple[Unit, ...]] = {}
    for (fold, keep, name), pairs in fits.items():
        generator = study.generator(name)
        n_base = generator.spec.samples_per_model
        for arm, rounds in generator.spec.arms():
            samples[(fold, keep, arm)] = tuple(
                builder.sample(generator, fit, label,
                               n_base * (len(group) if generator.spec.samples_per_training_image else 1),
                               None if generator.spec.rounds is None else round_)
                for round_ in range(1, rounds + 1) for fit, group in pairs for label in group.classes
            )

    # Classifier runs: every condition x classifier x seed on the real validation fold.
    runs: list[ClassifierRun] = []
    references: dict[tuple[int, float], Unit] = {}
    for fold, keep, data in cells:
        stop = stops[(fold, keep)]
        for condition in conditions(spec):
            extra = samples.get((fold, keep, condition.generator)) if condition.generator else None
            for classifier in study.classifiers:
                for seed in spec.seeds:
                    unit = builder.classify(condition, classifier, seed, data, extra, stop, f"fold {fold} keep {keep:g}")
                    runs.append(ClassifierRun(fold, keep, condition, classifier.spec.model, seed, unit.key))
    for fold, keep, data in cells:
        if spec.quality.enabled and spec.quality.features == "classifier":
            # The fold's real-only classifier gives the domain features for SIFID/FID/KID.
            references[(fold, keep)] = builder.classify(Condition("real", None), study.classifiers[0],
                                                        spec.seeds[0], data, None, stops[(fold, keep)],
                                                        f"fold {fold} keep {keep:g}")

    # Quality: image quality and memorization of each synthetic set.
    quality_runs: list[QualityRun] = []
    domain: Unit | None = None
    if spec.quality.enabled:
        for fold, keep, data in cells:
            for arm, _ in (arm for generator in spec.generators for arm in generator.arms()):
                if (fold, keep, arm) in samples:
                    reference = references.get((fold, keep))
                    if spec.quality.features == "domain":
                        # One network for the whole study, trained on all its real images (planned once, when
                        # there is a synthetic set to compare): every quality row is in the same space.
                        domain = domain or builder.features(manifest)
                        reference = domain
                    unit = builder.quality(arm, samples[(fold, keep, arm)], data, reference,
                                           f"fold {fold} keep {keep:g}")
                    quality_runs.append(QualityRun(fold, keep, arm, unit.key))

    order = {kind: i for i, kind in enumerate(UNIT_KINDS)}
    ordered = sorted(builder.units.values(), key=lambda unit: order[unit.kind])  # stable: keeps plan order per kind
    return StudyPlan(tuple(ordered), tuple(runs), tuple(quality_runs),
                     {cell: tuple(u.key for u in units_) for cell, units_ in samples.items()}, stops)
