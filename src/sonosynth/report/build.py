"""The study report, rebuilt from a run folder alone: `report.md` and one self-contained `report.html`.

The HTML has everything inline (styles, figures as data URIs), so it works offline and can be mailed.
Order: a summary (data, protocol, runtime, the headline verdict with its CI), the classification
tables (Table 3 with 95% CIs, the overall metrics, the fetal-study layout, paired comparisons, the
fraction curve), training curves, confusion matrices, image quality, samples per class beside real
images of that class, the reader study when present, and the exact spec collapsed at the end.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sonosynth.atomic import write_text_atomic
from sonosynth.data.grid import image_grid
from sonosynth.data.images import load_grayscale
from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError
from sonosynth.experiment import layout, outputs
from sonosynth.experiment.spec import StudySpec, load_spec
from sonosynth.report import figures
from sonosynth.report.tables import (
    DIGITS,
    accuracy_table,
    cas_table,
    confusion_sum,
    counts_as_integers,
    fraction_table,
    human_columns,
    number,
    overall_table,
    paired_table,
    per_fold_overall,
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
    collapsed: bool = False  # shown folded (<details>) in the HTML

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")[:60]


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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------------------ HTML pieces
def _cell_html(value: object) -> str:
    text = number(value)
    if "\n" in text:  # a value with its CI below it
        first, second = text.split("\n", 1)
        return f"{html.escape(first)}<br><small>{html.escape(second)}</small>"
    return html.escape(text)


def html_table(table: pd.DataFrame, group_header: bool = False) -> str:
    """A formatted table; `group_header` splits 'covid Prec.' headers into a class row over a metric row."""
    table = counts_as_integers(table)
    columns = [str(c) for c in table.columns]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    head = ""
    if group_header:
        groups: list[tuple[str, int]] = []
        subs = []
        for column in columns:
            group, _, sub = column.rpartition(" ") if " " in column and column not in ("Bal. Acc.",) else ("", "", column)
            if groups and groups[-1][0] == group:
                groups[-1] = (group, groups[-1][1] + 1)
            else:
                groups.append((group, 1))
            subs.append(sub)
        head = "<tr>" + "".join(f"<th colspan='{n}'>{html.escape(g)}</th>" for g, n in groups) + "</tr>"
        head += "<tr>" + "".join(f"<th>{html.escape(s)}</th>" for s in subs) + "</tr>"
    else:
        head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"
    body = []
    for row in table.itertuples(index=False):
        cells = []
        for value, is_number in zip(row, numeric, strict=True):
            cls = " class='n'" if is_number or (isinstance(value, str) and value[:1].isdigit()) else ""
            cells.append(f"<td{cls}>{_cell_html(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class='tw'><table class='t'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table></div>"


def _markdown_table(table: pd.DataFrame) -> str:
    return to_markdown(counts_as_integers(table).map(lambda v: number(v).replace("\n", " ")))


def _table_section(title: str, table: pd.DataFrame, note: str = "", group_header: bool = False) -> Section:
    text = (note + "\n\n" if note else "") + _markdown_table(table)
    body = (f"<p class='note'>{html.escape(note)}</p>" if note else "") + html_table(table, group_header)
    return Section(title, text, body)


def _png_grid(rows: list[tuple[str, list[np.ndarray]]]) -> bytes:
    buffer = io.BytesIO()
    image_grid(rows, tile=96).save(buffer, format="PNG")
    return buffer.getvalue()


def _folds_text(n: int) -> str:
    return "one fold (single values, no spread or CI)" if n == 1 else f"mean ± std over {n} folds"


# ------------------------------------------------------------------------------------------ summary
def _data_tables(run_dir: Path, units: pd.DataFrame, keep: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images and patients per class, and per fold (the fold's patients; stopping set of its training side)."""
    manifest = Manifest.read(run_dir / layout.MANIFEST)
    counts = manifest.counts().rename_axis("class").reset_index()
    folds = _read_csv(run_dir / layout.FOLDS)
    if folds.empty:
        return counts, pd.DataFrame()
    fold_of = dict(zip(folds["patient_id"].astype(str), folds["fold"], strict=True))
    table = manifest.table.assign(fold=manifest.table["patient_id"].astype(str).map(fold_of))
    rows = []
    stops = _stopping_sets(run_dir, units, keep)
    for fold, part in table.groupby("fold", sort=True):
        row: dict[str, object] = {"fold": int(fold)}
        for label, cls in part.groupby("label", sort=True):
            row[label] = f"{len(cls)} / {cls['patient_id'].nunique()}"
        if int(fold) in stops:
            patients, images = stops[int(fold)]
            row["early-stopping set (train side)"] = f"{images} / {patients}"
        rows.append(row)
    return counts, pd.DataFrame(rows)


