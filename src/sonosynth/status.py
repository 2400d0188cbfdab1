"""What a study run is doing: the progress it reports while running, and `sonosynth status RUN_DIR`.

`StudyProgress` receives the runner's unit events (planned, started, finished or reused). It logs
one line per unit (`[12/85] fit SinDDM fold 2 image 3: done in 2m10s, study ETA 25m`), moves the
study bar on a terminal, and keeps `run_dir/status.json` current. The study ETA counts only units
that still need computing: each group of units' mean time so far times that group's units still to
go. A group is a kind and, for fits and samples, the generator (`fit SinDDM`, `sample SinGAN`,
`classify`): a SinDDM fit and a SinGAN fit differ by minutes, a fit and a classifier by more. A
group not yet timed borrows its kind's mean; a kind not yet timed is not guessed at: the ETA is
then a lower bound, logged as `study ETA >= 5m (+40 units not yet timed)`. Reused units take no
time and do not count.

`read_status(run_dir)` builds a summary from `status.json` and the cache itself (finished units,
their times, the latest classifier numbers), so it works for a running, finished or killed run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sonosynth import progress as progress_module
from sonosynth.atomic import write_text_atomic
from sonosynth.progress import format_duration

log = logging.getLogger(__name__)
STATUS_NAME = "status.json"
RECENT = 8


def unit_kind(description: str) -> str:
    """The kind of a unit from its description's first word (fit, sample, classify, quality, ...)."""
    return description.split(" ", 1)[0] if description else "unit"


def eta_group(description: str) -> str:
    """The units timed together for the ETA: the kind, and for fits and samples the generator's name."""
    words = description.split()
    if len(words) > 1 and words[0] in ("fit", "sample"):
        return f"{words[0]} {words[1]}"
    return unit_kind(description)


