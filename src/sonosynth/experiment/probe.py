"""`sonosynth run SPEC --dry-run --probe`: does every network of the study start on this device?

For each generator of the spec: its real-size config trains on a tiny slice of the fold's training
images for a one-second budget (the generator's own step-rate probe times a step after two warm-up
steps, then one step is trained and checkpointed) and draws one batch with one sampling step; for
each classifier: the network is built at the spec's size and takes training steps (forward,
backward, Adam) at the config's batch size. Each probe row gives parameter counts, peak memory, the measured time, and an
estimate of that part of the full run on this device: measured seconds per step times the plan's
steps (classifier steps are timed after one warm-up step; a sampling step is its first, so sampling
estimates lean high).

Memory: on CUDA `torch.cuda.max_memory_allocated`. On the CPU each probed part (a classifier step, a
generator's fit, its sampling) runs alone in a fresh process, and its peak is that process's peak
resident memory (VmHWM, reset when the part starts): what a worker running that unit needs, the
Python/torch start-up included (the row's notes give that baseline). Measured inside one long-lived
process instead, memory freed by an earlier part is reused by the next and its peak reads low.
On the CPU a part is also held to a memory cap (RLIMIT_DATA, CPU_MEMORY_SHARE of the memory available
when the probe starts, unless given): an allocation beyond it fails, and the probe halves the batch and
retries, down to 1, so a GPU-scale config cannot swap this machine to a standstill; the row says
which batch fitted. A CPU probe also starts at batch CPU_PROBE_BATCH at most (time scaled to the
config's batch, memory that of the probed batch), so a GPU config is probed in minutes.

Parameter counts are the trained network's own: a generator's checkpoint tensors without its EMA
copy (the EMA is the same network averaged), a classifier's parameters split into trainable and frozen.
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

# Sampling steps of the probe's timed sample calls: one call of this many steps and one of twice as many,
# after a warm-up call; their difference is the cost of the steps alone (see `sample_estimate`).
PROBE_SAMPLE_STEPS = 2
# On a CPU a GPU-scale batch takes minutes per step; the probe starts at this batch and scales its time
# to the config's batch (CPU time grows about linearly with the batch; memory is the capped batch's).
CPU_PROBE_BATCH = 8
# Share of the memory available at the start that a CPU probe part may take: each part is alone in its
# own process, so most of the machine is safe to use, with headroom for the system and the parent.
CPU_MEMORY_SHARE = 0.75


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


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current resident size (Linux: `5` to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _proc_kib_field("/proc/self/status", "VmHWM") is not None


class PeakMemory:
    """Peak memory during a `with` block: CUDA's allocator peak, or the CPU process's peak resident size.

    On the CPU `peak_mb` is the whole process's peak (VmHWM after a reset at the start, or /proc
    sampled every 10 ms where the reset is unavailable) and `base_mb` what it held at the start.
    """

    def __init__(self, device: Any) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.peak_mb = 0.0
        self.base_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            return self
        self.base_mb = _rss_bytes() / 2**20
        self._peak = _rss_bytes()
        if not _reset_peak_rss():
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
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        else:
            peak = _proc_kib_field("/proc/self/status", "VmHWM") or _rss_bytes()
        self.peak_mb = peak / 2**20


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_isolated(device: Any, function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` in a fresh process on the CPU (so its peak memory is its own), in this one on CUDA."""
    if getattr(device, "type", str(device)) != "cpu":
        return function(*args)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_set_threads, initargs=(torch.get_num_threads(),)) as pool:
        return pool.submit(function, *args).result()


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


def _capped(cap: int | None, function: Callable[..., Any], *args: Any) -> Any:
    with memory_cap(cap):
        return function(*args)


