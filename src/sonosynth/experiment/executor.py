"""Executing cache units: one at a time by default, or in worker processes (`--jobs N`).

Workers are fresh (spawned) processes. Each gets an equal share of the CPU threads and, on a
machine with several GPUs, one GPU of its own through CUDA_VISIBLE_DEVICES, set before torch
is imported in that process, so "cuda" inside a unit means that worker's device.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonosynth.experiment.cache import CacheStats, UnitCache


@dataclass(frozen=True)
class Job:
    kind: str  # cache namespace: fit, sample, classify, quality
    payload: dict[str, Any]  # what the cache key covers
    function: Callable[..., None]  # module-level, so a worker process can import it
    args: tuple  # the function's arguments; the unit folder is appended
    description: str


def _run_job(cache_root: Path, job: Job) -> bool:
    """Run one unit through the cache; True when it was computed (not found finished).

    Its progress lines carry the unit's label, and its losses go to the run's TensorBoard folder.
    """
    from sonosynth.progress import unit
    from sonosynth.tensorboard_events import events, unit_folder

    cache = UnitCache(cache_root)
    with unit(job.description), events(unit_folder(cache_root.parent, job.description)):
        cache.run(job.kind, job.payload, lambda folder: job.function(*job.args, folder))
    return cache.stats.computed > 0


def _init_worker(counter: Any, gpus: int, threads: int, log_level: int = 20, run_log: Path | None = None) -> None:
    from sonosynth.logs import configure_worker

    configure_worker(log_level, run_log)
    slot = 0
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if gpus > 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    import torch

    torch.set_num_threads(threads)


class Executor:
    def __init__(self, cache: UnitCache, jobs: int = 1, device: str = "auto",
                 on_unit: Callable[[str, bool], None] | None = None,
                 on_start: Callable[[str], object] | None = None) -> None:
        self.cache = cache
        self.jobs = max(1, jobs)
        self.device = device
        self.on_unit = on_unit or (lambda description, computed: None)
        self.on_start = on_start or (lambda description: None)
        self.stats = CacheStats()

    def folder(self, job: Job) -> Path:
        return self.cache.unit_dir(job.kind, self.cache.key(job.kind, job.payload))

    def run(self, jobs: Sequence[Job]) -> None:
        """Run the unique jobs among `jobs` (units finished earlier count as cache hits).

        A job identical to another in the same batch (a model on an image two folds share, the reference
        classifier that is also the `real` condition) runs once; its duplicates still report to `on_unit`,
        so a progress bar planned over all jobs reaches its total.
        """
        unique: dict[tuple[str, str], Job] = {}
        for job in jobs:
            key = (job.kind, self.cache.key(job.kind, job.payload))
            if key in unique:
                self.on_unit(job.description, False)
            else:
                unique[key] = job
        pending = []
        for (kind, key), job in unique.items():
            if self.cache.is_done(kind, key):
                self.stats.hits += 1
                self.on_unit(job.description, False)
            else:
                pending.append(job)
        if self.jobs == 1 or len(pending) <= 1:
            for job in pending:
                self.on_start(job.description)
                self._finished(job, _run_job(self.cache.root, job))
            return
        self._run_parallel(pending)

    def _finished(self, job: Job, computed: bool) -> None:
        if computed:
            self.stats.computed += 1
        else:
            self.stats.hits += 1
        self.on_unit(job.description, computed)

    def _run_parallel(self, pending: list[Job]) -> None:
        gpus = 0
        if self.device in ("auto", "cuda"):
            import torch

            gpus = torch.cuda.device_count()
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        context = multiprocessing.get_context("spawn")
        counter = context.Value("i", 0)
        from sonosynth.logs import RUN_LOG_NAME, console_level

        run_log = self.cache.root.parent / RUN_LOG_NAME
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=context, initializer=_init_worker,
                                 initargs=(counter, gpus, threads, console_level(),
                                           run_log if run_log.is_file() else None)) as pool:
            futures = {}
            for job in pending:
                self.on_start(job.description)
                futures[pool.submit(_run_job, self.cache.root, job)] = job
            try:
                remaining = set(futures)
                while remaining:
                    done, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
                    for future in done:
                        self._finished(futures[future], future.result())
            except BaseException:
                # Finished units are on disk; cancel the rest so a re-run picks them up.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
