"""Study tables from `results.csv`: the lung study's Table 3, the fetal study's accuracy table,
balanced accuracy per minority fraction, paired comparisons against the baseline, and CAS.

Seeds are averaged within a fold first, so the spread reported is the spread over folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sonosynth.metrics.classification import classification_accuracy_score, paired_comparison

METRIC_NAMES = {"precision": "Prec.", "recall": "Rec.", "f1": "F1"}
DIGITS = 3  # every score in the report: 3 decimals

# Human names for the columns of results.csv and quality.csv (the report's tables use these).
COLUMN_NAMES = {
    "fold": "fold", "keep": "minority kept", "condition": "condition", "classifier": "classifier", "seed": "seed",
    "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
    "generator": "generator", "images": "images", "checkpoints": "models", "sifid": "SIFID ↓",
    "sifid_std": "SIFID std", "ssim": "SSIM to source", "ssim_std": "SSIM std", "fid": "FID ↓", "kid": "KID ↓",
    "kid_std": "KID std", "copies": "near-copies", "copy_rate": "copy rate ↓", "diversity_ssim": "diversity (1-SSIM)",
    "crops_diversity_ssim": "real crops diversity (1-SSIM)", "diversity_feature": "diversity (features)",
    "crops_diversity_feature": "real crops diversity (features)", "reader_auc": "automatic reader AUC",
    "reader_accuracy": "automatic reader accuracy", "reader_fake_detection": "fakes detected by the reader",
    "cas": "CAS (synthetic-only over real-only balanced accuracy)",
    "mean diff": "mean difference", "95% CI low": "95% CI low", "95% CI high": "95% CI high",
    "Wilcoxon p": "Wilcoxon p", "metric": "metric", "folds": "folds", "vs": "against",
}


def human_columns(table: pd.DataFrame) -> pd.DataFrame:
    return table.rename(columns=lambda c: COLUMN_NAMES.get(c, str(c).replace("_", " ")))


def number(value: object, digits: int = DIGITS) -> str:
    """Scores with `digits` decimals, counts as integers, missing as blank."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value)}"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"
    return str(value)


COUNT_COLUMNS = {"fold", "folds", "seed", "images", "models", "checkpoints", "near-copies", "copies", "support",
                 "count", "patients"}


def counts_as_integers(table: pd.DataFrame) -> pd.DataFrame:
    """Count columns that became floats (means over folds, NaN-padded) shown as integers when they are whole."""
    table = table.copy()
    for column in table.columns:
        values = table[column]
        if str(column) in COUNT_COLUMNS and pd.api.types.is_float_dtype(values):
            whole = values.dropna()
            if (whole == whole.round()).all():
                table[column] = values.round().astype("Int64")
    return table


def ci95(values: pd.Series) -> tuple[float, float] | None:
    """The 95% t-interval of the mean over folds (None with fewer than two folds)."""
    from scipy import stats

    values = values.dropna().astype(float)
    if len(values) < 2:
        return None
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def mean_std(values: pd.Series) -> str:
    """`mean ± std` over folds; one fold gives its single value (there is no spread to show)."""
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.{DIGITS}f}"
    return f"{values.mean():.{DIGITS}f} ± {values.std(ddof=1):.{DIGITS}f}"


def ci_text(values: pd.Series, bounds: tuple[float, float] = (0.0, 1.0)) -> str:
    """The 95% CI as text, clipped to the metric's range (a t-interval of accuracies near 1 passes 1)."""
    interval = ci95(values)
    if interval is None:
        return ""
    low, high = max(interval[0], bounds[0]), min(interval[1], bounds[1])
    return f"[{low:.{DIGITS}f}, {high:.{DIGITS}f}]"


def cas_table(results: pd.DataFrame) -> pd.DataFrame:
    """CAS per generator, fraction and classifier: mean ± std over folds (and seeds)."""
    pairs = classification_accuracy_score(results)
    rows = [{"generator": generator, "keep": keep, "classifier": classifier, "folds": part["fold"].nunique(),
             "CAS": mean_std(part["cas"]),
             "synthetic-only BA": mean_std(part["synthetic_balanced_accuracy"]),
             "real BA": mean_std(part["real_balanced_accuracy"])}
            for (generator, keep, classifier), part in pairs.groupby(["generator", "keep", "classifier"], sort=True)]
    return pd.DataFrame(rows)


def per_fold(results: pd.DataFrame) -> pd.DataFrame:
    """One row per fold x keep x condition x classifier x class, seeds averaged."""
    keys = ["fold", "keep", "condition", "regime", "generator", "classifier", "class"]
    numeric = [c for c in ("precision", "recall", "f1", "support", "accuracy", "balanced_accuracy",
                           "train_accuracy") if c in results]
    return results.groupby(keys, dropna=False, sort=False)[numeric].mean().reset_index()


def per_fold_overall(results: pd.DataFrame) -> pd.DataFrame:
    """One row per fold x keep x condition x classifier: accuracy, balanced accuracy, macro-F1 (mean of class F1)."""
    data = per_fold(results)
    keys = ["fold", "keep", "condition", "regime", "generator", "classifier"]
    first = data.groupby(keys, dropna=False, sort=False)[[c for c in ("accuracy", "balanced_accuracy",
                                                                       "train_accuracy") if c in data]].first()
    first["macro_f1"] = data.groupby(keys, dropna=False, sort=False)["f1"].mean()
    return first.reset_index()


