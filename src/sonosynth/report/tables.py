"""Study tables from `results.csv`: the lung study's Table 3, the fetal study's accuracy table,
balanced accuracy per minority fraction, paired comparisons against the baseline, and CAS.

Seeds are averaged within a fold first, so the spread reported is the spread over folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sonosynth.metrics.classification import classification_accuracy_score, paired_comparison

METRIC_NAMES = {"precision": "Prec.", "recall": "Rec.", "f1": "F1"}


def mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


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
    numeric = ["precision", "recall", "f1", "support", "accuracy", "balanced_accuracy"]
    return results.groupby(keys, dropna=False, sort=False)[numeric].mean().reset_index()


def condition_order(results: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(results["condition"]))


def table3(results: pd.DataFrame, keep: float, classifier: str) -> pd.DataFrame:
    """Rows: conditions; columns: per-class Prec./Rec./F1 and Acc./Bal. Acc., as mean ± std over folds."""
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
                row[f"{label} {short}"] = mean_std(part[metric])
        overall = subset.drop_duplicates("fold")
        row["Acc."] = mean_std(overall["accuracy"])
        row["Bal. Acc."] = mean_std(overall["balanced_accuracy"])
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_table(results: pd.DataFrame, keep: float) -> pd.DataFrame:
    """The fetal study's layout: rows conditions, columns classifiers, accuracy mean ± std."""
    data = per_fold(results)
    data = data[data["keep"] == keep].drop_duplicates(["fold", "condition", "classifier"])
    table = data.groupby(["condition", "classifier"], sort=False)["accuracy"].apply(mean_std).unstack("classifier")
    return table.reindex([c for c in condition_order(results) if c in table.index]).reset_index()


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
            return "" if np.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "\\|")
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