def _stopping_sets(run_dir: Path, units: pd.DataFrame, keep: float) -> dict[int, tuple[int, int]]:
    """Per fold: (patients, images) held out of the training side for early stopping (from a classifier unit)."""
    found: dict[int, tuple[int, int]] = {}
    if units.empty:
        return found
    classify = units[(units["kind"] == "classify") & (units["keep"] == keep)]
    for fold, part in classify.groupby("fold"):
        record = _read_json(run_dir / part["folder"].iloc[0] / outputs.CLASSIFY_RUN)
        if "stop_patients" in record:
            found[int(fold)] = (len(record["stop_patients"]), int(record.get("stop_images", 0)))
    return found


def _protocol(spec: StudySpec, n_folds: int) -> str:
    split = spec.split
    keeps = ", ".join(f"{k:.0%}" for k in split.keep)
    if split.scheme == "dataset":
        text = "The dataset's own train/test split (patients disjoint); scored on its test set. "
    else:
        text = (f"Patient-level stratified {split.folds}-fold cross-validation (seed {split.seed}); "
                f"{n_folds if n_folds != split.folds else 'all'} fold(s) evaluated. ")
    if split.minority:
        text += (f"On each training side the {split.minority} patients are cut to nested fractions ({keeps}); the "
                 "validation fold keeps every patient and contains real images only. ")
    if spec.generators:
        parts = []
        for g in spec.generators:
            models = {"per_image": "one model per training image", "per_fold": "one model per fold",
                      "per_class": "one model per class"}[g.models]
            cap = f", at most {g.max_models} per fold" if g.max_models else ""
            cap += f", each on at most {g.max_images_per_model} images" if g.max_images_per_model else ""
            parts.append(f"{g.name} ({g.kind}, preset {g.preset}: {models}{cap} on "
                         f"{g.training_images.replace('_', ' ')} training images, "
                         f"{g.samples_per_model} samples per model)")
        text += ("Generators learn only from the fold's training images outside the early-stopping set: "
                 + "; ".join(parts) + ". ")
    stopping = split.stopping
    if stopping is not None:
        classes = stopping.classes
        text += (f"The early-stopping set is {stopping.fraction:.0%} of each fold's training patients of "
                 f"{'every class' if classes == 'all' else ', '.join(classes)}, carved before the minority cut and "
                 "the same at every fraction; the minority kept at fraction f is ceil(f x n) of the fold's n "
                 "training minority patients, drawn from the rest. ")
    classifiers = ", ".join(f"{c.model} ({c.preset})" for c in spec.classifiers)
    text += (f"Regimes {', '.join(spec.regimes)} train {classifiers} with seed(s) "
             f"{', '.join(map(str, spec.seeds))}; every condition selects its epoch (early stopping, or the best epoch "
             f"of all when early stopping is off) on the same held-out training patients, never on the validation "
             f"or test images, and is scored on the real validation fold. Differences are paired by fold against "
             f"`{spec.baseline}` (bootstrap 95% CI over folds, Wilcoxon signed-rank p).")
    return text


