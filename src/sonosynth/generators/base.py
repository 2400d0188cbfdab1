"""The contract every generator honours: its config base, its checkpoint folder, resume, and sampling.

A generator is registered under a name and has a config type (a `GeneratorConfig`), a settings
type for sampling (a `SampleSettings`), a trained-model type (a `PretrainedGenerator`) and two
operations:

    fit(training: Manifest, out: Path, config) -> Path           # a checkpoint folder
    sample(checkpoint: Path, n, out: Path, ...) -> Manifest      # a SyntheticSet

**The checkpoint folder** is the same for every generator (diffusers' `save_pretrained` layout):

    generator.json              kind, resolved config, training images (relative to this folder, with
                                their SHA-1), step, budget record, code version, generator details
    model.safetensors           the weights sampling needs (metadata: the step they belong to)
    training_state.safetensors  everything a resumed fit needs (model, optimizer, EMA, RNG, logs):
                                tensors in safetensors, the rest as JSON in its metadata (no pickles)

`PretrainedGenerator.from_pretrained(folder)` loads any of them (dispatching on `kind`), and a
checkpoint folder can be moved or copied anywhere: nothing in it refers to the working directory.
A fit writes the training state first, then the weights, then `generator.json` (each atomically):
`generator.json` is the commit, and a folder caught mid-write is detected (weights of another step)
and repaired by re-running the same fit.

**Resume** is the same everywhere: `fit` continues the run in `out` by default (and says "resuming
from step N"); a changed config field that is not in the config's `resumable_fields` is an error
naming the field, its old and new value and the fix; other training images are an error;
`resume=False` on a folder that holds a checkpoint refuses (nothing is ever deleted).

**`n`** is the total number of images one `sample` call writes. A class-conditional generator
writes `n` images of the asked `label` (with no label, `n` dealt round-robin over its classes); a
fit holding several models (SinGAN, one per image) deals the `n` round-robin over its models.
Image i has seed `seed + i` and depends on its seed alone, and re-running a call skips images
already written, so an interrupted generation continues and never writes more than asked.

A SyntheticSet is a Manifest whose rows are `origin=synthetic`, with the generator, checkpoint,
per-image seed, sampling settings and parents (the training images) recorded for provenance; a
model trained on many images may record its training manifest (a CSV) as the single parent.

**Adding a generator** (tests/generators/test_contract.py adds a toy one in about 40 lines):
a config class deriving from `GeneratorConfig` (with `training_schedule`/`with_training_schedule`
to support budgets), a presets file `sonosynth/presets/<name>.yaml`, a `PretrainedGenerator`
subclass (`_from_weights`, `weights`, `draw`; `sample_groups`/`recorded_settings` when the defaults
do not fit), a `BaseGenerator` subclass registered with `@register_generator(name)` whose `fit` calls
`start_fit` and then `commit_checkpoint` at each checkpoint, its package in `BUILTIN_GENERATORS`, and
a smoke setting in the contract test. The CLI (`train`/`generate NAME`) and study specs pick it up.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sonosynth import __version__
from sonosynth.atomic import write_text_atomic
from sonosynth.config import StrictModel
from sonosynth.data.images import UnreadableImage, load_grayscale, save_png
from sonosynth.data.manifest import MANIFEST_FILENAME, Manifest, encode_parents
from sonosynth.errors import InputDataError, SonosynthError
from sonosynth.generators.budget import BudgetRecord, Schedule, parse_duration
from sonosynth.registry import Registry

log = logging.getLogger(__name__)

RECORD_NAME = "generator.json"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "training_state.safetensors"
RECORD_FORMAT = 1


# ------------------------------------------------------------------------------ config
class GeneratorConfig(StrictModel):
    """Fields every generator config has; each generator's config derives from this.

    `resumable_fields` names the fields (dotted for nested ones, a prefix covers its children) that
    may differ between a checkpoint and a resumed fit: they change how long or how often, or only
    rounding, never what the model learns so far.
    """

    seed: int = Field(0, description="seed of initialisation and of every training draw")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast precision, resolved per device by sonosynth.device.resolve_precision: "
        "'auto' = bf16 where the hardware has fast bf16, else fp32; fp16 only on GPUs")
    sample_batch_size: int = Field(16, ge=1, description="images generated together when sampling")
    budget: str | None = Field(None, description="train for this wall time instead of the preset's step count "
                               "(e.g. 20m, 90s, 1h30m): a probe measures steps/s and the schedule is fitted")
    checkpoint_interval: str = Field("5m", description="also checkpoint whenever this much wall time passed "
                                     "since the last checkpoint, so an interrupted long run loses little")

    resumable_fields: ClassVar[frozenset[str]] = frozenset({"precision", "sample_batch_size", "checkpoint_interval"})

    @field_validator("budget", "checkpoint_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value is None:
            return None
        parse_duration(value)  # raises ValueError with the reason
        return str(value)

    @property
    def budget_seconds(self) -> float | None:
        return None if self.budget is None else parse_duration(self.budget)

    @property
    def checkpoint_seconds(self) -> float:
        return parse_duration(self.checkpoint_interval)

    # A generator maps its step-count fields to and from the shared Schedule (for budgets).
    def training_schedule(self) -> Schedule:
        raise NotImplementedError(f"{type(self).__name__} does not support a training budget.")

    def with_training_schedule(self, schedule: Schedule) -> GeneratorConfig:
        raise NotImplementedError(f"{type(self).__name__} does not support a training budget.")


class SampleSettings(StrictModel):
    """Per-call sampling settings; None means the checkpoint config's value. Each generator extends it."""

    sample_batch_size: int | None = Field(None, ge=1, description="images generated together")


