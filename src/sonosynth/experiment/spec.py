"""The study spec: one YAML file that says everything a study does.

Every field is documented here (the YAML presets in `configs/` show them in use); unknown keys
are errors that name the key, so a typo never silently runs a different study.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from sonosynth.classify.regimes import NEEDS_SYNTHETIC as SYNTHETIC_REGIMES
from sonosynth.classify.regimes import REGIMES
from sonosynth.config import StrictModel, deep_merge, format_validation_error, read_yaml
from sonosynth.data.fetal_planes import FetalPlanesIngestOptions
from sonosynth.data.folder import FolderIngestOptions
from sonosynth.data.phantom_dataset import PhantomOptions
from sonosynth.data.pocus import PocusIngestOptions
from sonosynth.errors import SonosynthError


class PocusData(StrictModel):
    """Ingest the POCUS lung-ultrasound tree into the run folder first."""

    source: Path = Field(description="the POCUS data folder (with dataset_metadata.csv)")
    options: PocusIngestOptions = Field(PocusIngestOptions(), description="as the `ingest pocus` flags")


class FolderData(StrictModel):
    """Ingest class sub-folders (or a CSV listing of images and labels) into the run folder first."""

    source: Path = Field(description="the dataset folder or CSV listing")
    options: FolderIngestOptions = Field(FolderIngestOptions(), description="as the `ingest folder` flags")


class FetalPlanesData(StrictModel):
    """Ingest FETAL_PLANES_DB (its CSV and Images/ folder) into the run folder first."""

    source: Path = Field(description="the FETAL_PLANES_DB folder (with FETAL_PLANES_DB_data.csv and Images/)")
    options: FetalPlanesIngestOptions = Field(FetalPlanesIngestOptions(), description="as the `ingest fetal-planes` flags")


DATA_SOURCES = ("manifest", "pocus", "folder", "fetal_planes", "phantom")


class DataSpec(StrictModel):
    """Where the real images come from: exactly one of manifest, pocus, folder, fetal_planes, phantom."""

    manifest: Path | None = Field(None, description="an existing manifest.csv (or its folder)")
    pocus: PocusData | None = Field(None, description="ingest the POCUS lung-ultrasound tree")
    folder: FolderData | None = Field(None, description="ingest class sub-folders or a CSV listing")
    fetal_planes: FetalPlanesData | None = Field(None, description="ingest FETAL_PLANES_DB (patients, train/test)")
    phantom: PhantomOptions | None = Field(None, description="simulate the phantom dataset")

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSpec:
        given = [k for k in DATA_SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DATA_SOURCES)} (got {given or 'none'})")
        return self


class StoppingSpec(StrictModel):
    """The early-stopping (model-selection) set, carved from each fold's whole training side before the minority cut."""

    fraction: float = Field(0.2, gt=0, lt=1, description="share of the fold's training patients of each class held "
                            "out (at least one per class with 3+ patients, never a class's last)")
    classes: list[str] | Literal["all"] = Field("all", description="classes whose patients are held out; others "
                                                "give none (e.g. leave the minority out of it)")


class SplitSpec(StrictModel):
    scheme: Literal["kfold", "dataset"] = Field(
        "kfold", description="kfold: patient-level stratified k-fold; dataset: the data's own train/test split "
        "(the manifest's `subset` column, e.g. FETAL_PLANES_DB's Train flag) as one fold evaluated on the test set")
    folds: int = Field(5, ge=2, description="number of patient-level folds (kfold)")
    seed: int = Field(0, description="seed of the fold assignment and minority ranks")
    minority: str | None = Field(None, description="class cut to `keep` fractions on the training side")
    keep: list[float] = Field([1.0], description="fractions of minority patients kept; the first is the headline")
    run_folds: list[int] | None = Field(None, description="evaluate only these folds (default: all)")
    stopping: StoppingSpec | None = Field(
        None, description="the early-stopping set as a split setting: carved from the fold's whole training side "
        "first, the same at every keep fraction, and the minority kept at fraction f is then ceil(f x n) of the "
        "fold's n training minority patients, drawn from those outside it (the lung study's 25%). Unset: the "
        "first classifier's stop_fraction is carved from the training side after the minority cut")

    @field_validator("keep")
    @classmethod
    def _fractions(cls, keep: list[float]) -> list[float]:
        if not keep or any(not 0 < k <= 1 for k in keep):
            raise ValueError("keep fractions must be in (0, 1] and at least one is needed")
        return keep