class StudyProgress:
    """Unit-level progress of one study run: log lines, the terminal bar, and `status.json`."""

    def __init__(self, run_dir: str | os.PathLike, display: Any | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.display = display
        self.bar = display.add_task("study", total=None, eta="") if display is not None else None
        self.total: int | None = None
        self.kinds: dict[str, int] = {}
        self.done = 0
        self.reused = 0
        self._reused_pending = 0
        self.seconds: dict[str, list[float]] = {}  # by kind
        self.group_seconds: dict[str, list[float]] = {}
        self.finished_by_group: dict[str, int] = {}
        self.running: dict[str, dict[str, Any]] = {}
        self.recent: list[dict[str, Any]] = []
        self.started_at = time.time()
        self.state = "running"
        self._number: dict[str, int] = {}
        progress_module.listeners.append(self._inner_line)

    # -- events from the runner
    def plan(self, total: int, kinds: dict[str, int] | None = None) -> None:
        """The number of units the study will report, and how many of each `eta_group` (known before
        the first one runs)."""
        self.total = total
        self.kinds = dict(kinds or {})
        if self.display is not None:
            self.display.update(self.bar, total=total)
        log.info("study: %d units planned%s", total,
                 " (" + ", ".join(f"{n} {k}" for k, n in self.kinds.items()) + ")" if self.kinds else "")
        self._write()

    def label(self, description: str) -> str:
        number = self._number.get(description, self.done + len(self.running) + 1)
        return f"[{number}/{self.total if self.total is not None else '?'}] {description}"

    def started(self, description: str) -> str:
        """A unit starts computing; returns its numbered label for the inner progress lines."""
        self._flush_reused()
        self._number[description] = self.done + len(self.running) + 1
        self.running[description] = {"description": description, "since": time.time(), "progress": ""}
        label = self.label(description)
        progress_module.unit_labels[description] = label
        log.debug("%s: started", label)
        if self.display is not None:
            self.display.update(self.bar, description=f"study: {description}")
        self._write()
        return label

    def finished(self, description: str, computed: bool, seconds: float | None = None) -> None:
        """A unit is finished: computed now (`computed`), or found finished in the cache."""
        label = self.label(description)
        entry = self.running.pop(description, None)
        kind = unit_kind(description)
        group = self._group(description)
        self.done += 1
        self.finished_by_group[group] = self.finished_by_group.get(group, 0) + 1
        if computed:
            if seconds is None:
                seconds = time.time() - entry["since"] if entry else 0.0
            self.seconds.setdefault(kind, []).append(seconds)
            self.group_seconds.setdefault(group, []).append(seconds)
            self.recent = [*self.recent, {"description": description, "seconds": seconds,
                                          "finished": time.time()}][-RECENT:]
            log.info("%s: done in %s%s", label, format_duration(seconds), self._eta_note())
        else:
            self.reused += 1
            self._reused_pending += 1
            log.debug("%s: reused from the cache", label)
        self._number.pop(description, None)
        progress_module.unit_labels.pop(description, None)
        if self.display is not None:
            eta = self.eta()
            bound = ">=" if self.untimed() else ""
            self.display.update(self.bar, completed=self.done,
                                eta=f"ETA {bound}{format_duration(eta, coarse=True)}" if math.isfinite(eta) else "")
        self._write()

    def close(self, state: str = "finished") -> None:
        self._flush_reused()
        self.state = state
        if self._inner_line in progress_module.listeners:
            progress_module.listeners.remove(self._inner_line)
        if state == "finished" and self.seconds:
            rows = [f"{kind}: {len(times)} computed, {format_duration(sum(times))} total, "
                    f"{format_duration(sum(times) / len(times))} each" for kind, times in self.seconds.items()]
            log.info("unit timings: %s; %d reused from the cache", "; ".join(rows), self.reused)
        self._write()

    # -- estimates
    def left(self) -> int:
        return max(0, (self.total or 0) - self.done)

    def eta(self) -> float:
        """Seconds still needed by the units whose group or kind has been timed (see `untimed`)."""
        if self.total is None or not self.seconds:
            return math.inf
        if not self.kinds:
            every = [s for times in self.seconds.values() for s in times]
            return sum(every) / len(every) * self.left()
        seconds = 0.0
        for group, to_go in self._to_go().items():
            mean = self._mean_for(group)
            seconds += to_go * mean if mean is not None else 0.0
        return seconds

    def untimed(self) -> int:
        """Units still to go whose kind has no computed unit yet, so the ETA leaves them out."""
        return sum(n for group, n in self._to_go().items() if self._mean_for(group) is None)

    def _to_go(self) -> dict[str, int]:
        return {group: max(0, planned - self.finished_by_group.get(group, 0)) for group, planned in self.kinds.items()}

    def _mean_for(self, group: str) -> float | None:
        times = self.group_seconds.get(group) or self.seconds.get(unit_kind(group))
        return sum(times) / len(times) if times else None

    def _group(self, description: str) -> str:
        """The planned group a description belongs to: the longest planned group its words start with."""
        words = description.split()
        for n in range(len(words), 0, -1):
            if " ".join(words[:n]) in self.kinds:
                return " ".join(words[:n])
        return eta_group(description)

    def _eta_note(self) -> str:
        eta = self.eta()
        if not math.isfinite(eta) or not self.left():
            return ""
        untimed = self.untimed()
        if untimed and eta < 1:
            return f", study ETA not known yet ({untimed} units of kinds not yet timed)"
        if untimed:
            return f", study ETA >= {format_duration(eta, coarse=True)} (+{untimed} units not yet timed)"
        return f", study ETA {format_duration(eta, coarse=True)}"

    # -- internals
    def _flush_reused(self) -> None:
        if self._reused_pending:
            log.info("[%d/%s] %d unit(s) already finished (in the cache, or the same as another unit)", self.done,
                     self.total, self._reused_pending)
            self._reused_pending = 0

    def _inner_line(self, line: str) -> None:
        for description, entry in self.running.items():
            if description in line:
                entry["progress"] = line.split(f"{description}: ", 1)[-1]
        self._write()

    def _write(self) -> None:
        eta = self.eta()
        status = {
            "state": self.state, "pid": os.getpid(), "host": socket.gethostname(),
            "started": self.started_at, "updated": time.time(), "total": self.total, "done": self.done,
            "reused": self.reused, "left": self.left(), "eta_seconds": eta if math.isfinite(eta) else None,
            "eta_untimed_units": self.untimed(),
            "running": list(self.running.values()), "recent": self.recent,
            "timings": {kind: {"computed": len(t), "seconds": sum(t)} for kind, t in self.seconds.items()},
        }
        try:
            write_text_atomic(self.run_dir / STATUS_NAME, json.dumps(status, indent=1))
        except OSError as exc:  # a status file must never stop a study
            log.debug("could not write %s: %s", self.run_dir / STATUS_NAME, exc)


# ------------------------------------------------------------------------------------------ reading
@dataclass
class RunStatus:
    run_dir: Path
    state: str  # running | finished | failed | interrupted | stopped (the process is gone) | not started
    total: int | None
    done: int
    left: int | None
    eta_seconds: float | None
    running: list[dict[str, Any]]
    units: pd.DataFrame  # kind, finished, unfinished (started, no .done), seconds computing
    latest: pd.DataFrame  # the latest finished classifier runs: regime, model, balanced accuracy
    updated: float | None
    results: bool = False
    notes: list[str] = field(default_factory=list)
    eta_untimed_units: int = 0  # units left out of eta_seconds: their kind has not been timed yet


def _alive(pid: int, host: str) -> bool | None:
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _scan_cache(cache: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, latest = [], []
    if cache.is_dir():
        for kind_dir in sorted(p for p in cache.iterdir() if p.is_dir()):
            finished = unfinished = 0
            seconds = 0.0
            for unit in kind_dir.iterdir():
                done = unit / ".done"
                if not done.is_file():
                    unfinished += 1
                    continue
                finished += 1
                try:
                    record = json.loads(done.read_text())
                    seconds += float(record.get("seconds", 0.0))
                except (OSError, ValueError):
                    record = {}
                metrics = unit / "metrics.json"
                if kind_dir.name == "classify" and metrics.is_file():
                    try:
                        values = json.loads(metrics.read_text())
                        spec = json.loads((unit / "unit.json").read_text())
                    except (OSError, ValueError):
                        continue
                    latest.append({"finished": record.get("finished", done.stat().st_mtime),
                                   "regime": spec.get("regime", ""),
                                   "classifier": (spec.get("classifier") or {}).get("model", ""),
                                   "seed": spec.get("seed", ""),
                                   "accuracy": values.get("accuracy"),
                                   "balanced accuracy": values.get("balanced_accuracy"),
                                   "macro F1": values.get("macro_f1")})
            rows.append({"kind": kind_dir.name, "finished": finished, "unfinished": unfinished,
                         "computing time": format_duration(seconds)})
    table = pd.DataFrame(rows, columns=["kind", "finished", "unfinished", "computing time"])
    recent = pd.DataFrame(latest)
    if not recent.empty:
        recent = recent.sort_values("finished", ascending=False).head(RECENT)
        recent["finished"] = pd.to_datetime(recent["finished"], unit="s").dt.strftime("%H:%M:%S")
        recent = recent.dropna(axis=1, how="all")
    return table, recent


def read_status(run_dir: str | os.PathLike) -> RunStatus:
    from sonosynth.errors import SonosynthError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SonosynthError(f"{run_dir}: no such run folder.")
    if not (run_dir / "spec.yaml").is_file() and not (run_dir / STATUS_NAME).is_file():
        raise SonosynthError(f"{run_dir}: not a sonosynth run folder (no spec.yaml or {STATUS_NAME}).")
    units, latest = _scan_cache(run_dir / "cache")
    notes = []
    status: dict[str, Any] = {}
    if (run_dir / STATUS_NAME).is_file():
        try:
            status = json.loads((run_dir / STATUS_NAME).read_text())
        except ValueError:
            notes.append(f"{STATUS_NAME} is unreadable; showing the cache only.")
    state = status.get("state", "not started" if units.empty else "stopped")
    if state == "running":
        alive = _alive(int(status.get("pid", -1)), str(status.get("host", "")))
        if alive is False:
            state = "stopped"
            notes.append("the process that ran this study is gone; re-run the same command to continue.")
        elif alive is None:
            notes.append(f"running on {status.get('host')}; last update "
                         f"{format_duration(time.time() - status.get('updated', time.time()))} ago.")
    return RunStatus(run_dir=run_dir, state=state, total=status.get("total"), done=int(status.get("done", 0)),
                     left=status.get("left"), eta_seconds=status.get("eta_seconds") if state == "running" else None,
                     eta_untimed_units=int(status.get("eta_untimed_units") or 0),
                     running=status.get("running", []) if state == "running" else [], units=units,
                     latest=latest, updated=status.get("updated"), results=(run_dir / "results.csv").is_file(),
                     notes=notes)


__all__ = ["STATUS_NAME", "RunStatus", "StudyProgress", "eta_group", "read_status", "unit_kind"]
