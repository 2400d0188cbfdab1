"""The content-addressed cache that makes a study resumable and extensible.

Every unit of work (a generator fit, a sampling run, a classifier run, the study's domain feature
network, a quality run) lives in
`cache/<kind>/<key>/`, where the key covers the unit's resolved config, the *content* of its real
input images and the keys of its upstream units (see `plan.py`). A unit is finished when its
`.done` marker exists (written last, atomically) and its outputs pass their check. An interrupted
unit keeps its partial folder, so a generator's own resume continues it; a finished unit whose
outputs were damaged is named, cleared and recomputed; an extended spec reuses every unit whose
inputs did not change.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sonosynth.atomic import write_text_atomic
from sonosynth.experiment.outputs import DamagedOutput

if TYPE_CHECKING:
    from sonosynth.experiment.plan import Unit

log = logging.getLogger(__name__)

DONE_MARKER = ".done"
UNIT_RECORD = "unit.json"


def _record(unit: Unit) -> dict:
    """What unit.json holds: the unit's kind and payload, as JSON reads them back."""
    return json.loads(json.dumps({"kind": unit.kind, **unit.payload}, sort_keys=True, default=str))


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _recorded(folder: Path) -> dict | None:
    try:
        return json.loads((folder / UNIT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def finished_in(folder: Path, unit: Unit, clear: Callable[[Path], None] = remove_folder) -> bool:
    """True when `folder` holds this unit, finished, with intact outputs.

    A folder holding another unit's work (other inputs) or a damaged finished unit is cleared with
    `clear` (the damaged one named in a warning), so the caller computes the unit afresh.
    """
    if not (folder / DONE_MARKER).is_file():
        return False
    if _recorded(folder) != _record(unit):
        log.info("%s holds a run of other inputs; starting %r afresh", folder, unit.description)
        clear(folder)
        return False
    try:
        unit.check_outputs(folder)
    except DamagedOutput as exc:
        log.warning("cache unit %r is damaged: %s: %s; recomputing it", unit.description, exc.path, exc.reason)
        # Nothing in a damaged unit can be trusted, partial training state included: start it afresh.
        clear(folder)
        return False
    return True


def is_finished(cache_root: str | Path, unit: Unit) -> bool:
    return finished_in(unit.folder(cache_root), unit)


def run_in(folder: Path, unit: Unit, cache_root: str | Path, clear: Callable[[Path], None] = remove_folder) -> bool:
    """Compute `unit` into `folder` unless it is finished there; True when it was computed.

    An unfinished folder of the same unit is handed to the unit function as it is, so its own resume
    (a generator's checkpoints, a classifier's last epoch) continues the interrupted work.
    """
    folder = Path(folder)
    if finished_in(folder, unit, clear):
        return False
    if (folder / UNIT_RECORD).is_file() and _recorded(folder) != _record(unit):
        clear(folder)  # an interrupted run of other inputs: its partial state must not be resumed
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / UNIT_RECORD, json.dumps(_record(unit), sort_keys=True, indent=1))
    (folder / DONE_MARKER).unlink(missing_ok=True)
    started = time.perf_counter()
    unit.function(*unit.resolved_args(cache_root), folder)
    write_text_atomic(folder / DONE_MARKER, json.dumps({"seconds": time.perf_counter() - started,
                                                        "finished": time.time()}))
    return True


def run_unit(cache_root: str | Path, unit: Unit) -> bool:
    """Run one unit into its cache folder unless it is finished; True when it was computed.

    Module-level, so a worker process or a Ray task can run it from the unit alone.
    """
    return run_in(unit.folder(cache_root), unit, cache_root)
