"""`sonosynth run SPEC --dry-run`: validate the whole spec, then show the study plan, training nothing.

Validation comes first and touches no data: `resolve_study` resolves every generator preset and
override, sampling setting and classifier training config, and builds every classifier on the meta
device (no memory) so an unknown architecture option fails too; each error names its spec field
(`generators[1].overrides.dim`). Only then are the real images ingested (into the run folder's data
folder, where the real run reuses them) and split, and the plan is built and counted.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sonosynth.data.manifest import Manifest
from sonosynth.experiment.plan import (
    UNIT_KINDS,
    ResolvedStudy,
    StudyPlan,
    build_plan,
    fold_list,
    resolve_study,
)
from sonosynth.experiment.spec import StudySpec


@dataclass(frozen=True)
class PlanSummary:
    """What a plan will do, in the units a user budgets: models, images, trainings."""

    units: dict[str, int]  # unit kind -> count, every kind of plan.UNIT_KINDS (features: 0 or the study's 1)
    models: dict[str, int]  # generator name -> fit units
    synthetic_images: dict[str, int]  # generator name -> images drawn over the whole study
    classifier_trainings: dict[str, int]  # classifier model -> classify units
    training_stages: int  # classifier training stages over all classify units (pretrain + finetune = 2)
    folds: list[int]
    keeps: list[float]
    real_images: int
    patients: int

    def table(self) -> pd.DataFrame:
        rows = [("units", kind, n) for kind, n in self.units.items()]
        rows += [("generator models", name, n) for name, n in self.models.items()]
        rows += [("synthetic images", name, n) for name, n in self.synthetic_images.items()]
        rows += [("classifier trainings", name, n) for name, n in self.classifier_trainings.items()]
        rows += [("classifier training stages", "all", self.training_stages)]
        return pd.DataFrame(rows, columns=["what", "of", "count"])


@dataclass(frozen=True)
class DryRun:
    study: ResolvedStudy
    manifest: Manifest
    folds: pd.DataFrame
    plan: StudyPlan
    summary: PlanSummary


def summarize(study: ResolvedStudy, plan: StudyPlan, manifest: Manifest) -> PlanSummary:
    spec = study.spec
    generator_of_fit: dict[str, str] = {}
    models: Counter = Counter()
    images: Counter = Counter()
    for (_, _, name), keys in plan.synthetic_sets.items():
        base = study.base_generator(name)
        for key in keys:
            unit = plan.unit(key)
            fit = unit.depends_on[0]
            if fit not in generator_of_fit:
                generator_of_fit[fit] = base
    for fit, name in generator_of_fit.items():
        models[name] += 1
    seen: set[str] = set()
    for (_, _, name), keys in plan.synthetic_sets.items():
        for key in keys:
            if key not in seen:
                seen.add(key)
                images[study.base_generator(name)] += int(plan.unit(key).payload["n"])
    trainings: Counter = Counter()
    stages = 0
    for unit in plan.of_kind("classify"):
        trainings[unit.payload["model"]] += 1
        stages += 2 if unit.payload["regime"] == "pretrain-synthetic->finetune-real" else 1
    kinds = Counter(unit.kind for unit in plan.units)
    return PlanSummary({k: kinds.get(k, 0) for k in UNIT_KINDS}, dict(models),
                       dict(images), dict(trainings), stages, fold_list(spec), list(spec.split.keep), len(manifest),
                       int(manifest.table["patient_id"].nunique()))


def _count(manifest: Manifest, label: str) -> str:
    if len(manifest) == 0:
        return "0 / 0"
    table = manifest.table[manifest.table["label"] == label]
    return f"{table['patient_id'].nunique()} / {len(table)}"


def training_sides(result: DryRun) -> pd.DataFrame:
    """Patients / images per class that classifiers fit on and that select their epoch, per fold and fraction."""
    from sonosynth.data.split import split_fold

    rows = []
    for (fold, keep), stop in result.plan.stopping_sets.items():
        held = set(stop.table["patient_id"])
        train = split_fold(result.manifest, result.folds, fold, keep, held if result.study.spec.split.stopping
                           else ()).train
        fit = train.where(~train.table["patient_id"].isin(held))
        for label in result.manifest.classes:
            rows.append({"fold": fold, "keep": keep, "class": label,
                         "fit patients / images": _count(fit, label), "stopping patients / images": _count(stop, label)})
    return pd.DataFrame(rows)


def dry_run(spec: StudySpec, run_dir: str | os.PathLike, progress: bool = False) -> DryRun:
    """Validate `spec` (no data touched), then ingest and split its data and build the plan (nothing trains)."""
    from sonosynth.experiment.runner import make_study_folds, prepare_data

    study = resolve_study(spec)
    manifest = prepare_data(spec, Path(run_dir), progress=progress)
    folds = make_study_folds(spec, manifest)
    plan = build_plan(study, manifest, folds)
    return DryRun(study, manifest, folds, plan, summarize(study, plan, manifest))
