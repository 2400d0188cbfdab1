"""Executing a plan's units on a Ray cluster (`sonosynth run SPEC --executor ray [--address ...]`).

Every unit that is not already finished becomes one Ray task asking for the unit's resources
(`unit.resources`: CPUs, GPUs, memory). A unit's upstream units are passed to its task as the
ObjectRefs of their tasks, so Ray starts a unit only after the units it reads and runs independent
units (folds, models, classifiers) at once on whichever nodes have room. Units found finished in
the cache are not submitted. The driver calls `on_unit` as tasks finish, in completion order.

The cache is the contract between nodes: a task reads its inputs from, and writes its outputs to,
the run folder's `cache/`, and the driver reads the outputs back to collect the tables. So the run
folder must be on a file system that the driver and every node mount at the same path (NFS, Lustre,
a cloud file store); a unit finished by any node is then found finished by all, and a re-run after
an interruption computes only what is missing. Every node also needs the same sonosynth and torch
importable (the same environment on a shared path, or the same install on each node).

A task whose worker process dies (killed, out of memory, node lost) is retried up to
`MAX_RETRIES` times; an error raised by the unit itself is not retried (it would fail again) and
stops the study, with the finished units kept. A task runs torch and numpy's BLAS on as many CPU
threads as the CPUs it asked for, as a local `--jobs` worker runs on its share of the cores. Their CPU
kernels sum in an order that depends on the thread count, so numbers equal a local run's bit for bit
when both ran the units on the same number of threads (`threads` sets it).

`ray_timeline.csv` in the run folder records, per unit run here, the node and process that ran it,
when, and how many attempts it took.

Ray is imported only inside this module, and only when a study runs on it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sonosynth.errors import SonosynthError
from sonosynth.experiment.executor import ExecutionStats, OnStart, OnUnit, report_finished, run_labelled_unit
from sonosynth.experiment.plan import Unit

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'sonosynth[cluster]'"
TIMELINE_NAME = "ray_timeline.csv"
ATTEMPTS_DIR = "ray_attempts"  # one JSON line per attempt of a unit, written by the task itself
TIMELINE_COLUMNS = ("key", "kind", "description", "node_id", "node_ip", "pid", "start", "end", "seconds", "attempts")
MAX_RETRIES = 3


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def require_ray() -> None:
    """A clear error (not a traceback) when the cluster executor is asked for without Ray installed."""
    if not ray_available():
        raise SonosynthError(f"--executor ray needs Ray, which is not installed here: {INSTALL_HINT}")


# --------------------------------------------------------------------------------- in the worker
_worker_setup: tuple[int, str | None] | None = None


def _prepare_worker(log_level: int, run_log: str | None, threads: int) -> None:
    """Logging and CPU threads of a Ray worker process, as the local pool sets them up for its workers.

    Ray reuses a worker process for many tasks of one study, so logging is installed once per process.
    """
    global _worker_setup
    if _worker_setup != (log_level, run_log):
        from sonosynth.logs import ROOT, configure_worker

        logger = logging.getLogger(ROOT)
        for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(handler)  # the run log of the study this worker served before
            handler.close()
        configure_worker(log_level, Path(run_log) if run_log and Path(run_log).is_file() else None)
        _worker_setup = (log_level, run_log)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    # numpy's BLAS too (the quality metrics' matrix square roots): Ray sets OMP_NUM_THREADS to the task's CPUs
    # when the worker starts, which a reused worker would keep for a unit of another size.
    threadpool_limits(limits=threads)


def _attempts_file(run_dir: Path, key: str) -> Path:
    return run_dir / ATTEMPTS_DIR / f"{key}.jsonl"


def run_task(cache_root: str, unit: Unit, log_level: int, run_log: str | None, threads: int | None,
             *upstream: Any) -> dict:
    """One unit in a Ray worker. `upstream` are the results of the units it reads (Ray waits for them)."""
    import ray

    _prepare_worker(log_level, run_log, threads or max(1, int(unit.resources.cpus)))
    context = ray.get_runtime_context()
    attempt = {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
               "start": time.time()}
    # Written before the work starts, so an attempt whose worker dies is counted too.
    attempts = _attempts_file(Path(cache_root).parent, unit.key)
    attempts.parent.mkdir(parents=True, exist_ok=True)
    with attempts.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(attempt) + "\n")
    computed = run_labelled_unit(Path(cache_root), unit)
    return {**attempt, "end": time.time(), "computed": computed}


# --------------------------------------------------------------------------------- on the driver
def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _count_attempts(run_dir: Path, key: str) -> int:
    try:
        return sum(1 for line in _attempts_file(run_dir, key).read_text(encoding="utf-8").splitlines() if line)
    except OSError:
        return 1


@dataclass
class RayExecutor:
    """Runs units as Ray tasks on the cluster at `address` (None: `RAY_ADDRESS`, or a local one-machine cluster).

    When Ray is already initialised in this process (a test's `ray.init(num_cpus=2)`), that cluster is used
    and left running. `threads`: torch CPU threads per unit (default: the CPUs the unit asked for).
    """

    cache_root: Path
    address: str | None = None
    max_retries: int = MAX_RETRIES
    threads: int | None = None
    stats: ExecutionStats = field(default_factory=ExecutionStats)
    _addresses: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        require_ray()
        self.cache_root = Path(self.cache_root)

    @property
    def run_dir(self) -> Path:
        return self.cache_root.parent

    @property
    def timeline_path(self) -> Path:
        return self.run_dir / TIMELINE_NAME

    def run(self, units: Sequence[Unit], on_unit: OnUnit, on_start: OnStart | None = None) -> None:
        pending = report_finished(self.cache_root, units, self.stats, on_unit)  # cache hits never go to the cluster
        if not pending:
            return
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            self._connect(ray)
        try:
            self._run(ray, pending, on_unit, on_start)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray: Any) -> None:
        # Workers get the driver's PYTHONPATH, so a source checkout on the path (not installed) runs on them too.
        env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
        try:
            ray.init(address=self.address, runtime_env={"env_vars": env} if env else None, log_to_driver=True)
        except ConnectionError as exc:
            raise SonosynthError(f"could not reach the Ray cluster at {self.address!r}: {exc}. Start it with "
                                 "`ray start --head` (or `ray up cluster.yaml`), or omit --address for a "
                                 "one-machine cluster.") from exc
        log.info("Ray cluster: %s", _cluster_summary(ray))

    def _gpu_request(self, ray: Any, units: Sequence[Unit]) -> dict[str, float]:
        """Each unit's GPU request; GPU asks are dropped on a cluster without GPUs (else Ray waits forever)."""
        total = ray.cluster_resources().get("GPU", 0.0)
        wanted = {unit.key: unit.resources.gpus for unit in units}
        if total == 0 and any(wanted.values()):
            log.info("the Ray cluster has no GPUs: every unit runs on CPUs")
            return dict.fromkeys(wanted, 0.0)
        for unit in units:
            if unit.resources.gpus > total:
                raise SonosynthError(f"unit {unit.description!r} asks for {unit.resources.gpus:g} GPUs; the Ray "
                                     f"cluster has {total:g}. Lower the generator's `gpus` in the spec.")
        return wanted

    def _run(self, ray: Any, pending: list[Unit], on_unit: OnUnit, on_start: OnStart | None) -> None:
        from sonosynth.logs import RUN_LOG_NAME, console_level

        remote = ray.remote(run_task)
        gpus = self._gpu_request(ray, pending)
        run_log = self.run_dir / RUN_LOG_NAME
        refs: dict[str, Any] = {}
        for unit in pending:  # dependency order: an upstream unit's ref exists before its readers are submitted
            _attempts_file(self.run_dir, unit.key).unlink(missing_ok=True)
            options: dict[str, Any] = {"num_cpus": unit.resources.cpus, "num_gpus": gpus[unit.key],
                                       "max_retries": self.max_retries, "retry_exceptions": False,
                                       "name": unit.description}
            if unit.resources.memory_mb:
                options["memory"] = int(unit.resources.memory_mb) * 1024 * 1024
            upstream = [refs[key] for key in unit.depends_on if key in refs]
            refs[unit.key] = remote.options(**options).remote(str(self.cache_root), unit, console_level(),
                                                              str(run_log) if run_log.is_file() else None,
                                                              self.threads, *upstream)
        # The address each node joined with (a task sees its machine's address, the same for nodes sharing one).
        self._addresses = {node["NodeID"]: node.get("NodeManagerAddress", "") for node in ray.nodes()}
        by_key = {unit.key: unit for unit in pending}
        waiting = {unit.key: {key for key in unit.depends_on if key in refs} for unit in pending}
        unit_of = {ref: key for key, ref in refs.items()}
        rows: list[dict] = []

        def announce_ready() -> None:
            # The driver cannot see a task start on its node; a unit is announced when all it reads is done.
            for key in [k for k, deps in waiting.items() if not deps]:
                del waiting[key]
                if on_start is not None:
                    on_start(by_key[key])

        announce_ready()
        outstanding = list(refs.values())
        try:
            while outstanding:
                ready, outstanding = ray.wait(outstanding, num_returns=1)
                key = unit_of[ready[0]]
                unit = by_key[key]
                record = self._result(ray, ready[0], unit)
                rows.append(self._timeline_row(unit, record))
                self._write_timeline(rows)
                self.stats.count(record["computed"])
                on_unit(unit, record["computed"])
                for deps in waiting.values():
                    deps.discard(key)
                announce_ready()
        except BaseException:
            # Finished units are on disk; stop the rest so a re-run picks up from there.
            for ref in outstanding:
                ray.cancel(ref)
            raise

    def _result(self, ray: Any, ref: Any, unit: Unit) -> dict:
        try:
            return ray.get(ref)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.LocalRayletDiedError) as exc:
            raise SonosynthError(
                f"unit {unit.description!r}: its Ray worker died on each of {self.max_retries + 1} attempts "
                f"({type(exc).__name__}); finished units are kept, re-run the same command to continue. Look "
                "for out-of-memory kills in the Ray logs (/tmp/ray/session_latest/logs) and raise the unit's "
                "memory if so.") from exc
        except ray.exceptions.RayTaskError as exc:
            # The unit's own error (a SonosynthError names its cause): raise it as the local executor would.
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
            if cause is not None:
                raise cause from None
            raise

    def _timeline_row(self, unit: Unit, record: dict) -> dict:
        return {"key": unit.key, "kind": unit.kind, "description": unit.description, "node_id": record["node_id"],
                "node_ip": self._addresses.get(record["node_id"]) or record["node_ip"], "pid": record["pid"], "start": _timestamp(record["start"]),
                "end": _timestamp(record["end"]), "seconds": round(record["end"] - record["start"], 3),
                "attempts": _count_attempts(self.run_dir, unit.key)}

    def _write_timeline(self, rows: list[dict]) -> None:
        """Rows of this run replace those of the same units from an earlier (interrupted) run of the folder."""
        import pandas as pd

        from sonosynth.atomic import write_csv_atomic

        table = pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))
        if self.timeline_path.is_file():
            earlier = pd.read_csv(self.timeline_path, dtype=str)
            table = pd.concat([earlier[~earlier["key"].isin(table["key"])], table.astype(str)], ignore_index=True)
        write_csv_atomic(table, self.timeline_path)


def _cluster_summary(ray: Any) -> str:
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    resources = ray.cluster_resources()
    return (f"{len(nodes)} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs "
            f"({', '.join(sorted({node.get('NodeManagerAddress', '?') for node in nodes}))})")