def config_changes(saved: dict[str, Any], current: dict[str, Any], resumable: Iterable[str]) -> list[tuple[str, Any, Any]]:
    """(field, saved, current) for every differing field not covered by `resumable` (dotted paths)."""
    allowed = set(resumable)
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    changed = []
    for key in sorted(flat_saved.keys() | flat_current.keys()):
        old, new = flat_saved.get(key, "<absent>"), flat_current.get(key, "<absent>")
        if old == new:
            continue
        parts = key.split(".")
        if any(".".join(parts[:i]) in allowed for i in range(1, len(parts) + 1)):
            continue
        changed.append((key, old, new))
    return changed


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# ------------------------------------------------------------------------------ generator.json
class TrainingImageRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str  # relative to the checkpoint folder (POSIX separators)
    label: str
    sha1: str


class CheckpointRecord(BaseModel):
    """The contents of generator.json."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = RECORD_FORMAT
    kind: str
    code_version: str = __version__
    config: dict[str, Any]  # the resolved config that trained (with a budget's fitted schedule applied)
    budget: BudgetRecord | None = None
    training_images: list[TrainingImageRecord]
    step: int = 0  # optimizer steps done (SinGAN: iterations over all scales and models)
    complete: bool = False
    weights_step: int | None = None  # the step model.safetensors was written at (a fit may checkpoint without it)
    details: dict[str, Any] = {}  # generator-specific facts sampling needs (pyramid sizes, classes, ...)

    def image_paths(self, folder: str | os.PathLike) -> list[Path]:
        """The training images as absolute paths (resolved against the checkpoint folder)."""
        return [Path(os.path.normpath(Path(folder).absolute() / image.path)) for image in self.training_images]


def training_image_records(training: Manifest, folder: str | os.PathLike) -> list[TrainingImageRecord]:
    from sonosynth.hashing import file_sha1

    folder = Path(folder).absolute()
    return [TrainingImageRecord(path=Path(os.path.relpath(path.absolute(), folder)).as_posix(), label=label,
                                sha1=file_sha1(path))
            for path, label in zip(training.absolute_paths(), training.labels, strict=True)]


def read_record(folder: str | os.PathLike) -> CheckpointRecord | None:
    """generator.json of `folder`, or None when the folder holds no checkpoint."""
    folder = Path(folder)
    path = folder / RECORD_NAME
    if not path.is_file():
        if folder.is_dir() and (any(folder.glob("*.pt")) or (folder / "singan.json").is_file()):
            raise SonosynthError(f"{folder}: a checkpoint in the old pickle format (before generator.json); it is "
                                 "no longer opened because pickles can run code. Train it again into a new folder.")
        return None
    try:
        return CheckpointRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise SonosynthError(f"{path}: not a readable generator record ({exc}); re-run the fit into a new "
                             "folder.") from exc


def write_record(folder: str | os.PathLike, record: CheckpointRecord) -> None:
    write_text_atomic(Path(folder) / RECORD_NAME, record.model_dump_json(indent=2) + "\n")


def checkpoint_folder(checkpoint: str | os.PathLike) -> Path:
    """A checkpoint folder, or a file inside one (generator.json, model.safetensors) -> the folder."""
    path = Path(checkpoint)
    return path.parent if path.is_file() else path


# ------------------------------------------------------------------------------ fit: resume rules
@dataclass(frozen=True)
class FitStart:
    """What a fit starts from: its effective config and the checkpoint it continues (None: a new fit)."""

    config: Any  # the GeneratorConfig to train with (a budget's schedule applied)
    record: CheckpointRecord | None
    budget: BudgetRecord | None
    images: list[TrainingImageRecord]

    @property
    def step(self) -> int:
        return self.record.step if self.record is not None else 0


def start_fit(kind: str, kinds: Iterable[str], training: Manifest, out: str | os.PathLike, config: GeneratorConfig,
              resume: bool, probe: Callable[[GeneratorConfig], float] | None = None) -> FitStart:
    """Apply the shared resume rules and the budget; every generator's fit calls this first.

    `probe(config)` returns the generator's steps/s on this device (only called for a new budget fit).
    """
    out = Path(out)
    if len(training) == 0:
        raise SonosynthError("no training images: the manifest given to fit() is empty.")
    images = training_image_records(training, out)
    record = read_record(out)
    budget = None
    if record is None:
        if config.budget is not None:
            budget = fit_budget(config, probe)
            config = config.with_training_schedule(budget.fitted)
        return FitStart(config, None, budget, images)
    where = f"{out} holds a {record.kind} checkpoint at step {record.step}"
    if not resume:
        raise SonosynthError(f"{where}; resume=False (--no-resume) refuses to overwrite it and nothing was "
                             "deleted. Resume it (the default), or choose another --out.")
    if record.kind not in set(kinds):
        raise SonosynthError(f"{where}, not a {kind} checkpoint; choose another --out.")
    if [(i.sha1, i.label) for i in record.training_images] != [(i.sha1, i.label) for i in images]:
        raise SonosynthError(f"{where} trained on other images; train into a new --out folder for these.")
    saved_budget = record.budget.budget if record.budget else None
    if saved_budget != config.budget:
        raise SonosynthError(f"{where}; cannot resume with budget {config.budget!r} (it trained with "
                             f"{saved_budget!r}). Use budget {saved_budget!r}, or another --out for a new run.")
    if record.budget is not None:
        config = config.with_training_schedule(record.budget.fitted)  # the recorded schedule: resume is exact
    changed = config_changes(record.config, config.model_dump(mode="json"), type(config).resumable_fields)
    if changed:
        details = ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changed)
        raise SonosynthError(f"{where}; cannot resume with a different config ({details}). Only "
                             f"{sorted(type(config).resumable_fields)} may change on resume: set the changed "
                             "field(s) back to the checkpoint's value(s), or train into another --out.")
    record = _store_settings_of_finished_fit(out, record, config)
    if record.step:
        log.info("%s: resuming from step %d", out, record.step)
    return FitStart(config, record, record.budget, images)


def _store_settings_of_finished_fit(out: Path, record: CheckpointRecord, config: GeneratorConfig) -> CheckpointRecord:
    """A finished fit resumed with new resumable settings (sampling defaults, batch sizes) and the same schedule
    has nothing left to train, so no checkpoint would be written and the new settings would be silently lost:
    store them in generator.json now (the weights and training state are untouched)."""
    current = config.model_dump(mode="json")
    if not record.complete or current == record.config:
        return record
    if type(config).model_validate(record.config).training_schedule() != config.training_schedule():
        return record  # more to train: the next checkpoint stores the new settings with the new weights
    changed = config_changes(record.config, current, ())
    updated = record.model_copy(update={"config": current})
    write_record(out, updated)
    log.info("%s: finished fit, nothing to train; stored the new settings %s", out,
             ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changed))
    return updated


def _release_probe_memory() -> None:
    """Free the probe's networks and optimizer before the real fit builds its own: they sit in reference
    cycles (modules, optimizer, EMA), so without a collection both copies would be held at once."""
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fit_budget(config: GeneratorConfig, probe: Callable[[GeneratorConfig], float] | None) -> BudgetRecord:
    """Probe the step rate and fit the preset's schedule to the budget (budget.py has the rule)."""
    from sonosynth.generators.budget import fit_schedule

    if probe is None:
        raise SonosynthError(f"{type(config).__name__}: this generator cannot train for a budget; give a step count.")
    seconds = config.budget_seconds
    assert seconds is not None
    preset = config.training_schedule()
    rate = probe(config)
    _release_probe_memory()
    fitted = fit_schedule(seconds, rate, preset)
    log.info("budget %s: %.3g steps/s measured, %d steps (preset %d)", config.budget, rate, fitted.steps, preset.steps)
    return BudgetRecord(budget=str(config.budget), seconds=seconds, steps_per_second=rate, preset=preset,
                        fitted=fitted)