class GeneratorSpec(StrictModel):
    name: str = Field(description="display name in tables, e.g. SinDDM; unique within the spec")
    kind: str = Field(description="registered generator: sinddm, singan, guided")
    preset: str = Field("cpu", description="preset name of the generator (smoke, cpu, paper) or a YAML file")
    overrides: dict[str, Any] = Field({}, description="config fields overriding the preset")
    models: Literal["per_image", "per_fold", "per_class"] = Field(
        "per_image",
        description="per_image: one model per training image (SinDDM, SinGAN); per_fold: one model on all the "
        "fold's training images of `classes` (FewDDM); per_class: one model per class",
    )
    classes: list[str] | Literal["all"] | None = Field(
        None, description="classes the generator learns and synthesizes: a list, `all` (the guided model), "
        "or unset for the minority class"
    )
    training_images: Literal["all", "stills", "one_per_source"] = Field(
        "one_per_source",
        description="which training images feed the generator: all frames, still images only (the lung study), "
        "or one frame per source clip/still",
    )
    image_choice: Literal["first", "typical"] = Field(
        "first",
        description="which candidates fill max_models and max_images_per_model: first (manifest order) or "
        "typical (the images closest to the rest of their class first, compared as 32 px thumbnails; see "
        "experiment/image_choice.py), so a capped FewDDM learns one probe geometry and no model learns an outlier",
    )
    max_models: int | None = Field(None, ge=1, description="cap on models per fold (CPU presets)")
    max_images_per_model: int | None = Field(
        None, ge=1, description="cap on training images per model: a per_fold or per_class model learns from the "
        "first N of its images (in image_choice order). The lung study's FewDDM learned from 2-3 images; with a cap, "
        "folds whose training sides share those N images share one cached model")
    samples_per_model: int = Field(32, ge=1, description="synthetic images drawn from each model (per class)")
    samples_per_training_image: bool = Field(
        False, description="multiply samples_per_model by the model's number of training images, so a FewDDM "
        "model on k images adds as many images as k SinDDM models (the lung study's rule)"
    )
    sample_settings: dict[str, Any] = Field({}, description="extra sampling settings (guidance, steps, size)")
    gpus: int = Field(1, ge=1, description="GPUs one fit of this generator trains on: above 1, the fit unit asks "
                      "for that many GPUs of one node and runs one DDP process per GPU (generators that support "
                      "it: guided)")
    rounds: list[int] | None = Field(
        None, description="sampling rounds as arms: each round draws samples_per_model images per class with its "
        "own seed, and each listed k is one arm on rounds 1..k, named `<name>-<k>round(s)` in the tables "
        "(the fetal study's [1, 2]: 30,000 and 60,000 images); unset: one round, named `<name>`",
    )

    @field_validator("rounds")
    @classmethod
    def _rounds(cls, rounds: list[int] | None) -> list[int] | None:
        if rounds is not None and (not rounds or any(r < 1 for r in rounds) or sorted(set(rounds)) != rounds):
            raise ValueError("rounds must be increasing positive round counts, e.g. [1, 2]")
        return rounds

    def arms(self) -> list[tuple[str, int]]:
        """(arm name, rounds it uses): the synthetic sets this generator contributes to the tables."""
        if self.rounds is None:
            return [(self.name, 1)]
        return [(f"{self.name}-{k}round{'s' if k > 1 else ''}", k) for k in self.rounds]


class StudyClassifierSpec(StrictModel):
    """One classifier of the study: a zoo model, its training preset and starting weights."""

    model: str = Field(description="classifier zoo name, e.g. small_cnn, pocovidnet, resnet50")
    preset: str = Field("cpu", description="training preset (smoke, cpu, paper) or a YAML file")
    overrides: dict[str, Any] = Field({}, description="training config fields overriding the preset")
    options: dict[str, Any] = Field({}, description="architecture options of the zoo model, e.g. pocovidnet's "
                                    "trainable_conv_layers and head_pooling (checked when the spec is loaded)")
    pretrained: str = Field("none", description="none | imagenet | path to a sonosynth checkpoint")
    weights: Path | None = Field(None, description="local ImageNet weights file for pretrained=imagenet")


QUALITY_FEATURES = ("domain", "classifier", "random_cnn", "inception")


