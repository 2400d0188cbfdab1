"""Which images a classifier trains on, with which augmentation, in which stages: `plan_regime`.

`plan_regime` is a pure function from (regime, real training Manifest, optional SyntheticSet) to a
TrainingPlan; the table of regimes is in the package docstring (`sonosynth.classify.regimes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sonosynth.data.manifest import Manifest, concat
from sonosynth.errors import InputDataError, SonosynthError

REGIMES: tuple[str, ...] = (
    "real",
    "real+regular",
    "real+synthetic",
    "real+synthetic+regular",
    "synthetic-only",
    "pretrain-synthetic->finetune-real",
    "mixed",
)
NEEDS_SYNTHETIC = frozenset(r for r in REGIMES if "synthetic" in r or r == "mixed")
ALL_ORIGINS = frozenset({"real", "synthetic"})



@dataclass(frozen=True)
class Stage:
    """One training run: its images and which origins among them get the regular augmentation."""

    name: str  # "train", or "pretrain" / "finetune"
    images: Manifest
    augment_origins: frozenset[str] = frozenset()
    init_from_previous: bool = False  # start from the checkpoint the previous stage saved

    def augment_rows(self) -> list[bool]:
        return self.images.table["origin"].isin(sorted(self.augment_origins)).tolist()

    def summary(self) -> pd.DataFrame:
        counts = self.images.table.groupby(["origin", "label"]).size().rename("images").reset_index()
        counts.insert(0, "stage", self.name)
        counts["augmented"] = counts["origin"].isin(sorted(self.augment_origins))
        return counts


@dataclass(frozen=True)
class TrainingPlan:
    regime: str
    stages: tuple[Stage, ...]

    def summary(self) -> pd.DataFrame:
        return pd.concat([stage.summary() for stage in self.stages], ignore_index=True)


def only_origin(manifest: Manifest, origin: str, role: str) -> Manifest:
    wrong = manifest.table["origin"] != origin
    if wrong.any():
        raise InputDataError(
            f"{manifest.root}: the {role} manifest has {int(wrong.sum())} row(s) whose origin is not {origin!r}; "
            f"pass real images as the dataset and generated ones with --synthetic."
        )
    return manifest


def plan_regime(regime: str, real: Manifest, synthetic: Manifest | None = None,
                augment_real: bool = False) -> TrainingPlan:
    """The stages of `regime` over the real training images and (for the synthetic regimes) a SyntheticSet.

    `augment_real` adds the regular augmentation to the real images of every stage (the fetal study
    augmented its real images whatever the regime; its synthetic ones it did not).
    """
    plan = _plan_regime(regime, real, synthetic)
    if not augment_real:
        return plan
    return TrainingPlan(regime, tuple(
        Stage(s.name, s.images, s.augment_origins | {"real"}, s.init_from_previous) for s in plan.stages))


def _plan_regime(regime: str, real: Manifest, synthetic: Manifest | None = None) -> TrainingPlan:
    if regime not in REGIMES:
        raise SonosynthError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}.")
    only_origin(real, "real", "real training")
    if regime in NEEDS_SYNTHETIC:
        if synthetic is None or len(synthetic) == 0:
            raise SonosynthError(f"regime {regime!r} needs synthetic images; pass a SyntheticSet with --synthetic.")
        only_origin(synthetic, "synthetic", "synthetic")
    if regime in ("real", "real+regular"):
        augment = ALL_ORIGINS if regime == "real+regular" else frozenset()
        return TrainingPlan(regime, (Stage("train", real, augment),))
    if regime == "synthetic-only":
        return TrainingPlan(regime, (Stage("train", synthetic),))
    if regime == "pretrain-synthetic->finetune-real":
        return TrainingPlan(regime, (Stage("pretrain", synthetic), Stage("finetune", real, init_from_previous=True)))
    pool = concat([real, synthetic], root=real.root)
    augment = ALL_ORIGINS if regime == "real+synthetic+regular" else frozenset()
    return TrainingPlan(regime, (Stage("train", pool, augment),))
