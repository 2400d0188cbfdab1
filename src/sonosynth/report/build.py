"""The study report, rebuilt from a run folder alone: `report.md` and one self-contained `report.html`."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sonosynth.atomic import write_text_atomic
from sonosynth.data.images import load_grayscale
from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError
from sonosynth.report import figures
from sonosynth.report.grid import image_grid
from sonosynth.report.tables import (
    accuracy_table,
    cas_table,
    confusion_sum,
    fraction_table,
    paired_table,
    table3,
    to_markdown,
)

GRID_SAMPLES = 8


@dataclass
class Section:
    title: str
    markdown: str = ""
    html: str = ""
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG bytes)


@dataclass(frozen=True)
class Report:
    markdown_path: Path
    html_path: Path
    headline: pd.DataFrame
    headline_title: str


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _table_section(title: str, table: pd.DataFrame, note: str = "") -> Section:
    text = (note + "\n\n" if note else "") + to_markdown(table)
    body = (f"<p>{html.escape(note)}</p>" if note else "") + table.to_html(index=False, border=0, classes="t",
                                                                          na_rep="", float_format="%.4g")
    return Section(title, text, body)


def _png_grid(rows: list[tuple[str, list[np.ndarray]]]) -> bytes:
    buffer = io.BytesIO()
    image_grid(rows, tile=112).save(buffer, format="PNG")
    return buffer.getvalue()


def _sample_grids(run_dir: Path, keep: float) -> Section:
    index = _read_csv(run_dir / "synthetic_sets.csv")
    section = Section("Real and synthetic samples")
    if index.empty:
        return section
    index = index[index["keep"] == keep]
    first_fold = index["fold"].min()
    for _, entry in index[index["fold"] == first_fold].iterrows():
        synthetic = Manifest.read(run_dir / entry["manifest"])
        rng = np.random.default_rng(0)
        picks = rng.choice(len(synthetic), size=min(GRID_SAMPLES, len(synthetic)), replace=False)
        paths, parents_per_row = synthetic.absolute_paths(), synthetic.parent_paths()
        parents = sorted({p for i in picks for p in parents_per_row[i]})[:GRID_SAMPLES]
        rows = [("training", [load_grayscale(p) for p in parents if p.is_file()]),
                (str(entry["generator"]), [load_grayscale(paths[i]) for i in sorted(picks)])]
        caption = f"{entry['generator']}: fold {first_fold}, keep {keep:g} (top: its training images; bottom: samples)"
        section.images.append((caption, _png_grid(rows)))
    return section


TABLE2_COLUMNS = (("sifid", "SIFID ↓"), ("ssim", "SSIM"), ("fid", "FID ↓"), ("kid", "KID ↓"),
                  ("copy_rate", "copy rate ↓"), ("diversity_ssim", "diversity 1-SSIM"),
                  ("reader_auc", "reader AUC ↓"), ("reader_fake_detection", "fakes detected ↓"))


def table2(quality: pd.DataFrame) -> pd.DataFrame:
    """The lung study's Table 2 view: one row per generator and fraction, each metric mean ± std over folds."""
    rows = []
    for (generator, keep), part in quality.groupby(["generator", "keep"], sort=True):
        row: dict[str, object] = {"generator": generator, "keep": keep, "folds": len(part),
                                  "images": int(part["images"].sum()) if "images" in part else pd.NA}
        for column, label in TABLE2_COLUMNS:
            if column in part:
                values = part[column].astype(float).dropna()
                if values.empty:
                    continue
                row[label] = (f"{values.mean():.3g} ± {values.std(ddof=1):.2g}" if len(values) > 1
                              else f"{values.mean():.3g}")
        rows.append(row)
    return pd.DataFrame(rows)