def verdict(paired: pd.DataFrame, keep: float, classifier: str, minority: str | None, n_folds: int) -> str:
    """The headline in one sentence: the best synthetic condition's balanced-accuracy change with its CI."""
    if n_folds < 2 or paired.empty:
        return ("With one fold there is no paired comparison or confidence interval: read the numbers below as "
                "single observations.")
    part = paired[(paired["keep"] == keep) & (paired["classifier"] == classifier)
                  & (paired["metric"] == "balanced_accuracy")]
    synthetic = part[part["condition"].str.contains(r"\[", regex=True)]
    part = synthetic if not synthetic.empty else part
    if part.empty:
        return "No condition could be compared with the baseline."
    best = part.sort_values("mean diff", ascending=False).iloc[0]
    low, high = best["95% CI low"], best["95% CI high"]
    if low > 0:
        reading = "an improvement (the CI excludes zero)"
    elif high < 0:
        reading = "a loss (the CI excludes zero)"
    else:
        reading = "no clear difference (the CI includes zero)"
    kept = f"with {minority} kept at {keep:.0%}, " if minority else ""
    return (f"{kept[:1].upper() + kept[1:]}the best synthetic condition, {best['condition']}, changed balanced "
            f"accuracy by {best['mean diff']:+.{DIGITS}f} (95% CI {low:+.{DIGITS}f} to {high:+.{DIGITS}f}, "
            f"{int(best['folds'])} folds, {classifier}) against {best['vs']}: {reading}.")


def _runtime(run_dir: Path, versions: dict) -> str:
    status = _read_json(run_dir / layout.STATUS)
    parts = []
    if status.get("started") and status.get("updated"):
        from sonosynth.progress import format_duration

        parts.append(f"last run took {format_duration(status['updated'] - status['started'])}")
        timings = status.get("timings", {})
        if timings:
            parts.append("computing: " + ", ".join(f"{v['computed']} {k} in {format_duration(v['seconds'])}"
                                                    for k, v in timings.items()))
        if status.get("reused"):
            parts.append(f"{status['reused']} unit(s) reused from the cache")
    if versions.get("hardware"):
        parts.append(f"on {versions['hardware']}")
    if versions.get("torch"):
        parts.append(f"torch {versions['torch']}")
    return "; ".join(parts) if parts else f"runtime not recorded (no {layout.STATUS})"


def _summary(run_dir: Path, spec: StudySpec, results: pd.DataFrame, units: pd.DataFrame, keep: float,
             classifier: str, versions: dict) -> Section:
    n_folds = int(results["fold"].nunique())
    counts, per_fold = _data_tables(run_dir, units, keep)
    paired = paired_table(results, spec.baseline, ("balanced_accuracy",))
    sentence = verdict(paired, keep, classifier, spec.split.minority, n_folds)
    protocol = _protocol(spec, n_folds)
    runtime = _runtime(run_dir, versions)
    fold_note = ("Per fold: images / patients of each class among the fold's patients (its validation side), and "
                 "images / patients of the early-stopping set carved from its training side.")
    markdown = (f"**Verdict.** {sentence}\n\n**Protocol.** {protocol}\n\n**Runtime.** {runtime}\n\n"
                f"**Data** (images and patients per class):\n\n{_markdown_table(counts)}\n\n")
    body = (f"<p class='verdict'><b>Verdict.</b> {html.escape(sentence)}</p>"
            f"<p><b>Protocol.</b> {html.escape(protocol)}</p><p><b>Runtime.</b> {html.escape(runtime)}</p>"
            f"<div class='row'><div><p><b>Data</b> (images and patients per class)</p>{html_table(counts)}</div>")
    if not per_fold.empty:
        markdown += f"{fold_note}\n\n{_markdown_table(per_fold)}\n"
        body += f"<div><p class='note'>{html.escape(fold_note)}</p>{html_table(per_fold)}</div>"
    body += "</div>"
    return Section("Summary", markdown, body)


# ------------------------------------------------------------------------------------------ curves
LOSS_FILES = ("loss.csv", "losses.csv", "train_log.csv")


def _generator_losses(folder: Path) -> list[pd.Series]:
    """The main training loss of each model in a fit unit (SinDDM loss.csv, SinGAN per-scale losses, guided log)."""
    curves = []
    for path in sorted(folder.rglob("*.csv")):
        if path.name not in LOSS_FILES:
            continue
        table = _read_csv(path)
        column = next((c for c in ("loss", "loss_g", "train_loss") if c in table), None)
        if column is None or table.empty:
            continue
        curves.append(pd.Series(table[column].astype(float).to_numpy(), index=np.arange(1, len(table) + 1)))
    return curves