def with_halving(function: Callable[..., Any], args: tuple, batch: int, row: ProbeRow, device: Any,
                 cap: int | None) -> Any:
    """`function(*args, batch)`, halving the batch on out-of-memory (down to 1) and trying again.

    On the CPU every attempt runs in a fresh process under the memory cap (`run_isolated`), so a
    failed attempt's memory neither lingers into the next nor inflates its peak; on CUDA here.
    """
    import gc
    from concurrent.futures.process import BrokenProcessPool

    cpu = getattr(device, "type", "cpu") == "cpu"
    if cpu and batch > CPU_PROBE_BATCH:
        row.notes.append(f"batch {batch} capped at {CPU_PROBE_BATCH} on the CPU")
        batch = CPU_PROBE_BATCH
    while True:
        try:
            result = (run_isolated(device, _capped, cap, function, *args, batch) if cpu
                      else function(*args, batch))
            row.batch = batch
            return result
        except Exception as exc:  # out-of-memory surfaces as RuntimeError, MemoryError or torch's OOM error
            killed = isinstance(exc, BrokenProcessPool)  # the kernel's OOM killer ended the attempt's process
            if not (killed or is_out_of_memory(exc) or type(exc).__name__ == "OutOfMemoryError"):
                raise
            gc.collect()
            if not cpu:
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


def _step_batch(values: dict[str, Any]) -> int | None:
    """The batch that sets a training step's time: the denoiser's `train.batch_size` where a config has one
    (the guided model's noisy classifier trains beside it at its own, often larger, batch), else the largest."""
    train = values.get("train")
    if isinstance(train, dict) and isinstance(train.get("batch_size"), int):
        return train["batch_size"]
    return _batch_of(values)


def _checkpoint_parameters(folder: Path) -> int:
    """Numbers in the checkpoint's tensors, its EMA copy (`ema.*`, the same network averaged) not counted;
    a latent guided model's `autoencoder.*` is counted (the fit trains it, in its first stage)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
            if not key.startswith("ema."):
                total += math.prod(handle.get_slice(key).get_shape())
    return total


# ------------------------------------------------------------------------------------ generators
@dataclass(frozen=True)
class GeneratorProbe:
    """What one generator's probe parts need, in a form a fresh process can receive."""

    name: str
    kind: str
    config_type: type
    config: dict[str, Any]  # the resolved config, as JSON
    images: Manifest  # the tiny training slice
    folder: Path  # scratch: the probe checkpoint and samples
    settings: dict[str, Any]  # the spec's sampling settings
    label: str


@dataclass
class Attempt:
    """What one probe attempt at one batch measured."""

    seconds: float
    peak_mb: float
    base_mb: float
    cuda: bool
    step_seconds: float | None = None
    trainable: int | None = None
    frozen: int | None = None
    notes: list[str] = field(default_factory=list)

    def into(self, row: ProbeRow) -> None:
        row.probe_seconds, row.peak_mb = self.seconds, self.peak_mb
        row.trainable, row.frozen = self.trainable, self.frozen
        row.notes.extend(self.notes)
        if not self.cuda:
            row.notes.append(f"peak of the part's own process, which held {self.base_mb:.0f} MB before the "
                             "measured part")


def _fit_attempt(probe: GeneratorProbe, device: Any, batch: int) -> Attempt:
    """A budget fit of one second at the config's size: the generator's own step-rate probe times its
    training step after two warm-up steps (budget.py), then one step is trained and checkpointed."""
    import shutil

    from sonosynth.generators.base import create_generator, read_record

    implementation = create_generator(probe.kind)
    shutil.rmtree(probe.folder, ignore_errors=True)
    config = probe.config_type.model_validate({**_set_batch(probe.config, batch), "budget": "1s"})
    started = time.perf_counter()
    with PeakMemory(device) as memory:
        implementation.fit(probe.images, probe.folder / "model", config, device=str(device), resume=False,
                           progress=False)
    seconds = time.perf_counter() - started
    record = read_record(probe.folder / "model")
    budget = record.budget if record is not None else None
    return Attempt(seconds, memory.peak_mb, memory.base_mb, memory.cuda,
                   step_seconds=1.0 / budget.steps_per_second if budget is not None else seconds,
                   trainable=_checkpoint_parameters(probe.folder / "model"), frozen=0)