def _quality_section(quality: pd.DataFrame, flags: pd.DataFrame, threshold: float) -> list[Section]:
    if quality.empty:
        return []
    numeric = quality.select_dtypes("number").columns.difference(["fold", "keep"])
    summary = quality.groupby(["generator", "keep"])[list(numeric)].mean().reset_index()
    # One name per feature space: each fold's classifier checkpoint path would repeat the same description.
    names = quality.get("features", pd.Series(dtype=str)).dropna().astype(str).str.replace(r" \(.*\)$", "", regex=True)
    features = ", ".join(sorted(set(names)))
    explanation = (f"SSIM is to each sample's own training image; SIFID/FID/KID in the feature space of "
                   f"{features or 'n/a'}; copy rate is the share of samples whose nearest real training image "
                   f"has NCC > {threshold:g}. The reader AUC is the automatic reader's (a CNN trained to tell the "
                   "samples from real images of patients the generator never saw; 0.5 = indistinguishable), "
                   "'fakes detected' its share of samples called synthetic, beside Table 4's human rate.")
    sections = [
        _table_section("Image quality (Table 2 style; mean ± std over folds)", table2(quality), explanation),
        _table_section("All image-quality and memorization metrics (mean over folds)", summary,
                       "Diversity columns: mean pairwise dissimilarity of samples, and (crops) of random crops of "
                       "the training images as a reference."),
    ]
    if flags.empty:
        sections.append(Section("Memorization flags", f"No synthetic image exceeded NCC {threshold:g} with any real "
                                "training image.", f"<p>No synthetic image exceeded NCC {threshold:g} with any real "
                                "training image.</p>"))
    else:
        columns = [c for c in ("fold", "keep", "generator", "path", "nearest_real", "nearest_patient", "ncc", "ssim")
                   if c in flags.columns]
        sections.append(_table_section(f"Memorization flags ({len(flags)} near-copies)", flags[columns].head(50),
                                       "Synthetic images whose nearest real training image exceeds the threshold."))
    return sections