def overall_table(results: pd.DataFrame, keep: float, classifier: str) -> pd.DataFrame:
    """Rows: conditions; each overall metric as mean ± std over folds beside its 95% CI."""
    data = per_fold_overall(results)
    data = data[(data["keep"] == keep) & (data["classifier"] == classifier)]
    metrics = [("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro-F1"), ("accuracy", "accuracy")]
    if "train_accuracy" in data and data["train_accuracy"].notna().any():
        metrics.append(("train_accuracy", "training accuracy"))
    rows = []
    for condition in condition_order(results):
        part = data[data["condition"] == condition]
        if part.empty:
            continue
        row = {"condition": condition, "folds": int(part["fold"].nunique())}
        for column, name in metrics:
            row[name] = mean_std(part[column])
            row[f"{name} 95% CI"] = ci_text(part[column])
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty and table["folds"].max() < 2:
        table = table.drop(columns=[c for c in table.columns if c.endswith("95% CI")])
    return table


def condition_order(results: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(results["condition"]))


def table3(results: pd.DataFrame, keep: float, classifier: str, with_ci: bool = False) -> pd.DataFrame:
    """Rows: conditions; columns: per-class Prec./Rec./F1 and Acc./Bal. Acc., as mean ± std over folds.

    `with_ci` adds each cell's 95% CI on a second line (`mean ± std\n[low, high]`).
    """
    def cell(values: pd.Series) -> str:
        text = mean_std(values)
        interval = ci_text(values) if with_ci else ""
        return f"{text}\n{interval}" if interval else text

    data = per_fold(results)
    data = data[(data["keep"] == keep) & (data["classifier"] == classifier)]
    classes = sorted(data["class"].unique())
    rows = []
    for condition in condition_order(results):
        subset = data[data["condition"] == condition]
        if subset.empty:
            continue
        row = {"condition": condition}
        for label in classes:
            part = subset[subset["class"] == label]
            for metric, short in METRIC_NAMES.items():
                row[f"{label} {short}"] = cell(part[metric])
        overall = subset.drop_duplicates("fold")
        row["Acc."] = cell(overall["accuracy"])
        row["Bal. Acc."] = cell(overall["balanced_accuracy"])
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_table(results: pd.DataFrame, keep: float) -> pd.DataFrame:
    """The fetal study's layout: rows conditions, columns classifiers, accuracy mean ± std."""
    data = per_fold(results)
    data = data[data["keep"] == keep].drop_duplicates(["fold", "condition", "classifier"])
    table = data.groupby(["condition", "classifier"], sort=False)["accuracy"].apply(mean_std).unstack("classifier")
    table = table.reindex([c for c in condition_order(results) if c in table.index]).reset_index()
    table.columns.name = None  # else the HTML shows an empty "classifier" header cell
    return table


def fraction_table(results: pd.DataFrame, classifier: str) -> pd.DataFrame:
    """Balanced accuracy (mean, std over folds) per condition and minority fraction."""
    data = per_fold(results)
    data = data[data["classifier"] == classifier].drop_duplicates(["fold", "keep", "condition"])
    grouped = data.groupby(["condition", "keep"], sort=False)["balanced_accuracy"]
    return grouped.agg(["mean", "std", "count"]).reset_index()


def paired_table(results: pd.DataFrame, baseline: str, metrics: tuple[str, ...] = ("balanced_accuracy",),
                 minority: str | None = None) -> pd.DataFrame:
    """Every condition against the baseline regime, fold by fold: mean difference, bootstrap CI, Wilcoxon p."""
    data = per_fold(results)
    rows = []
    for (keep, classifier), part in data.groupby(["keep", "classifier"], sort=False):
        overall = part.drop_duplicates(["fold", "condition"]).set_index(["condition", "fold"])
        base_rows = part[part["condition"] == baseline]
        if base_rows.empty:
            continue
        for condition in condition_order(part):
            if condition == baseline:
                continue
            for metric in metrics:
                if metric.startswith("f1:"):
                    label = metric.split(":", 1)[1]
                    scores = part[part["class"] == label].set_index(["condition", "fold"])["f1"]
                else:
                    scores = overall[metric]
                try:
                    a, b = scores.loc[baseline], scores.loc[condition]
                except KeyError:
                    continue
                folds = a.index.intersection(b.index)
                if len(folds) < 2:
                    continue
                comparison = paired_comparison(a.loc[folds].to_numpy(), b.loc[folds].to_numpy())
                rows.append({
                    "keep": keep, "classifier": classifier, "condition": condition, "vs": baseline,
                    "metric": metric.replace("f1:", "F1 "), "folds": len(folds),
                    "mean diff": comparison.mean_difference, "95% CI low": comparison.ci_low,
                    "95% CI high": comparison.ci_high, "Wilcoxon p": comparison.p_value,
                })
    return pd.DataFrame(rows)


def confusion_sum(confusions: pd.DataFrame, keep: float, classifier: str, condition: str) -> pd.DataFrame:
    """Confusion counts summed over folds (and seeds averaged), rows true, columns predicted."""
    part = confusions[(confusions["keep"] == keep) & (confusions["classifier"] == classifier)
                      & (confusions["condition"] == condition)]
    per_seed = part.groupby(["true", "predicted", "seed"])["count"].sum().reset_index()
    matrix = per_seed.groupby(["true", "predicted"])["count"].mean().unstack("predicted").fillna(0)
    return matrix.round(1) if not np.allclose(matrix % 1, 0) else matrix.astype(int)


def to_markdown(table: pd.DataFrame, index: bool = False) -> str:
    """A Markdown pipe table without extra dependencies (pandas' to_markdown needs tabulate)."""
    frame = table.reset_index() if index else table
    def cell(value: object) -> str:
        if isinstance(value, float):
            # Rounding noise (a paired mean of -2.2e-17 where folds tie) prints as the zero it is.
            return "" if np.isnan(value) else f"{0.0 if abs(value) < 1e-12 else value:.4g}"
        return str(value).replace("|", "\\|")
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