def _sample_attempt(probe: GeneratorProbe, steps: int | None, sampler: str | None, device: Any,
                    batch: int) -> Attempt:
    """One batch from the probe's checkpoint.

    With a step count (`steps` set): a warm-up call, then calls of PROBE_SAMPLE_STEPS and of twice as
    many steps; `seconds` is the first timed call and `step_seconds` the difference per step, so the
    call's fixed cost (loading the checkpoint, a latent decoder, the first call's allocations) is not
    multiplied by the full run's step count. Without one: one whole sample, its time.
    """
    import shutil

    from sonosynth.generators.base import create_generator

    implementation = create_generator(probe.kind)
    call = {**probe.settings, "sample_batch_size": batch}
    if steps and sampler == "ddpm":  # timed with DDIM steps: the same network call per step
        call["sampler"] = "ddim"

    def timed(step_count: int | None, name: str) -> float:
        target = probe.folder / f"samples-{batch}-{name}"
        shutil.rmtree(target, ignore_errors=True)
        started = time.perf_counter()
        implementation.sample(probe.folder / "model", batch, target, label=probe.label, seed=0,
                              device=str(device), progress=False,
                              **({**call, "steps": step_count} if step_count else call))
        return time.perf_counter() - started

    with PeakMemory(device) as memory:
        if not steps:
            return Attempt(timed(None, "whole"), memory.peak_mb, memory.base_mb, memory.cuda)
        timed(PROBE_SAMPLE_STEPS, "warm-up")
        short = timed(PROBE_SAMPLE_STEPS, "short")
        long = timed(2 * PROBE_SAMPLE_STEPS, "long")
    return Attempt(short, memory.peak_mb, memory.base_mb, memory.cuda,
                   step_seconds=max(long - short, 0.0) / PROBE_SAMPLE_STEPS)


def sample_estimate(call_seconds: float, step_seconds: float, probe_steps: int, full_steps: int, batch: int,
                    images: int, calls: int) -> float:
    """Seconds to draw `images` images in `calls` sample calls of `full_steps` steps at `batch` per step:

        fixed = max(call_seconds - probe_steps x step_seconds, 0)     (a call's cost besides its steps)
        total = calls x fixed + ceil(images / batch) x full_steps x step_seconds
    """
    fixed = max(call_seconds - probe_steps * step_seconds, 0.0)
    return calls * fixed + math.ceil(images / max(batch, 1)) * full_steps * step_seconds


def probe_generator(dry: DryRun, generator: ResolvedGenerator, scratch: Path, device: Any,
                    cap: int | None) -> list[ProbeRow]:
    from sonosynth.generators.base import create_generator

    spec = generator.spec
    fits = [u for u in dry.plan.of_kind("fit") if u.description.split(" ")[1] == spec.name]
    samples = [u for u in dry.plan.of_kind("sample") if u.description.split(" ")[1] == spec.name]
    if not fits:
        return [ProbeRow(f"fit {spec.name}", notes=["no models in the plan"])]
    images = tiny_slice(fits[0].args[2])
    base = generator.config.model_dump(mode="json")
    settings = dict(generator.sample_settings)
    probe = GeneratorProbe(spec.name, spec.kind, type(generator.config), base, images, scratch / spec.name,
                           settings, samples[0].args[3] if samples else images.classes[0])

    fit_row = ProbeRow(f"fit {spec.name}")
    full_batch = _step_batch(base)
    attempt = with_halving(_fit_attempt, (probe, device), full_batch or 1, fit_row, device, cap)
    attempt.into(fit_row)
    if full_batch is None:
        fit_row.batch = None
    step_seconds = attempt.step_seconds or attempt.seconds
    full_steps = generator.config.training_schedule().steps
    fit_row.notes.append("parameters: the checkpoint's tensors, its EMA copy not counted")
    scale = (full_batch / fit_row.batch) if full_batch and fit_row.batch else 1.0
    fit_row.estimate_seconds = step_seconds * scale * full_steps * len(fits)
    fit_row.notes.append(f"{len(fits)} model(s) x {full_steps} steps of {step_seconds:.3g} s (measured after "
                         "2 warm-up steps)")
    if scale != 1.0:
        fit_row.notes.append(f"time scaled x{scale:g} to batch {full_batch}")

    implementation = create_generator(spec.kind)
    settings_type = getattr(getattr(implementation, "model_type", None), "settings_type", None)
    fields = getattr(settings_type, "model_fields", {})
    sample_defaults = base.get("sample") if isinstance(base.get("sample"), dict) else {}
    full_sample_steps = settings.get("steps") or sample_defaults.get("steps")
    sampler = settings.get("sampler") or sample_defaults.get("sampler")
    if sampler == "ddpm":  # every training timestep
        full_sample_steps = (base.get("schedule") or {}).get("num_train_timesteps") or full_sample_steps
    total_images = sum(int(u.payload["n"]) for u in samples)
    sample_batch = int(settings.get("sample_batch_size") or base.get("sample_batch_size") or 1)
    few_steps = full_sample_steps if "steps" in fields and full_sample_steps else None
    if not few_steps:
        sample_batch = 1  # a whole sample (no step count to cut), so one image
    sample_row = ProbeRow(f"sample {spec.name}")
    attempt = with_halving(_sample_attempt, (probe, few_steps, sampler, device), sample_batch, sample_row, device,
                           cap)
    attempt.into(sample_row)
    if few_steps and attempt.step_seconds is not None:
        sample_row.estimate_seconds = sample_estimate(attempt.seconds, attempt.step_seconds, PROBE_SAMPLE_STEPS,
                                                      few_steps, sample_row.batch or 1, total_images, len(samples))
        sample_row.notes.append(f"calls of {PROBE_SAMPLE_STEPS} and {2 * PROBE_SAMPLE_STEPS} of {few_steps} "
                                f"sampling steps timed after a warm-up call ({attempt.step_seconds:.3g} s per step)")
    else:
        sample_row.estimate_seconds = sample_row.probe_seconds / max(sample_row.batch or 1, 1) * total_images
    sample_row.notes.append(f"{total_images} images in {len(samples)} sample unit(s)")
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