class CheckpointClock:
    """When to checkpoint: every `every` steps, at the last step, and whenever `seconds` of wall time passed."""

    def __init__(self, every: int, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.seconds, self.clock = every, seconds, clock
        self.last = clock()

    def due(self, step: int, last_step: int) -> bool:
        if step % self.every == 0 or step == last_step or self.clock() - self.last >= self.seconds:
            self.last = self.clock()
            return True
        return False


def commit_checkpoint(folder: str | os.PathLike, record: CheckpointRecord, weights: dict[str, Any] | None,
                      state: dict[str, Any] | None) -> None:
    """Write training state, weights, then generator.json (the commit), each atomically."""
    from sonosynth.checkpoint import save_checkpoint, save_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if state is not None:
        save_checkpoint(folder / STATE_NAME, {"kind": record.kind, "step": record.step, **state})
    if weights is not None:
        record = record.model_copy(update={"weights_step": record.step})
        save_weights(folder / WEIGHTS_NAME, weights, {"kind": record.kind, "step": str(record.step)})
    write_record(folder, record)


def load_checkpoint_weights(folder: str | os.PathLike, record: CheckpointRecord) -> dict[str, Any]:
    """model.safetensors of a checkpoint folder, checked against its generator.json."""
    from sonosynth.checkpoint import load_weights

    tensors, metadata = load_weights(Path(folder) / WEIGHTS_NAME)
    expected = record.weights_step if record.weights_step is not None else record.step
    if metadata.get("step") != str(expected):
        raise SonosynthError(f"{folder}: the weights (step {metadata.get('step')}) and generator.json (step "
                             f"{expected}) disagree: the fit was interrupted while saving. Re-run the same train "
                             "command to finish it.")
    return tensors


def load_training_state(folder: str | os.PathLike, record: CheckpointRecord, device: Any = "cpu") -> dict[str, Any]:
    from sonosynth.checkpoint import load_checkpoint

    path = Path(folder) / STATE_NAME
    if not path.is_file():
        raise SonosynthError(f"{folder}: generator.json is there but {STATE_NAME} is missing, so the fit cannot "
                             "resume; train into a new folder.")
    state = load_checkpoint(path, map_location=device)
    if state.get("kind") != record.kind or int(state.get("step", -1)) < record.step:
        raise SonosynthError(f"{path}: training state of step {state.get('step')} does not match generator.json "
                             f"(step {record.step}); train into a new folder.")
    return state


# ------------------------------------------------------------------------------ trained models
@dataclass(frozen=True)
class SampleGroup:
    """Images that share a model, a label and parents within one sample call."""

    name: str  # file-name part and patient id of its images (the checkpoint folder's or model's name)
    label: str
    parents: list[Path]
    seeds: list[int]
    member: Any = None  # the generator's handle on the model (a SinGAN model index, a class index)


class PretrainedGenerator:
    """A trained generator loaded for sampling. Subclasses implement `_from_weights`, `weights`,
    `sample_groups`, `draw` and `recorded_settings`; the folder layout is common (see the module doc)."""

    kind: ClassVar[str]
    config_type: ClassVar[type[GeneratorConfig]]
    settings_type: ClassVar[type[SampleSettings]] = SampleSettings

    def __init__(self, folder: Path, record: CheckpointRecord, config: GeneratorConfig) -> None:
        self.folder = Path(folder)
        self.record = record
        self.config = config

    @property
    def step(self) -> int:
        return self.record.step

    @property
    def training_images(self) -> list[Path]:
        return self.record.image_paths(self.folder)

    @classmethod
    def from_pretrained(cls, checkpoint: str | os.PathLike, device: str = "auto") -> PretrainedGenerator:
        """Load the checkpoint folder (any generator's, when called on this base class)."""
        from sonosynth.device import resolve_device

        folder = checkpoint_folder(checkpoint)
        record = read_record(folder)
        if record is None:
            raise SonosynthError(f"{checkpoint}: no generator checkpoint here (no {RECORD_NAME}); pass the --out "
                                 "folder of `sonosynth train`.")
        model_type = create_generator(record.kind).model_type if cls is PretrainedGenerator else cls
        if record.kind not in _kinds_of(model_type):
            raise SonosynthError(f"{folder}: a {record.kind} checkpoint, not a {cls.kind} one.")
        tensors = load_checkpoint_weights(folder, record)
        try:
            config = model_type.config_type.model_validate(record.config)
        except ValidationError as exc:
            raise SonosynthError(f"{folder / RECORD_NAME}: its config does not validate ({exc}).") from exc
        return model_type._from_weights(folder, record, config, tensors, resolve_device(device))

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write generator.json and model.safetensors into `folder` (training images re-anchored there)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        images = [image.model_copy(update={"path": Path(os.path.relpath(path, folder.absolute())).as_posix()})
                  for image, path in zip(self.record.training_images, self.training_images, strict=True)]
        record = self.record.model_copy(update={"training_images": images})
        commit_checkpoint(folder, record, self.weights(), None)
        return folder

    # ---------------------------------------------------------------- what a generator implements
    @classmethod
    def _from_weights(cls, folder: Path, record: CheckpointRecord, config: Any, tensors: dict[str, Any],
                      device: Any) -> PretrainedGenerator:
        raise NotImplementedError

    def weights(self) -> dict[str, Any]:
        raise NotImplementedError

    def sample_groups(self, n: int, label: str | None, seed: int) -> list[SampleGroup]:
        """Default: one model, one label; image i has seed `seed + i`."""
        own = self.record.training_images[0].label if self.record.training_images else "unlabelled"
        return [SampleGroup(self.folder.name, label or own, self.training_images, list(range(seed, seed + n)))]

    def draw(self, group: SampleGroup, seeds: list[int], size: tuple[int, int] | None,
             settings: SampleSettings) -> np.ndarray:
        """uint8 images (len(seeds), H, W) or (len(seeds), H, W, C) for the seeds."""
        raise NotImplementedError

    def recorded_settings(self, size: tuple[int, int] | None, settings: SampleSettings) -> dict[str, Any]:
        """What goes into each synthetic row's `settings` (everything besides the seed that shapes an image)."""
        return {"size": list(size) if size else None}


def _kinds_of(model_type: type[PretrainedGenerator]) -> set[str]:
    return {name for name in _GENERATORS.names()
            if getattr(_GENERATORS.get(name)(), "model_type", None) is model_type}


# ------------------------------------------------------------------------------ the registry
class Generator(Protocol):
    """What the runner and the CLI need from a generator."""

    name: ClassVar[str]
    config_type: ClassVar[type[BaseModel]]
    presets: ClassVar[str]  # the presets file name in sonosynth/presets/ (without .yaml)

    def fit(self, training: Manifest, out: Path, config: BaseModel, *, device: str = "auto",
            resume: bool = True, progress: bool = True) -> Path: ...

    def sample(self, checkpoint: Path, n: int, out: Path, *, label: str | None = None,
               size: tuple[int, int] | None = None, seed: int = 0, device: str = "auto",
               progress: bool = True, **settings: Any) -> Manifest: ...


class BaseGenerator:
    """Shared `sample` for generators with a `model_type`: settings validated once, then the shared loop."""

    name: ClassVar[str]
    config_type: ClassVar[type[GeneratorConfig]]
    model_type: ClassVar[type[PretrainedGenerator]]
    presets: ClassVar[str]

    def load(self, checkpoint: str | os.PathLike, device: str = "auto") -> PretrainedGenerator:
        return self.model_type.from_pretrained(checkpoint, device)

    def sample(self, checkpoint: Path, n: int, out: Path, *, label: str | None = None,
               size: tuple[int, int] | None = None, seed: int = 0, device: str = "auto",
               progress: bool = True, **settings: Any) -> Manifest:
        parsed = parse_settings(self.model_type.settings_type, settings, self.name)
        if n < 0:
            raise SonosynthError(f"cannot sample {n} images.")
        model = self.load(checkpoint, device)
        return write_synthetic_set(model, self.name, n, out, label=label, size=size, seed=seed, settings=parsed,
                                   progress=progress)


def parse_settings(settings_type: type[SampleSettings], values: dict[str, Any], name: str) -> SampleSettings:
    try:
        return settings_type.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise SonosynthError(f"{name} sampling settings: {problems} (known: {sorted(settings_type.model_fields)}).") \
            from exc


BUILTIN_GENERATORS = ("sonosynth.generators.sinddm", "sonosynth.generators.singan", "sonosynth.generators.guided")
_GENERATORS: Registry[type] = Registry("generator", BUILTIN_GENERATORS)


def register_generator(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        _GENERATORS.add(name, cls)
        return cls

    return decorate


def generator_names() -> list[str]:
    return _GENERATORS.names()


def create_generator(name: str) -> Any:
    return _GENERATORS.get(name)()


# ------------------------------------------------------------------------------ training input
def load_training_image(path: str | os.PathLike, channels: int = 1) -> np.ndarray:
    """(H, W) uint8 for grayscale, (H, W, 3) for RGB; a clear error naming the file otherwise."""
    try:
        if channels == 1:
            return load_grayscale(path)
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnreadableImage, OSError) as exc:
        raise InputDataError(f"{path}: cannot be read as a training image ({exc}); fix or remove its manifest "
                             "row, or pass PNG/JPEG files.") from exc


def load_training_images(training: Manifest, channels: int = 1) -> list[np.ndarray]:
    if len(training) == 0:
        raise SonosynthError("no training images: the manifest given to fit() is empty.")
    return [load_training_image(path, channels) for path in training.absolute_paths()]


def single_label(training: Manifest, generator: str) -> str:
    labels = sorted(set(training.labels))
    if len(labels) > 1:
        raise SonosynthError(f"{generator} trains on images of one class; the manifest mixes {labels}. "
                             "Select one label first (Manifest.with_labels, or --label).")
    return labels[0]


def manifest_from_images(paths: Iterable[str | os.PathLike], label: str = "unlabelled") -> Manifest:
    """A manifest for loose image files given on the command line (each its own patient)."""
    rows = []
    paths = [Path(p).resolve() for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SonosynthError(f"image file(s) not found: {', '.join(missing)}.")
    root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path.cwd()
    for path in paths:
        rows.append({"path": os.path.relpath(path, root), "label": label, "patient_id": f"file-{path.stem}",
                     "source": path.name, "frame_index": 0})
    return Manifest.from_rows(rows, root)


def training_manifest(inputs: list[Path], label: str | None = None) -> Manifest:
    """CLI helper: one manifest (csv or folder) or image files -> the training Manifest."""
    if len(inputs) == 1 and (inputs[0].is_dir() or inputs[0].suffix.lower() == ".csv"):
        manifest = Manifest.read(inputs[0])
        return manifest.with_labels([label]) if label else manifest
    return manifest_from_images(inputs, label=label or "unlabelled")


# ------------------------------------------------------------------------------ synthetic output
class SyntheticSetWriter:
    """Writes samples of one checkpoint into `out/` with provenance rows; resumable by seed.

    Re-running with the same seeds skips images already on disk, so an interrupted generation
    continues where it stopped and never writes more than asked. `source` and `checkpoint` hold
    the checkpoint folder relative to `out` (rebased with the manifest when it is written elsewhere).
    """

    def __init__(self, out: str | os.PathLike, generator: str, checkpoint: str | os.PathLike,
                 parents: Iterable[str | os.PathLike], settings: dict[str, Any], label: str,
                 patient_id: str | None = None, name: str | None = None) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.generator = generator
        self.checkpoint = Path(checkpoint)
        self.name = name or self.checkpoint.name
        self.parents = [Path(p) for p in parents]
        self.settings = json.dumps(settings, sort_keys=True)
        self.label = label
        # Synthetic images inherit no patient; they are grouped by the model they came from.
        self.patient_id = patient_id or f"synthetic-{generator}-{self.name}"
        self.rows = self._existing_rows()

    def _existing_rows(self) -> dict[str, dict]:
        path = self.out / MANIFEST_FILENAME
        if not path.is_file():
            return {}
        existing = Manifest.read(path, check_files=False)
        rows = {}
        for record in existing.table.astype(object).where(existing.table.notna(), None).to_dict("records"):
            if (self.out / record["path"]).is_file():
                rows[record["path"]] = record
        return rows

    def clashing_settings(self) -> dict[str, Any] | None:
        """Settings of rows already in `out` from this generator and label that differ from this writer's."""
        for row in self.rows.values():
            if (row["generator"] == self.generator and row["label"] == self.label
                    and row["settings"] != self.settings):
                return json.loads(row["settings"])
        return None

    def image_path(self, seed: int) -> str:
        return f"images/{self.label}/{self.generator}_{self.name}_s{seed:07d}.png"

    def missing_seeds(self, seeds: Iterable[int]) -> list[int]:
        return [s for s in seeds if self.image_path(s) not in self.rows]

    def add(self, seed: int, image: np.ndarray) -> None:
        relative = self.image_path(seed)
        save_png(self.out / relative, image)
        checkpoint = os.path.relpath(self.checkpoint.absolute(), self.out.absolute())
        self.rows[relative] = {
            "path": relative, "label": self.label, "patient_id": self.patient_id,
            "source": checkpoint, "frame_index": 0, "origin": "synthetic",
            "license": None, "generator": self.generator, "checkpoint": checkpoint,
            "seed": seed, "parents": encode_parents(self.parents, self.out), "settings": self.settings,
        }

    def flush(self) -> Manifest:
        """Write the manifest (atomically); call after every batch so a crash loses at most one batch."""
        manifest = Manifest.from_rows(list(self.rows.values()), self.out)
        manifest.write()
        return manifest


def write_synthetic_set(model: PretrainedGenerator, generator: str, n: int, out: str | os.PathLike, *,
                        label: str | None, size: tuple[int, int] | None, seed: int, settings: SampleSettings,
                        progress: bool) -> Manifest:
    """The one sampling loop: `model.sample_groups` says which seeds go where, `model.draw` makes the images."""
    from sonosynth.progress import track

    out = Path(out)
    size = (int(size[0]), int(size[1])) if size is not None else None
    record = model.recorded_settings(size, settings)
    batch = settings.sample_batch_size or model.config.sample_batch_size
    groups = model.sample_groups(n, label, seed)

    def open_writer(group: SampleGroup) -> SyntheticSetWriter:
        # Opened one group at a time, after the previous group's flush, so each sees all rows on disk.
        writer = SyntheticSetWriter(out, generator, model.folder, group.parents, record, group.label, name=group.name)
        clash = writer.clashing_settings()
        if clash is not None:
            raise SonosynthError(f"{out} already holds {group.label!r} images sampled with other settings ({clash}); "
                                 "use another --out for these settings.")
        return writer

    jobs: list[tuple[SampleGroup, list[int]]] = []
    for group in groups:
        missing = open_writer(group).missing_seeds(group.seeds)
        jobs.extend((group, missing[i:i + batch]) for i in range(0, len(missing), batch))
    todo = sum(len(seeds) for _, seeds in jobs)
    writer: SyntheticSetWriter | None = None
    current: SampleGroup | None = None
    for group, seeds in track(jobs, f"sampling {todo} images", enabled=progress and bool(jobs)):
        if group is not current:
            writer, current = open_writer(group), group
        images = model.draw(group, seeds, size, settings)
        try:
            for image_seed, image in zip(seeds, images, strict=True):
                writer.add(image_seed, np.ascontiguousarray(image))
            writer.flush()
        except OSError as exc:
            raise SonosynthError(f"{out}: could not write samples ({exc}); images already written are kept. "
                                 "Free disk space and re-run the same command to continue.") from exc
    if not (out / MANIFEST_FILENAME).is_file():
        return open_writer(groups[0]).flush() if groups else Manifest.from_rows([], out)
    return Manifest.read(out / MANIFEST_FILENAME, check_files=False)


def round_robin(n: int, count: int, seed: int) -> list[list[int]]:
    """Seeds `seed..seed+n-1` dealt over `count` models or classes: item i goes to i mod count."""
    return [[seed + i for i in range(n) if i % count == m] for m in range(count)]


def to_uint8(images: Any) -> np.ndarray:
    """Model output in [-1, 1] (N, C, H, W) to (N, H, W) or (N, H, W, C) uint8."""
    array = np.clip((np.asarray(images, dtype=np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    return array[:, 0] if array.shape[1] == 1 else array.transpose(0, 2, 3, 1)


__all__ = [
    "BaseGenerator", "CheckpointClock", "CheckpointRecord", "FitStart", "Generator", "GeneratorConfig",
    "PretrainedGenerator", "SampleGroup", "SampleSettings", "SyntheticSetWriter", "TrainingImageRecord",
    "commit_checkpoint", "config_changes", "create_generator", "generator_names", "load_training_image",
    "load_training_images", "load_training_state", "manifest_from_images", "read_record", "register_generator",
    "round_robin", "single_label", "start_fit", "to_uint8", "training_manifest", "write_synthetic_set",
]