def build_sections(run_dir: Path) -> tuple[list[Section], pd.DataFrame, str]:
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    results = _read_csv(run_dir / "results.csv")
    if results.empty:
        raise SonosynthError(f"{run_dir}: no results.csv yet; run `sonosynth run SPEC` first.")
    results["generator"] = results["generator"].fillna("")
    confusions = _read_csv(run_dir / "confusions.csv")
    quality = _read_csv(run_dir / "quality.csv")
    keeps = list(spec["split"]["keep"])
    headline_keep = keeps[0]
    minority = spec["split"].get("minority")
    classifiers = list(dict.fromkeys(results["classifier"]))
    sections: list[Section] = []

    headline = table3(results, headline_keep, classifiers[0])
    headline_title = (f"Table 3 layout: {classifiers[0]}, {minority or 'minority'} kept at {headline_keep:.0%} "
                      f"(mean ± std over {results['fold'].nunique()} folds)")
    for classifier in classifiers:
        sections.append(_table_section(
            f"Per-class results, {classifier}, {minority or 'minority'} kept at {headline_keep:.0%}",
            table3(results, headline_keep, classifier),
            "Evaluated on real validation patients only; mean ± std over folds.",
        ))
    sections.append(_table_section(f"Accuracy per classifier and regime (fetal-study layout), keep {headline_keep:.0%}",
                                   accuracy_table(results, headline_keep)))
    metrics = ("balanced_accuracy",) + ((f"f1:{minority}",) if minority else ())
    paired = paired_table(results, spec.get("baseline", "real"), metrics)
    if not paired.empty:
        sections.append(_table_section(
            f"Paired comparison against `{spec.get('baseline', 'real')}` (fold by fold)", paired,
            "mean diff > 0 favours the condition. The bootstrap CI resamples folds; with 5 folds the smallest "
            "possible two-sided Wilcoxon p is 0.0625, so read the CI and the per-fold consistency, not p alone.",
        ))
    cas = cas_table(results)
    if not cas.empty:
        sections.append(_table_section(
            "Classification accuracy score (CAS: synthetic-only over real-only balanced accuracy)", cas,
            "Ravuri & Vinyals 2019: the same classifier and fold trained on synthetic images only, over real only; "
            "1.0 means the synthetic images teach as much as the real ones. Mean ± std over folds."))
    if len(keeps) > 1:
        curve = fraction_table(results, classifiers[0])
        section = _table_section(f"Balanced accuracy vs % of {minority or 'minority'} patients kept ({classifiers[0]})",
                                 curve)
        section.images.append(("balanced accuracy vs kept fraction", figures.fraction_curve(curve, minority)))
        sections.append(section)
    if not confusions.empty:
        section = Section(f"Confusion matrices ({classifiers[0]}, keep {headline_keep:.0%}, summed over folds)")
        for condition in dict.fromkeys(confusions["condition"]):
            matrix = confusion_sum(confusions, headline_keep, classifiers[0], condition)
            if matrix.empty:
                continue
            section.markdown += f"\n**{condition}**\n\n{to_markdown(matrix, index=True)}\n"
            section.images.append((condition, figures.confusion_figure(matrix, condition)))
        sections.append(section)
    threshold = float(spec.get("quality", {}).get("threshold", 0.95))
    sections.extend(_quality_section(quality, _read_csv(run_dir / "memorization_flags.csv"), threshold))
    grids = _sample_grids(run_dir, headline_keep)
    if grids.images:
        sections.append(grids)
    reader = run_dir / "reader-study"
    if reader.is_dir():
        try:
            from sonosynth.reader_study.report import reader_study_section

            markdown, fragment = reader_study_section(reader)
            sections.append(Section("Reader study", markdown, fragment))
        except (ModuleNotFoundError, SonosynthError) as exc:
            sections.append(Section("Reader study", f"Reader-study folder not readable: {exc}",
                                    f"<p>Reader-study folder not readable: {html.escape(str(exc))}</p>"))
    versions = json.loads((run_dir / "versions.json").read_text()) if (run_dir / "versions.json").is_file() else {}
    spec_text = (run_dir / "spec.yaml").read_text()
    sections.append(Section(
        "Exact spec and software",
        f"```yaml\n{spec_text}```\n\n" + "\n".join(f"- {k}: {v}" for k, v in versions.items()),
        f"<pre>{html.escape(spec_text)}</pre><ul>"
        + "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in versions.items()) + "</ul>",
    ))
    return sections, headline, headline_title


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table.t{border-collapse:collapse;font-size:.8rem}table.t td,table.t th{border:1px solid #ddd;padding:3px 6px}
table.t th{background:#f4f4f4}figure{display:inline-block;margin:.5rem}figcaption{font-size:.75rem;color:#555}
pre{background:#f8f8f8;padding:.7rem;font-size:.75rem;overflow:auto}
"""


def write_report(run_dir: str | os.PathLike) -> Report:
    run_dir = Path(run_dir)
    if not (run_dir / "spec.yaml").is_file():
        raise SonosynthError(f"{run_dir}: not a sonosynth run folder (no spec.yaml).")
    name = yaml.safe_load((run_dir / "spec.yaml").read_text()).get("name", run_dir.name)
    sections, headline, headline_title = build_sections(run_dir)
    figures_dir = run_dir / "figures"
    markdown = [f"# sonosynth study: {name}", ""]
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>sonosynth study: {html.escape(name)}</h1>")
    parts = [head]
    for number, section in enumerate(sections):
        markdown += [f"## {section.title}", "", section.markdown, ""]
        parts.append(f"<h2>{html.escape(section.title)}</h2>{section.html}")
        for index, (caption, png) in enumerate(section.images):
            figure_path = figures_dir / f"s{number:02d}-{index:02d}.png"
            figure_path.parent.mkdir(parents=True, exist_ok=True)
            figure_path.write_bytes(png)
            markdown.append(f"![{caption}](figures/{figure_path.name})\n")
            parts.append(f"<figure><img src='{_data_uri(png)}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    markdown_path, html_path = run_dir / "report.md", run_dir / "report.html"
    write_text_atomic(markdown_path, "\n".join(markdown))
    write_text_atomic(html_path, "".join(parts))
    return Report(markdown_path, html_path, headline, headline_title)
