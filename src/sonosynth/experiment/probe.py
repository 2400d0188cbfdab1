"""`sonosynth run SPEC --dry-run --probe`: does every network of the study start on this device?

For each generator of the spec: its real-size config trains two steps on a tiny slice of the
fold's training images and draws one batch with a few sampling steps; for each classifier: the
network is built at the spec's size and takes one training step (forward, backward, Adam) at the
config's batch size. Each probe row gives parameter counts, peak memory, the measured time, and an
estimate of that part of the full run on this device: measured seconds per step times the plan's
steps. Estimates include start-up cost (the probe's steps are its first ones), so they lean high.

Memory: on CUDA `torch.cuda.max_memory_allocated`; on the CPU the process's peak resident memory
during the probe (sampled from /proc), above what it held before. On the CPU a probe is also held to
a memory cap (RLIMIT_DATA, half the memory available when the probe starts, unless given): an
allocation beyond it fails, and the probe halves the batch and retries, down to 1, so a GPU-scale
config cannot swap this machine to a standstill; the row says which batch fitted. A CPU probe also
starts at batch CPU_PROBE_BATCH at most (time scaled to the config's batch, memory that of the
probed batch), so a GPU config is probed in minutes.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import pandas as pd

from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError
from sonosynth.experiment.plan import ResolvedClassifier, ResolvedGenerator

if TYPE_CHECKING:  # the dry run calls the probe; the probe only reads the dry run's fields
    from sonosynth.experiment.dry_run import DryRun

PROBE_TRAIN_STEPS = 1  # GPU-scale steps on a CPU take minutes; one is enough to start and to time
PROBE_SAMPLE_STEPS = 1
# On a CPU a GPU-scale batch takes minutes per step; the probe starts at this batch and scales its time
# to the config's batch (CPU time grows about linearly with the batch; memory is the capped batch's).
CPU_PROBE_BATCH = 8


@dataclass
class ProbeRow:
    unit: str  # "fit SinDDM", "sample SinDDM", "classify pocovidnet"
    trainable: int | None = None
    frozen: int | None = None
    batch: int | None = None  # the batch the probe ran at (halved from the config's on out-of-memory)
    peak_mb: float | None = None
    probe_seconds: float = 0.0
    estimate_seconds: float | None = None  # of this part of the full run on this device
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def count(n: int | None) -> str:
            return "" if n is None else f"{n:,}"

        return {"unit": self.unit, "trainable": count(self.trainable), "frozen": count(self.frozen),
                "batch": count(self.batch),
                "peak MB": None if self.peak_mb is None else round(self.peak_mb),
                "probe s": round(self.probe_seconds, 1),
                "full run (est.)": None if self.estimate_seconds is None else format_hours(self.estimate_seconds),
                "notes": "; ".join(self.notes)}


def format_hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# ------------------------------------------------------------------------------------ memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _proc_kib_field(path: str, key: str) -> int | None:
    """A `Key:  N kB` line of a /proc file, in bytes (None where /proc or the line is missing)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _data_bytes() -> int | None:
    return _proc_kib_field("/proc/self/status", "VmData")


def available_bytes() -> int | None:
    return _proc_kib_field("/proc/meminfo", "MemAvailable")


class PeakMemory:
    """Peak memory during a `with` block: CUDA's allocator peak, or the CPU process's resident peak above the start."""

    def __init__(self, device: Any) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            return self
        self._start = _rss_bytes()
        self._peak = self._start
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes())
        self.peak_mb = (self._peak - self._start) / 2**20


@contextlib.contextmanager
def memory_cap(limit_bytes: int | None) -> Iterator[None]:
    """Allocations beyond `limit_bytes` more than the process holds now fail (Linux RLIMIT_DATA) inside the block."""
    current = _data_bytes()
    if limit_bytes is None or current is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = current + limit_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "cannot allocate memory" in text)


