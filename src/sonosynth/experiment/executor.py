"""Executing a plan's units: one at a time by default, in local worker processes (`--jobs N`), or on a
Ray cluster (`--executor ray`, see `ray_executor.py`; Ray is imported only there).

An executor implements `run(units, on_unit, on_start=None)`: it runs every unit of `units` (given in
dependency order) after the units it depends on, through the cache (`run_labelled_unit`), calls
`on_start(unit)` when a unit starts computing and `on_unit(unit, computed)` once per unit,
`computed` False for a unit found finished.

Workers are fresh (spawned) processes. Each gets an equal share of the CPU threads and, on a
machine with several GPUs, one GPU of its own through CUDA_VISIBLE_DEVICES, set before torch
is imported in that process, so "cuda" inside a unit means that worker's device.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sonosynth.experiment.cache import is_finished, run_unit
from sonosynth.experiment.plan import Unit

OnUnit = Callable[[Unit, bool], None]
OnStart = Callable[[Unit], object]


class Executor(Protocol):
    def run(self, units: Sequence[Unit], on_unit: OnUnit, on_start: OnStart | None = None) -> None: ...


def run_labelled_unit(cache_root: Path, unit: Unit) -> bool:
    """`run_unit` with the unit's progress label and its TensorBoard folder (`run_dir/tensorboard/...`)."""
    from sonosynth.progress import unit as progress_unit
    from sonosynth.tensorboard_events import events, unit_folder

    with progress_unit(unit.description), events(unit_folder(Path(cache_root).parent, unit.description)):
        return run_unit(cache_root, unit)


@dataclass
class ExecutionStats:
    hits: int = 0
    computed: int = 0

    def count(self, computed: bool) -> None:
        if computed:
            self.computed += 1
        else:
            self.hits += 1


def report_finished(cache_root: Path, units: Sequence[Unit], stats: ExecutionStats, on_unit: OnUnit) -> list[Unit]:
    """Reports the units already finished in the cache (as reused) and returns the others, in plan order."""
    pending: list[Unit] = []
    for unit in units:
        if is_finished(cache_root, unit):
            stats.count(False)
            on_unit(unit, False)
        else:
            pending.append(unit)
    return pending


@dataclass
class SerialExecutor:
    """Runs units one after another in plan order (which is dependency order)."""

    cache_root: Path
    stats: ExecutionStats = field(default_factory=ExecutionStats)

    def run(self, units: Sequence[Unit], on_unit: OnUnit, on_start: OnStart | None = None) -> None:
        for unit in units:
            if on_start is not None and not is_finished(self.cache_root, unit):
                on_start(unit)
            computed = run_labelled_unit(self.cache_root, unit)
            self.stats.count(computed)
            on_unit(unit, computed)


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


@dataclass
class PoolExecutor:
    """Runs units in `jobs` spawned worker processes, each as soon as the units it depends on are done."""

    cache_root: Path
    jobs: int
    device: str = "auto"
    stats: ExecutionStats = field(default_factory=ExecutionStats)

    def run(self, units: Sequence[Unit], on_unit: OnUnit, on_start: OnStart | None = None) -> None:
        batch = {unit.key for unit in units}
        pending = report_finished(self.cache_root, units, self.stats, on_unit)  # workers start for real work only
        done: set[str] = batch - {unit.key for unit in pending}
        if not pending:
            return
        gpus = 0
        if self.device in ("auto", "cuda"):
            import torch

            gpus = torch.cuda.device_count()
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        context = multiprocessing.get_context("spawn")
        counter = context.Value("i", 0)
        from sonosynth.logs import RUN_LOG_NAME, console_level

        run_log = self.cache_root.parent / RUN_LOG_NAME
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=context, initializer=_init_worker,
                                 initargs=(counter, gpus, threads, console_level(),
                                           run_log if run_log.is_file() else None)) as pool:
            running: dict[Future, Unit] = {}
            try:
                while pending or running:
                    ready = [u for u in pending if all(d in done or d not in batch for d in u.depends_on)]
                    for unit in ready:
                        pending.remove(unit)
                        if on_start is not None:
                            on_start(unit)
                        running[pool.submit(run_labelled_unit, self.cache_root, unit)] = unit
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        unit = running.pop(future)
                        computed = future.result()
                        done.add(unit.key)
                        self.stats.count(computed)
                        on_unit(unit, computed)
            except BaseException:
                # Finished units are on disk; cancel the rest so a re-run picks them up.
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def local_executor(cache_root: Path, jobs: int = 1, device: str = "auto") -> SerialExecutor | PoolExecutor:
    return SerialExecutor(Path(cache_root)) if jobs <= 1 else PoolExecutor(Path(cache_root), jobs, device)