def _curves_section(run_dir: Path, units: pd.DataFrame, keep: float, classifier: str) -> Section:
    section = Section("Training curves")
    if units.empty:
        return section
    at_keep = units[units["keep"] == keep]
    for fold in sorted(at_keep["fold"].unique()):
        part = at_keep[at_keep["fold"] == fold]
        generator_curves: dict[str, list[pd.Series]] = {}
        for _, unit in part[part["kind"] == "fit"].iterrows():
            generator_curves.setdefault(str(unit["name"]), []).extend(_generator_losses(run_dir / unit["folder"]))
        classifier_curves = {}
        for _, unit in part[(part["kind"] == "classify") & (part["classifier"] == classifier)].iterrows():
            losses = _read_csv(run_dir / unit["folder"] / outputs.CLASSIFY_LOSSES)
            if not losses.empty and str(unit["name"]) not in classifier_curves:
                losses = losses.assign(epoch=np.arange(1, len(losses) + 1))  # stages run one after another
                classifier_curves[str(unit["name"])] = losses
        if generator_curves or classifier_curves:
            section.images.append((f"fold {fold}, keep {keep:g}",
                                   figures.training_curves({k: v for k, v in generator_curves.items() if v},
                                                           classifier_curves, f"fold {fold}")))
    if section.images:
        note = ("Generator losses are each model's training loss (SinDDM/FewDDM denoising MSE, SinGAN generator "
                "loss per scale in order, guided diffusion loss), smoothed. Classifier losses are per epoch; "
                "the dashed line is the loss on the early-stopping patients.")
        section.markdown, section.html = note, f"<p class='note'>{html.escape(note)}</p>"
    return section


REGULAR = "real+regular"


def _paired_baselines(baseline: str, present: set[str]):
    """(baseline, condition filter or None, preface) of each paired table: the spec's baseline against every
    condition; and, when real+regular ran too, the synthetic conditions that also use regular augmentation
    against it (the lung study's question: do synthetic images add to regular augmentation?)."""
    yield baseline, None, ""
    if baseline != REGULAR and REGULAR in present:
        yield (REGULAR, lambda condition: condition.startswith("real+synthetic+regular"),
               "Synthetic images on top of regular augmentation, against regular augmentation alone. ")


# ------------------------------------------------------------------------------------------ quality
TABLE2_COLUMNS = (("sifid", "SIFID ↓"), ("ssim", "SSIM to source"), ("fid", "FID ↓"), ("kid", "KID ↓"),
                  ("copy_rate", "copy rate ↓"), ("diversity_ssim", "diversity (1-SSIM)"),
                  ("reader_auc", "reader AUC ↓"), ("reader_fake_detection", "fakes detected ↓"))


def table2(quality: pd.DataFrame) -> pd.DataFrame:
    """The lung study's Table 2 view: one row per generator and fraction, each metric mean ± std over folds."""
    from sonosynth.report.tables import mean_std

    rows = []
    for (generator, keep), part in quality.groupby(["generator", "keep"], sort=True):
        row: dict[str, object] = {"generator": generator, "minority kept": f"{keep:.0%}", "folds": len(part),
                                  "images": int(part["images"].sum()) if "images" in part else pd.NA}
        for column, label in TABLE2_COLUMNS:
            if column in part and part[column].notna().any():
                row[label] = mean_std(part[column].astype(float))
        rows.append(row)
    return pd.DataFrame(rows)


def ssim_note(spec: StudySpec) -> str:
    """What SSIM compares each sample with, true for each generator of the spec."""
    notes = []
    for g in spec.generators:
        if g.models == "per_image":
            notes.append(f"for {g.name}, against the sample's own training image (one model per image)")
        else:
            notes.append(f"for {g.name}, against the training image of its model most similar to the sample "
                         "(by NCC), as that model learned from several")
    return "SSIM to source is computed " + "; ".join(notes) + "." if notes else ""