def with_halving(run: Callable[[int], Any], batch: int, row: ProbeRow, device: Any,
                 cap: int | None) -> Any:
    """`run(batch)` under the memory cap; on out-of-memory the batch is halved (down to 1) and tried again."""
    import gc

    if getattr(device, "type", "cpu") == "cpu" and batch > CPU_PROBE_BATCH:
        row.notes.append(f"batch {batch} capped at {CPU_PROBE_BATCH} on the CPU")
        batch = CPU_PROBE_BATCH
    while True:
        try:
            with memory_cap(cap if getattr(device, "type", "cpu") == "cpu" else None):
                result = run(batch)
            row.batch = batch
            return result
        except Exception as exc:  # out-of-memory surfaces as RuntimeError, MemoryError or torch's OOM error
            if not is_out_of_memory(exc) and type(exc).__name__ != "OutOfMemoryError":
                raise
            gc.collect()
            if getattr(device, "type", "cpu") == "cuda":
                import torch

                torch.cuda.empty_cache()
            if batch <= 1:
                raise SonosynthError(f"{row.unit}: out of memory even at batch 1 on this device ({exc}).") from exc
            row.notes.append(f"batch {batch} out of memory")
            batch = max(1, batch // 2)


# ------------------------------------------------------------------------------------ helpers
def tiny_slice(images: Manifest, per_class: int = 2) -> Manifest:
    """The first `per_class` images of each class: enough for one step of anything."""
    table = images.table.reset_index(drop=True)
    keep = table.groupby("label", sort=True).head(per_class).index
    return images.where(table.index.isin(keep))


def count_parameters(module: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


def _set_batch(values: dict[str, Any], batch: int) -> dict[str, Any]:
    """Every `batch_size` field of a nested config set to `batch` (the generators name theirs so)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out[key] = _set_batch(value, batch)
        elif key == "batch_size" and isinstance(value, int):
            out[key] = min(value, batch)
        else:
            out[key] = value
    return out


def _batch_of(values: dict[str, Any]) -> int | None:
    found = [v for k, v in values.items() if k == "batch_size" and isinstance(v, int)]
    found += [b for v in values.values() if isinstance(v, dict) for b in [_batch_of(v)] if b is not None]
    return max(found) if found else None


def _short_schedule(config: Any, steps: int) -> Any:
    schedule = config.training_schedule()
    milestones = sorted({min(m, steps) for m in schedule.lr_milestones})
    short = schedule.model_copy(update={"steps": steps, "lr_milestones": milestones, "checkpoint_every": steps,
                                        "ema_start": None if schedule.ema_start is None else 0})
    updated = config.model_copy(update={"budget": None})
    return updated.with_training_schedule(short)


def _checkpoint_parameters(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
            total += math.prod(handle.get_slice(key).get_shape())
    return total


# ------------------------------------------------------------------------------------ generators
def probe_generator(dry: DryRun, generator: ResolvedGenerator, scratch: Path, device: Any,
                    cap: int | None) -> list[ProbeRow]:
    from sonosynth.generators.base import create_generator

    spec = generator.spec
    fits = [u for u in dry.plan.of_kind("fit") if u.description.split(" ")[1] == spec.name]
    samples = [u for u in dry.plan.of_kind("sample") if u.description.split(" ")[1] == spec.name]
    if not fits:
        return [ProbeRow(f"fit {spec.name}", notes=["no models in the plan"])]
    implementation = create_generator(spec.kind)
    images = tiny_slice(fits[0].args[2])
    full_steps = generator.config.training_schedule().steps
    base = generator.config.model_dump(mode="json")
    fit_row = ProbeRow(f"fit {spec.name}")
    out = scratch / spec.name

    def fit(batch: int) -> float:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        config = _short_schedule(type(generator.config).model_validate(_set_batch(base, batch)), PROBE_TRAIN_STEPS)
        started = time.perf_counter()
        with PeakMemory(device) as memory:
            implementation.fit(images, out / "model", config, device=str(device), resume=False, progress=False)
        fit_row.peak_mb = memory.peak_mb
        return time.perf_counter() - started

    full_batch = _batch_of(base)
    seconds = with_halving(fit, full_batch or 1, fit_row, device, cap)
    if full_batch is None:
        fit_row.batch = None
    fit_row.probe_seconds = seconds
    fit_row.trainable, fit_row.frozen = _checkpoint_parameters(out / "model"), 0
    fit_row.notes.append("parameters: the checkpoint's tensors (EMA copies included)")
    per_step = seconds / PROBE_TRAIN_STEPS
    scale = (full_batch / fit_row.batch) if full_batch and fit_row.batch else 1.0
    fit_row.estimate_seconds = per_step * scale * full_steps * len(fits)
    fit_row.notes.append(f"{len(fits)} model(s) x {full_steps} steps")
    if scale != 1.0:
        fit_row.notes.append(f"time scaled x{scale:g} to batch {full_batch}")

    sample_row = ProbeRow(f"sample {spec.name}")
    settings_type = getattr(getattr(implementation, "model_type", None), "settings_type", None)
    fields = getattr(settings_type, "model_fields", {})
    settings = dict(generator.sample_settings)
    sample_defaults = base.get("sample") if isinstance(base.get("sample"), dict) else {}
    full_sample_steps = settings.get("steps") or sample_defaults.get("steps")
    sampler = settings.get("sampler") or sample_defaults.get("sampler")
    if sampler == "ddpm":  # every training timestep; timed with DDIM steps (the same network call per step)
        full_sample_steps = (base.get("schedule") or {}).get("num_train_timesteps") or full_sample_steps
    total_images = sum(int(u.payload["n"]) for u in samples)
    sample_batch = int(settings.get("sample_batch_size") or base.get("sample_batch_size") or 1)
    few_steps = "steps" in fields and full_sample_steps
    if not few_steps:
        sample_batch = 1  # a whole sample (no step count to cut), so one image
    label = samples[0].args[3] if samples else images.classes[0]

    def sample(batch: int) -> float:
        import shutil

        target = out / f"samples-{batch}"
        shutil.rmtree(target, ignore_errors=True)
        call = {**settings, "sample_batch_size": batch}
        if few_steps:
            call["steps"] = PROBE_SAMPLE_STEPS
            if sampler == "ddpm":
                call["sampler"] = "ddim"
        started = time.perf_counter()
        with PeakMemory(device) as memory:
            implementation.sample(out / "model", batch, target, label=label, seed=0, device=str(device),
                                  progress=False, **call)
        sample_row.peak_mb = memory.peak_mb
        return time.perf_counter() - started

    seconds = with_halving(sample, sample_batch, sample_row, device, cap)
    sample_row.probe_seconds = seconds
    per_image = seconds / max(sample_row.batch or 1, 1)
    if few_steps:
        per_image *= full_sample_steps / PROBE_SAMPLE_STEPS
        sample_row.notes.append(f"{PROBE_SAMPLE_STEPS} of {full_sample_steps} sampling steps timed")
    sample_row.estimate_seconds = per_image * total_images
    sample_row.notes.append(f"{total_images} images")
    return [fit_row, sample_row]


# ------------------------------------------------------------------------------------ classifiers
def _stage_images(unit: Any, plan: Any) -> tuple[list[int], int]:
    """Images of each training stage of a classify unit, and of its early-stopping set."""
    from sonosynth.classify.regimes.plan import NEEDS_SYNTHETIC

    regime, train, stop = unit.args[0], unit.args[3], unit.args[7]
    stop_patients = set(stop.table["patient_id"])
    real = int((~train.table["patient_id"].isin(stop_patients)).sum())
    synthetic = sum(int(plan.unit(key).payload["n"]) for key in unit.depends_on) if regime in NEEDS_SYNTHETIC else 0
    stages = {"real": [real], "real+regular": [real], "synthetic-only": [synthetic],
              "pretrain-synthetic->finetune-real": [synthetic, real]}.get(regime, [real + synthetic])
    return stages, len(stop)


def build_for_probe(classifier: ResolvedClassifier, num_classes: int, row: ProbeRow) -> Any:
    """The classifier as the study builds it; with ImageNet weights unavailable, the same architecture unloaded."""
    from sonosynth.classify import build_classifier, create_classifier

    spec = classifier.spec
    config = classifier.configs[min(classifier.configs)]
    try:
        return create_classifier(spec.model, num_classes, in_channels=config.in_channels, pretrained=spec.pretrained,
                                 weights=spec.weights, image_size=config.image_size, **spec.options)
    except SonosynthError as exc:
        if spec.pretrained != "imagenet":
            raise
        row.notes.append("ImageNet weights not available here: counted on the architecture, weights random "
                         f"({str(exc).split(':', 2)[-1].strip()[:60]}...)")
        return build_classifier({"name": spec.model, "num_classes": num_classes, "in_channels": config.in_channels,
                                 "image_size": config.image_size, "input_mode": "imagenet", "options": spec.options})


def probe_classifier(dry: DryRun, classifier: ResolvedClassifier, device: Any, cap: int | None) -> ProbeRow:
    import torch
    from torch import nn

    from sonosynth.classify.augment import regular_augmentation
    from sonosynth.classify.data import ManifestDataset

    spec = classifier.spec
    config = classifier.configs[min(classifier.configs)]
    row = ProbeRow(f"classify {spec.model}")
    units = [u for u in dry.plan.of_kind("classify") if u.payload["model"] == spec.model
             and u.payload["config"]["image_size"] == config.image_size]
    classes = dry.manifest.classes
    model = build_for_probe(classifier, len(classes), row).to(device)
    row.trainable, row.frozen = count_parameters(model)
    pool = dry.manifest.table.reset_index(drop=True)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    criterion = nn.CrossEntropyLoss()
    augment = regular_augmentation(config.augmentation)

    def step(batch: int) -> float:
        rows = [i % len(pool) for i in range(batch)]
        data = ManifestDataset(dry.manifest.where(pool.index.isin(rows)), classes, config.image_size,
                               config.in_channels, augment=augment)
        items = [data[i % len(data)] for i in range(batch)]
        images = torch.stack([x for x, _ in items]).to(device)
        targets = torch.tensor([y for _, y in items], device=device)
        model.train()
        times = []
        with PeakMemory(device) as memory:
            for _ in range(2):  # the second step is timed apart from the first's one-off start-up
                started = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss = criterion(model(images).float(), targets)
                loss.backward()
                optimizer.step()
                times.append(time.perf_counter() - started)
                if times[0] > 20:
                    break
        row.peak_mb = memory.peak_mb
        return times[-1]

    started = time.perf_counter()
    per_step = with_halving(step, config.batch_size, row, device, cap)
    row.probe_seconds = time.perf_counter() - started
    scale = config.batch_size / row.batch
    if scale != 1.0:
        row.notes.append(f"time scaled x{scale:g} to batch {config.batch_size}")
    batches = 0.0
    for unit in units:
        stages, stop_images = _stage_images(unit, dry.plan)
        epochs = unit.payload["config"]["epochs"]
        # training batches plus one pass over the stopping set per epoch (forward only: about a third of a step)
        batches += sum(epochs * (math.ceil(n / config.batch_size) + math.ceil(stop_images / config.batch_size) / 3)
                       for n in stages)
    row.estimate_seconds = per_step * scale * batches
    row.notes.append(f"{len(units)} training(s), all epochs (early stopping may end sooner)")
    return row


def probe_study(dry: DryRun, device: str = "auto", memory_limit_mb: int | None = None,
                on_row: Callable[[ProbeRow], None] | None = None) -> pd.DataFrame:
    """Probe every generator and classifier of a dry run's plan on `device`; one row per probed part."""
    from sonosynth.device import resolve_device

    torch_device = resolve_device(device)
    cap = None
    if torch_device.type == "cpu":
        available = available_bytes()
        cap = memory_limit_mb * 2**20 if memory_limit_mb else (available // 2 if available else None)
    rows: list[ProbeRow] = []
    with tempfile.TemporaryDirectory(prefix="sonosynth-probe-") as scratch:
        seen = set()
        for classifier in dry.study.classifiers:  # first: quick, and their counts are what a reader checks
            if classifier.spec.model in seen:
                continue
            seen.add(classifier.spec.model)
            row = probe_classifier(dry, classifier, torch_device, cap)
            rows.append(row)
            if on_row:
                on_row(row)
        for generator in dry.study.generators:
            for row in probe_generator(dry, generator, Path(scratch), torch_device, cap):
                rows.append(row)
                if on_row:
                    on_row(row)
    table = pd.DataFrame([r.as_dict() for r in rows])
    total = sum(r.estimate_seconds or 0 for r in rows)
    table.attrs["total_seconds"] = total
    table.attrs["cap_mb"] = None if cap is None else cap / 2**20
    return table