def _classifier_attempt(classifier: ResolvedClassifier, manifest: Manifest, device: Any, batch: int) -> Attempt:
    """The classifier as the study builds it; training steps (forward, backward, Adam) at `batch`, the
    second timed apart from the first's one-off start-up."""
    import torch
    from torch import nn

    from sonosynth.classify.augment import regular_augmentation
    from sonosynth.classify.data import ManifestDataset

    config = classifier.configs[min(classifier.configs)]
    classes = manifest.classes
    built = ProbeRow("")  # collects build_for_probe's notes
    model = build_for_probe(classifier, len(classes), built).to(device)
    trainable, frozen = count_parameters(model)
    pool = manifest.table.reset_index(drop=True)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    criterion = nn.CrossEntropyLoss()
    rows = [i % len(pool) for i in range(batch)]
    data = ManifestDataset(manifest.where(pool.index.isin(rows)), classes, config.image_size, config.in_channels,
                           augment=regular_augmentation(config.augmentation))
    items = [data[i % len(data)] for i in range(batch)]
    images = torch.stack([x for x, _ in items]).to(device)
    targets = torch.tensor([y for _, y in items], device=device)
    model.train()
    times = []
    started = time.perf_counter()
    with PeakMemory(device) as memory:
        for _ in range(2):
            step_started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(images).float(), targets)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - step_started)
            if times[0] > 20:
                break
    return Attempt(time.perf_counter() - started, memory.peak_mb, memory.base_mb, memory.cuda,
                   step_seconds=times[-1], trainable=trainable, frozen=frozen, notes=built.notes)


def probe_classifier(dry: DryRun, classifier: ResolvedClassifier, device: Any, cap: int | None) -> ProbeRow:
    config = classifier.configs[min(classifier.configs)]
    row = ProbeRow(f"classify {classifier.spec.model}")
    attempt = with_halving(_classifier_attempt, (classifier, dry.manifest, device), config.batch_size, row, device, cap)
    attempt.into(row)
    per_step = attempt.step_seconds or 0.0
    scale = config.batch_size / row.batch
    if scale != 1.0:
        row.notes.append(f"time scaled x{scale:g} to batch {config.batch_size}")
    units = [u for u in dry.plan.of_kind("classify") if u.payload["model"] == classifier.spec.model
             and u.payload["config"]["image_size"] == config.image_size]
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
        cap = memory_limit_mb * 2**20 if memory_limit_mb else (int(available * CPU_MEMORY_SHARE) if available else None)
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