class QualitySpec(StrictModel):
    """Image-quality and memorization metrics of every synthetic set, and the feature space of SIFID/FID/KID."""

    enabled: bool = Field(True, description="compute image-quality and memorization metrics per generator")
    features: Literal["domain", "classifier", "random_cnn", "inception"] = Field(
        "domain",
        description="feature space for SIFID/FID/KID. domain: ONE small_cnn trained once per study (the `features` "
        "unit) to tell the study's classes apart on ALL real images of its manifest, seed fixed, early stopping on "
        "held-out patients; it only defines the space in which synthetic images are compared to real ones (no "
        "classifier of the study is trained, initialised or selected with it), so seeing every patient leaks "
        "nothing into the classification results, and every fold's and generator's rows share one space (its "
        "checkpoint's sha1 is in every quality row). classifier: each fold's own real-only classifier (domain "
        "features too, but a different space per fold, so numbers of two folds or runs are not comparable). "
        "random_cnn: a fixed seeded random CNN (the same space everywhere, but it does not penalise noise: see "
        "metrics/quality/random_features.py). inception: ImageNet Inception-v3 (as the papers; torchvision "
        "download or inception_weights)",
    )
    domain_preset: str = Field(
        "cpu", description="features=domain: the classifier training preset of the domain network (smoke, cpu, "
        "paper or a YAML file; its image_size, epochs, patience, stop_fraction and seed), fixed apart from the "
        "study's classifiers so changing those does not move the feature space")
    domain_overrides: dict[str, Any] = Field({}, description="features=domain: training config fields overriding "
                                             "domain_preset (e.g. image_size: 128)")
    preset: str = Field("cpu", description="settings preset of the quality metrics (presets/quality.yaml)")
    overrides: dict[str, Any] = Field({}, description="quality-metric settings overriding the preset, e.g. "
                                      "reader: {image_size: 128, stem_stride: 2}")
    reader: bool = Field(True, description="run the automatic reader: a CNN telling each generator's samples from "
                         "real images of patients it never saw (the validation fold's and unused training patients)")
    inception_weights: Path | None = Field(None, description="local Inception-v3 weights for features=inception")
    threshold: float = Field(0.95, gt=0, le=1, description="similarity above which a sample counts as a near-copy")

    @model_validator(mode="after")
    def _domain_settings_need_domain(self) -> QualitySpec:
        # Against the default, not the fields set: a run's spec.yaml lists every field and must load again.
        default = type(self).model_fields["domain_preset"].default
        if self.features != "domain" and (self.domain_preset != default or self.domain_overrides):
            raise ValueError(f"domain_preset / domain_overrides configure the features=domain network; with "
                             f"features={self.features} they would have no effect: remove them or set features: domain")
        return self


class StudySpec(StrictModel):
    name: str = Field(description="study name; the run folder is runs/<name> unless --out is given")
    data: DataSpec
    split: SplitSpec = SplitSpec()
    generators: list[GeneratorSpec] = Field([], description="generators trained per fold")
    regimes: list[str] = Field(["real"], description=f"training regimes, from {list(REGIMES)}")
    baseline: str = Field("real", description="the regime every other condition is compared against")
    classifiers: list[StudyClassifierSpec] = Field([StudyClassifierSpec(model="small_cnn")], min_length=1)
    seeds: list[int] = Field([0], min_length=1, description="classifier training seeds")
    quality: QualitySpec = QualitySpec()
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")

    @field_validator("regimes")
    @classmethod
    def _known_regimes(cls, regimes: list[str]) -> list[str]:
        unknown = [r for r in regimes if r not in REGIMES]
        if unknown:
            raise ValueError(f"unknown regime(s) {unknown}; known: {list(REGIMES)}")
        return regimes

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        names = [g.name for g in self.generators]
        if len(set(names)) != len(names):
            raise ValueError(f"generator names must be unique: {names}")
        if any(r in SYNTHETIC_REGIMES for r in self.regimes) and not self.generators:
            raise ValueError("synthetic regimes need at least one generator")
        if self.baseline not in self.regimes:
            raise ValueError(f"baseline {self.baseline!r} is not among the regimes {self.regimes}")
        return self


def load_spec(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Read and validate a spec. Relative data paths are taken from the current folder, like every CLI path."""
    path = Path(path)
    values = read_yaml(path)
    if not isinstance(values, dict):
        raise SonosynthError(f"{path}: a spec is a YAML mapping of fields (name, data, split, ...).")
    values = deep_merge(values, overrides or {})
    try:
        spec = StudySpec.model_validate(values)
    except ValidationError as exc:
        raise SonosynthError(f"{path}: invalid spec: {format_validation_error(exc)}") from exc
    return spec