def metrics_by_generator(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows: metrics (human names); columns: `<generator> <kept %>`, so many metrics stay narrow on screen."""
    wide = human_columns(summary).set_index(["generator", "minority kept"])
    table = wide.T
    table.columns = [f"{generator} {keep}" for generator, keep in table.columns]
    return table.apply(_format_metric_row, axis=1).rename_axis("metric").reset_index()


def _format_metric_row(row: pd.Series) -> pd.Series:
    """One number format per row: counts as integers, every other metric with DIGITS decimals."""
    values = pd.to_numeric(row, errors="coerce")
    if values.notna().all() and (values == values.round()).all():
        return values.map(lambda v: f"{int(v)}")
    return values.map(lambda v: "" if pd.isna(v) else f"{v:.{DIGITS}f}")


def _quality_sections(quality: pd.DataFrame, flags: pd.DataFrame, spec: StudySpec) -> list[Section]:
    if quality.empty:
        return []
    threshold = spec.quality.threshold
    numeric = quality.select_dtypes("number").columns.difference(["fold", "keep"])
    summary = quality.groupby(["generator", "keep"])[list(numeric)].mean().reset_index()
    summary["keep"] = summary["keep"].map(lambda k: f"{k:.0%}")
    names = quality.get("features", pd.Series(dtype=str)).dropna().astype(str).str.replace(r" \(.*\)$", "", regex=True)
    features = ", ".join(sorted(set(names)))
    explanation = (f"{ssim_note(spec)} SIFID, FID and KID are in the feature space of {features or 'n/a'}; the copy "
                   f"rate is the share of samples whose nearest real training image has NCC > {threshold:g}.")
    if spec.quality.features == "domain":
        hashes = sorted(set(quality.get("features_sha1", pd.Series(dtype=str)).dropna().astype(str)))
        explanation += (" The domain network is one small_cnn trained once on every real image of the study to tell "
                        "its classes apart (early stopping on held-out patients), so every fold and generator is "
                        f"measured in the same space (sha1 {', '.join(hashes) or 'n/a'}); no classifier of the study "
                        "is trained or chosen with it, so it leaks nothing into the classification results.")
    if "reader_auc" in quality and quality["reader_auc"].notna().any():
        explanation += (" The reader AUC is the automatic reader's (a CNN trained to tell the samples from real "
                        "images of patients the generator never saw; 0.5 = indistinguishable), 'fakes detected' its "
                        "share of samples called synthetic, beside Table 4's human rate.")
    sections = [
        _table_section("Image quality (Table 2 style; mean ± std over folds)", table2(quality), explanation),
        _table_section("All image-quality and memorization metrics (mean over folds)", metrics_by_generator(summary),
                       "One column per generator and kept fraction. Diversity: mean pairwise dissimilarity of the "
                       "samples, and of random crops of the real training images as a reference.", group_header=True),
    ]
    if "reader_auc" in quality and quality["reader_auc"].notna().any():
        label = "automatic reader AUC (0.5 = indistinguishable)"
        bars = Section("Automatic reader", images=[(label, figures.metric_bars(
            quality.dropna(subset=["reader_auc"]), "reader_auc", label, chance=0.5))])
        sections.append(bars)
    if flags.empty:
        text = f"No synthetic image exceeded NCC {threshold:g} with any real training image."
        sections.append(Section("Memorization flags", text, f"<p>{html.escape(text)}</p>"))
    else:
        columns = [c for c in ("fold", "keep", "generator", "path", "nearest_real", "nearest_patient", "ncc", "ssim")
                   if c in flags.columns]
        sections.append(_table_section(f"Memorization flags ({len(flags)} near-copies)",
                                       human_columns(flags[columns].head(50)),
                                       "Synthetic images whose nearest real training image exceeds the threshold "
                                       "(first 50)."))
    return sections


# ------------------------------------------------------------------------------------------ samples
def _sample_grids(run_dir: Path, keep: float) -> Section:
    """Per generator and class: random real images of the class above random samples of the class."""
    index = _read_csv(run_dir / layout.SYNTHETIC_INDEX)
    section = Section("Real and synthetic samples")
    if index.empty:
        return section
    index = index[index["keep"] == keep]
    if index.empty:
        return section
    first_fold = index["fold"].min()
    real = Manifest.read(run_dir / layout.MANIFEST)
    for _, entry in index[index["fold"] == first_fold].iterrows():
        synthetic = Manifest.read(run_dir / entry["manifest"])
        rows = []
        for label in synthetic.classes:
            fake = synthetic.with_labels([label])
            truth = real.with_labels([label]) if label in real.classes else None
            rng = np.random.default_rng(0)
            if truth is not None and len(truth):
                picks = rng.choice(len(truth), size=min(GRID_SAMPLES, len(truth)), replace=False)
                paths = truth.absolute_paths()
                rows.append((f"real {label}", [load_grayscale(paths[i]) for i in sorted(picks)]))
            picks = rng.choice(len(fake), size=min(GRID_SAMPLES, len(fake)), replace=False)
            paths = fake.absolute_paths()
            rows.append((f"{entry['generator']} {label}", [load_grayscale(paths[i]) for i in sorted(picks)]))
        caption = (f"{entry['generator']}, fold {first_fold}, keep {keep:g}: per class, random real images of the "
                   "class (any patient) above random synthetic images of that class")
        section.images.append((caption, _png_grid(rows)))
    return section


def with_training_accuracy(run_dir: Path, results: pd.DataFrame, units: pd.DataFrame) -> pd.DataFrame:
    """`results` plus `train_accuracy`: each classifier run's accuracy on its training batches at the epoch
    it kept (the last stage's best epoch), read from the run's `losses.csv` (the fetal study reports it)."""
    if units.empty or "classifier" not in units:
        return results
    rows = []
    for _, unit in units[units["kind"] == "classify"].iterrows():
        losses = _read_csv(run_dir / unit["folder"] / outputs.CLASSIFY_LOSSES)
        if losses.empty or "train_accuracy" not in losses:
            continue
        last = losses[losses["stage"] == losses["stage"].iloc[-1]]
        best = last[last["best"].astype(str) == "True"]
        row = (best if not best.empty else last).iloc[-1]
        rows.append({"fold": unit["fold"], "keep": unit["keep"], "condition": unit["name"],
                     "classifier": unit["classifier"], "seed": int(unit["seed"]),
                     "train_accuracy": float(row["train_accuracy"])})
    if not rows:
        return results
    found = pd.DataFrame(rows).drop_duplicates(["fold", "keep", "condition", "classifier", "seed"])
    return results.merge(found, on=["fold", "keep", "condition", "classifier", "seed"], how="left")


# ------------------------------------------------------------------------------------------ assembly
def read_run_spec(run_dir: Path) -> StudySpec:
    """The spec a run folder ran, validated as at `sonosynth run`; the report repeats none of its defaults."""
    path = run_dir / layout.SPEC
    if not path.is_file():
        raise SonosynthError(f"{run_dir}: not a sonosynth run folder (no {layout.SPEC}).")
    return load_spec(path)


def build_sections(run_dir: Path, spec: StudySpec | None = None) -> tuple[list[Section], pd.DataFrame, str]:
    spec = spec or read_run_spec(run_dir)
    results = _read_csv(run_dir / layout.RESULTS)
    if results.empty:
        raise SonosynthError(f"{run_dir}: no results.csv yet; run `sonosynth run SPEC` first.")
    results["generator"] = results["generator"].fillna("")
    confusions = _read_csv(run_dir / layout.CONFUSIONS)
    quality = _read_csv(run_dir / layout.QUALITY)
    units = _read_csv(run_dir / layout.UNITS)
    results = with_training_accuracy(run_dir, results, units)
    versions = _read_json(run_dir / layout.VERSIONS)
    keeps = spec.split.keep
    headline_keep = keeps[0]
    minority = spec.split.minority
    classifiers = list(dict.fromkeys(results["classifier"]))
    n_folds = int(results["fold"].nunique())
    baseline = spec.baseline
    kept = f"{minority or 'minority'} kept at {headline_keep:.0%}"

    sections = [_summary(run_dir, spec, results, units, headline_keep, classifiers[0], versions)]
    headline = overall_table(results, headline_keep, classifiers[0])
    headline_title = f"{classifiers[0]}, {kept} ({_folds_text(n_folds)})"
    sections.append(_table_section(f"Overall metrics, {headline_title}", headline,
                                   "Evaluated on real validation patients only. Macro-F1 is the mean of the "
                                   "per-class F1; the 95% CI is the t-interval of the mean over folds, clipped to [0, 1]."
                                   + (" Training accuracy: on the training batches (as augmented) at the epoch "
                                      "the classifier kept." if "training accuracy" in headline else "")))
    for classifier in classifiers:
        sections.append(_table_section(
            f"Per-class results (Table 3 layout), {classifier}, {kept}",
            table3(results, headline_keep, classifier, with_ci=n_folds > 1),
            f"Precision, recall and F1 per class, {_folds_text(n_folds)}"
            + ("; the 95% CI of each mean below it." if n_folds > 1 else "."), group_header=True))
    sections.append(_table_section(f"Accuracy per classifier and regime (fetal-study layout), {kept}",
                                   accuracy_table(results, headline_keep), f"Accuracy, {_folds_text(n_folds)}."))
    metrics = ("balanced_accuracy",) + ((f"f1:{minority}",) if minority else ())
    paired_note = (f"A mean difference > 0 favours the condition. The bootstrap CI resamples folds; with {n_folds} "
                   f"folds the smallest possible two-sided Wilcoxon p is {2 / 2 ** n_folds:.3g}, so read the CI and "
                   "the per-fold consistency, not p alone.")
    for against, only, why in _paired_baselines(baseline, set(results["condition"])):
        paired = paired_table(results, against, metrics)
        if only is not None and not paired.empty:
            paired = paired[paired["condition"].map(only)]
        if paired.empty:
            continue
        paired = paired.assign(keep=paired["keep"].map(lambda k: f"{k:.0%}"),
                               metric=paired["metric"].str.replace("balanced_accuracy", "balanced accuracy"))
        sections.append(_table_section(f"Paired comparison against {against} (fold by fold)", human_columns(paired),
                                       why + paired_note))
    cas = cas_table(results)
    if not cas.empty:
        cas = cas.assign(keep=cas["keep"].map(lambda k: f"{k:.0%}")).rename(columns={"keep": "minority kept"})
        sections.append(_table_section(
            "Classification accuracy score (CAS: synthetic-only over real-only balanced accuracy)", cas,
            "Ravuri & Vinyals 2019: the same classifier and fold trained on synthetic images only, over real only; "
            "1.0 means the synthetic images teach as much as the real ones. Mean ± std over folds."))
    if len(keeps) > 1:
        curve = fraction_table(results, classifiers[0])
        section = _table_section(f"Balanced accuracy vs % of {minority or 'minority'} patients kept ({classifiers[0]})",
                                 curve.assign(keep=curve["keep"].map(lambda k: f"{k:.0%}")).rename(
                                     columns={"keep": "minority kept", "count": "folds"}))
        section.images.append(("balanced accuracy vs kept fraction", figures.fraction_curve(curve, minority)))
        sections.append(section)
    curves = _curves_section(run_dir, units, headline_keep, classifiers[0])
    if curves.images:
        sections.append(curves)
    if not confusions.empty:
        note = ("Left: counts summed over folds (seeds averaged); right: row-normalised, each true class summing "
                "to 1, so the diagonal is each class's recall.")
        section = Section(f"Confusion matrices ({classifiers[0]}, {kept}, summed over folds)", note,
                          f"<p class='note'>{html.escape(note)}</p>")
        for condition in dict.fromkeys(confusions["condition"]):
            matrix = confusion_sum(confusions, headline_keep, classifiers[0], condition)
            if matrix.empty:
                continue
            section.markdown += f"\n**{condition}**\n\n{to_markdown(matrix, index=True)}\n"
            section.images.append((condition, figures.confusion_pair(matrix, condition)))
        sections.append(section)
    sections.extend(_quality_sections(quality, _read_csv(run_dir / layout.MEMORIZATION), spec))
    grids = _sample_grids(run_dir, headline_keep)
    if grids.images:
        sections.append(grids)
    reader = run_dir / layout.READER_STUDY_DIR
    if reader.is_dir():
        try:
            from sonosynth.reader_study.report import reader_study_section

            markdown, fragment = reader_study_section(reader)
            sections.append(Section("Reader study", markdown, fragment))
        except (ModuleNotFoundError, SonosynthError) as exc:
            sections.append(Section("Reader study", f"Reader-study folder not readable: {exc}",
                                    f"<p>Reader-study folder not readable: {html.escape(str(exc))}</p>"))
    per_fold = per_fold_overall(results)
    per_fold = per_fold[per_fold["classifier"] == classifiers[0]].drop(columns=["regime", "generator"])
    sections.append(_table_section("Per-fold scores", human_columns(per_fold.assign(
        keep=per_fold["keep"].map(lambda k: f"{k:.0%}")))))
    sections[-1].collapsed = True
    spec_text = (run_dir / layout.SPEC).read_text()
    sections.append(Section(
        "Exact spec and software",
        f"```yaml\n{spec_text}```\n\n" + "\n".join(f"- {k}: {v}" for k, v in versions.items()),
        f"<pre>{html.escape(spec_text)}</pre><ul>"
        + "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in versions.items()) + "</ul>",
        collapsed=True,
    ))
    return sections, headline, headline_title


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1240px;
padding:0 1rem;color:#222;line-height:1.45;font-size:15px}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
nav{background:#f7f7f7;padding:.5rem 1rem;font-size:.85rem}nav ol{margin:.3rem 0;columns:2}
.tw{max-width:100%;overflow-x:auto}
table.t{border-collapse:collapse;font-size:.72rem;margin:.4rem 0}
table.t td,table.t th{border:1px solid #ddd;padding:2px 4px;vertical-align:top}
table.t td:first-child{max-width:14rem;overflow-wrap:anywhere}
table.t th{background:#f4f4f4;font-weight:600}table.t td.n{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}
table.t small{color:#666}
figure{display:inline-block;margin:.5rem;max-width:100%;vertical-align:top}figure img{max-width:100%;height:auto}
figcaption{font-size:.75rem;color:#555;max-width:720px}
pre{background:#f8f8f8;padding:.7rem;font-size:.75rem;overflow:auto;max-width:100%;white-space:pre-wrap}
.note{font-size:.85rem;color:#444}.verdict{font-size:1.05rem;background:#eef5ff;padding:.6rem;border-radius:4px}
.row{display:flex;flex-wrap:wrap;gap:1.5rem}.row>div{max-width:100%}
details summary{cursor:pointer;font-size:1.15rem;font-weight:600;margin-top:2rem}
"""


def write_report(run_dir: str | os.PathLike) -> Report:
    run_dir = Path(run_dir)
    spec = read_run_spec(run_dir)
    name = spec.name
    sections, headline, headline_title = build_sections(run_dir, spec)
    figures_dir = run_dir / layout.FIGURES_DIR
    markdown = [f"# sonosynth study: {name}", ""]
    toc = "".join(f"<li><a href='#{s.anchor}'>{html.escape(s.title)}</a></li>" for s in sections)
    parts = [(f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
              f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(name)}</title>"
              f"<style>{STYLE}</style></head><body><h1>sonosynth study: {html.escape(name)}</h1>"
              f"<nav><b>Contents</b><ol>{toc}</ol></nav>")]
    for number_, section in enumerate(sections):
        markdown += [f"## {section.title}", "", section.markdown, ""]
        figures_html = ""
        for index, (caption, png) in enumerate(section.images):
            figure_path = figures_dir / f"s{number_:02d}-{index:02d}.png"
            figure_path.parent.mkdir(parents=True, exist_ok=True)
            figure_path.write_bytes(png)
            markdown.append(f"![{caption}]({layout.FIGURES_DIR}/{figure_path.name})\n")
            figures_html += (f"<figure><img src='{_data_uri(png)}' alt='{html.escape(caption)}'>"
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        if section.collapsed:
            parts.append(f"<details id='{section.anchor}'><summary>{html.escape(section.title)}</summary>"
                         f"{section.html}{figures_html}</details>")
        else:
            parts.append(f"<h2 id='{section.anchor}'>{html.escape(section.title)}</h2>{section.html}{figures_html}")
    parts.append("</body></html>")
    markdown_path, html_path = run_dir / layout.REPORT_MARKDOWN, run_dir / layout.REPORT_HTML
    write_text_atomic(markdown_path, "\n".join(markdown))
    write_text_atomic(html_path, "".join(parts))
    return Report(markdown_path, html_path, headline, headline_title)
