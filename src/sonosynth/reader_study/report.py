"""The reader study's results as files (CSV + Markdown) and as a section of a run's HTML report."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sonosynth.atomic import atomic_path, write_text_atomic
from sonosynth.reader_study.results import (
    StudyResults,
    accuracy_summary,
    agreement_summary,
    study_results,
    table4,
)
from sonosynth.reader_study.store import StudyStore

RESULTS_DIRNAME = "results"


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        return "" if pd.isna(value) else str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join(" --- " for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _html_table(table: pd.DataFrame) -> str:
    return table.to_html(index=False, border=0, classes="t", na_rep="", escape=True)


@dataclass(frozen=True)
class _Part:
    title: str
    note: str
    table: pd.DataFrame


def _parts(results: StudyResults, progress: pd.DataFrame) -> list[_Part]:
    level = f"{results.level:.0%}"
    parts = [
        _Part("Images called synthetic, per generator and reader",
              f"Fake-detection rate for each generator's images, false-alarm rate for the real images; "
              f"cells: rate (called synthetic / shown; {level} Wilson interval).", table4(results.detection)),
        _Part("Sensitivity and specificity",
              f"Synthetic is the positive class; {level} Wilson intervals.", accuracy_summary(results.accuracy)),
    ]
    if not results.agreement.empty:
        parts.append(_Part("Agreement between readers",
                           "Cohen's kappa per pair and Fleiss' kappa over all readers, on the images each answered.",
                           agreement_summary(results.agreement)))
    parts.append(_Part("Progress", "Images answered per reader.", progress))
    return parts


def _load(study_dir: str | os.PathLike, level: float) -> tuple[StudyStore, StudyResults, pd.DataFrame]:
    store = StudyStore(study_dir)
    return store, study_results(store.answers(), level), store.progress()


def _section(results: StudyResults, progress: pd.DataFrame) -> tuple[str, str]:
    if progress.empty or progress["answered"].sum() == 0:
        text = "No reader has answered yet. Start one with `sonosynth reader-study serve STUDY_DIR`."
        return text, f"<p>{html.escape(text)}</p>"
    markdown, fragments = [], []
    for part in _parts(results, progress):
        markdown += [f"### {part.title}", "", part.note, "", _markdown_table(part.table), ""]
        fragments.append(f"<h3>{html.escape(part.title)}</h3><p>{html.escape(part.note)}</p>{_html_table(part.table)}")
    return "\n".join(markdown), "\n".join(fragments)


def reader_study_section(study_dir: str | os.PathLike, level: float = 0.95) -> tuple[str, str]:
    """(Markdown, HTML fragment) of a study's results, for a run's report (which adds the section title)."""
    _, results, progress = _load(study_dir, level)
    return _section(results, progress)


@dataclass(frozen=True)
class ResultFiles:
    results: StudyResults
    markdown: Path
    detection: Path
    accuracy: Path
    agreement: Path
    progress: pd.DataFrame


def write_results(study_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                  level: float = 0.95) -> ResultFiles:
    """Write detection.csv, accuracy.csv, agreement.csv and results.md (default: STUDY_DIR/results/)."""
    store, results, progress = _load(study_dir, level)
    out = Path(out) if out is not None else store.study_dir / RESULTS_DIRNAME
    paths = {name: out / f"{name}.csv" for name in ("detection", "accuracy", "agreement")}
    for name, path in paths.items():
        with atomic_path(path) as tmp:
            getattr(results, name).to_csv(tmp, index=False)
    markdown, _ = _section(results, progress)
    markdown_path = out / "results.md"
    write_text_atomic(markdown_path, f"# Reader study: {store.study_dir.name}\n\n{markdown}\n")
    return ResultFiles(results, markdown_path, paths["detection"], paths["accuracy"], paths["agreement"], progress)


__all__ = ["ResultFiles", "reader_study_section", "write_results"]
