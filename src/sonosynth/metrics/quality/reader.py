"""The automatic reader: a classifier two-sample test of real against synthetic images of one class.

Lopez-Paz & Oquab (2017), "Revisiting classifier two-sample tests": if a classifier trained to tell
two samples apart does no better than chance on held-out data, the samples are indistinguishable to
it. Here the two samples are real images (label 0) and synthetic images (label 1) of one class, and
the classifier is a small CNN trained from scratch, playing the role of the lung study's human
readers (its Table 4 fake-detection rate).

Protocol, per class:

1. Groups. Real images are grouped by patient (frames of one clip are near-duplicates), synthetic
   images by the generator model that drew them. The real side should hold only patients the
   generator never saw (the caller guarantees it; `evaluate_quality` checks it).
2. Held-out halves. Each side is split into `folds` parts with scikit-learn's GroupKFold, so no
   patient and no model is ever on both the training and the held-out side; part k of the real side
   and part k of the synthetic side form held-out fold k (GroupKFold per side guarantees every fold
   holds both labels, which StratifiedGroupKFold does not with a handful of groups). A side with fewer
   groups than folds (one FewDDM model per fold, say) is split per image instead, which the result
   records (`grouped = False`): the reader may then learn that model's quirks, so read AUC as an upper bound.
3. One fresh CNN per fold, trained on the other folds with the class-balanced logistic loss
   (each side weighted by 1 / its image count, so the decision threshold p = 0.5 is the balanced one),
   a fixed number of steps on random batches (no early stopping: there is no third set of patients to
   stop on). Augmentations: horizontal flips (a fan is mirror-symmetric); a random square crop per
   batch of side U(`crop_min`, 1) x the image, at a random place (the net is fully convolutional with
   global pooling, so it is scored on whole images); a random gain per image, x U(1 - g, 1 + g) with
   g = `gain_jitter`, clipped to [0, 1]. The input is the image in [-1, 1] and, with
   `highpass_weight` w > 0, a second channel w (x - box3(x)), the image minus its 3 x 3 mean
   (replicate-padded): the speckle-scale residual. Why: with a few held-out patients per side, a
   reader of the raw image alone learns brightness and layout, which differ between patients, and
   then calls unfamiliar real patients synthetic and saturated white noise real. Crops and gain
   jitter take those shortcuts away; the residual channel puts texture (speckle, per-pixel noise,
   over-smooth fills) in front of the first conv. w brings the residual (a few hundredths on
   speckle) to the raw channel's range. w = 0, g = 0 and `crop_min` = 1 give the raw-image reader.
4. Scores. Out-of-fold probabilities of every image give one ROC AUC. Its confidence interval comes
   from a cluster bootstrap: real groups and synthetic groups are resampled with replacement
   (each side separately, `bootstrap` times) and the AUC recomputed; the percentile interval at
   `confidence`. The fake-detection rate is the share of synthetic images with p > 0.5, and the
   real-detection rate the share of real images with p <= 0.5; their mean is the balanced accuracy.

AUC 0.5 means the reader cannot tell the synthetic images from unseen real ones; 1.0 means every
synthetic image is caught. Deliberate differences from the paper: the CNN, its input size and
training are ours (a C2ST leaves the classifier free); the held-out folds are grouped, which the
paper (i.i.d. samples) does not need.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from torch import nn
from torch.nn import functional as F

from sonosynth.config import StrictModel
from sonosynth.errors import InputDataError
from sonosynth.metrics.quality.images import resize

log = logging.getLogger(__name__)


class ReaderConfig(StrictModel):
    image_size: int = Field(64, ge=16, le=512, description="side both sides' images are resized to for the reader")
    folds: int = Field(2, ge=2, le=10, description="held-out folds (2: two halves, each scored by a reader trained on the other)")
    steps: int = Field(300, ge=1, description="optimizer steps of each fold's reader CNN")
    batch_size: int = Field(32, ge=2)
    learning_rate: float = Field(2e-3, gt=0)
    widths: list[int] = Field([16, 32, 64], min_length=1, description="channels of the reader CNN's conv stages")
    stem_stride: Literal[1, 2] = Field(
        1, description="stride of the first conv (2: a 128 px reader at the cost of a 64 px one; it still sees "
        "every pixel, so blur and missing fine speckle stay visible)")
    highpass_weight: float = Field(16.0, ge=0, description="weight w of the input's second channel w (x - box3(x)), "
                                   "its speckle-scale residual (0: the raw image only)")
    gain_jitter: float = Field(0.3, ge=0, lt=1, description="training images' gain is multiplied by U(1 - g, 1 + g)")
    crop_min: float = Field(0.75, gt=0, le=1, description="each training batch is a random square crop of side "
                            "U(crop_min, 1) x the image (1: no crops)")
    bootstrap: int = Field(1000, ge=0, description="cluster-bootstrap resamples for the AUC interval (0: none)")
    confidence: float = Field(0.95, gt=0, lt=1)
    min_images: int = Field(4, ge=2, description="fewer images than this on either side: the reader is skipped")
    seed: int = 0


@dataclass(frozen=True)
class ReaderResult:
    auc: float
    auc_lo: float
    auc_hi: float
    fake_detection: float  # share of synthetic images the reader calls synthetic (p > 0.5)
    real_detection: float  # share of real images it calls real
    real_images: int
    synthetic_images: int
    real_groups: int
    synthetic_groups: int
    grouped: bool  # False when a side had fewer groups than folds and was split per image
    scores: np.ndarray  # out-of-fold probability of "synthetic", real images first

    def row(self, prefix: str = "reader_") -> dict[str, float | int | bool]:
        """The quality-table columns: reader_auc, reader_auc_lo, reader_auc_hi, reader_fake_detection, ..."""
        names = ("auc", "auc_lo", "auc_hi", "fake_detection", "real_detection", "real_images",
                 "synthetic_images", "real_groups", "synthetic_groups", "grouped")
        return {prefix + name: getattr(self, name) for name in names}


SKIPPED_ROW = {f"reader_{name}": np.nan for name in
               ("auc", "auc_lo", "auc_hi", "fake_detection", "real_detection")}


class ReaderNet(nn.Module):
    """Conv-ReLU stages, each halving the resolution, global average pooling, one logit.

    With `stem_stride` 2 the first conv also strides, so a 128 px input costs what a 64 px one does.
    With `highpass_weight` w > 0 the input gains a second channel, w (x - box3(x)).

    No normalization layers: BatchNorm's running statistics lag on a few dozen images (eval scores
    collapse toward one value), and per-image normalizations would erase gain entirely, though a
    saturated sample is a real tell (training's gain jitter only blurs it).
    """

    def __init__(self, widths: Sequence[int], stem_stride: int = 1, highpass_weight: float = 0.0) -> None:
        super().__init__()
        self.highpass_weight = highpass_weight
        layers: list[nn.Module] = []
        channels = 2 if highpass_weight > 0 else 1
        for stage, width in enumerate(widths):
            stride = stem_stride if stage == 0 else 1
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, H, W) in [0, 1] -> (N,) logits of "synthetic"."""
        inputs = x * 2.0 - 1.0
        if self.highpass_weight > 0:
            box = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
            inputs = torch.cat([inputs, self.highpass_weight * (x - box)], dim=1)
        return self.head(self.body(inputs).mean(dim=(2, 3))).squeeze(1)


def held_out_folds(labels: np.ndarray, groups: Sequence[str], folds: int) -> tuple[list[np.ndarray], bool]:
    """Held-out index sets, one per fold: GroupKFold on each side, part k of both sides is fold k.

    Returns the folds and whether both sides could be grouped (a side with fewer groups than folds is
    split per image).
    """
    labels = np.asarray(labels)
    groups = np.asarray([str(g) for g in groups], dtype=object)
    held_out: list[list[np.ndarray]] = [[] for _ in range(folds)]
    grouped = True
    for side in (0, 1):
        index = np.flatnonzero(labels == side)
        side_groups = groups[index]
        if len(set(side_groups)) < folds:
            grouped = False
            side_groups = np.asarray([f"image-{i}" for i in index], dtype=object)
        if len(index) < folds:
            raise InputDataError(f"{len(index)} images on the {('real', 'synthetic')[side]} side; "
                                 f"the reader needs at least {folds}.")
        for k, (_, test) in enumerate(GroupKFold(n_splits=folds).split(index, groups=side_groups)):
            held_out[k].append(index[test])
    return [np.sort(np.concatenate(parts)) for parts in held_out], grouped


def _tensor(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([resize(np.asarray(i, dtype=np.float32), (size, size)) for i in images]))[:, None]


def _random_crop(images: torch.Tensor, smallest: float, generator: torch.Generator) -> torch.Tensor:
    """One random square crop of the whole batch, side U(smallest, 1) x the image's shorter side."""
    height, width = images.shape[-2:]
    fraction = smallest + (1.0 - smallest) * torch.rand(1, generator=generator).item()
    side = max(2, int(min(height, width) * fraction))
    top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
    return images[..., top:top + side, left:left + side]


def _train_and_score(x: torch.Tensor, y: torch.Tensor, train: np.ndarray, test: np.ndarray,
                     config: ReaderConfig, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = ReaderNet(config.widths, config.stem_stride, config.highpass_weight)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    x_train, y_train = x[train], y[train]
    # Class-balanced loss: each side weighs as much in total, so p = 0.5 is the balanced threshold.
    counts = torch.stack([(y_train == 0).sum(), (y_train == 1).sum()]).float()
    weights = (len(y_train) / (2.0 * counts))[y_train.long()]
    net.train()
    batch_size = min(config.batch_size, len(train))
    for _ in range(config.steps):
        batch = torch.randperm(len(train), generator=generator)[:batch_size]
        images = x_train[batch]
        flip = torch.rand(len(batch), generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        if config.crop_min < 1:
            images = _random_crop(images, config.crop_min, generator)
        if config.gain_jitter > 0:
            gain = 1.0 + config.gain_jitter * (2.0 * torch.rand(len(batch), 1, 1, 1, generator=generator) - 1.0)
            images = (images * gain).clamp(0.0, 1.0)
        loss = F.binary_cross_entropy_with_logits(net(images), y_train[batch], weight=weights[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        # Average over the image and its mirror: the reader should not depend on the side it was flipped to.
        logits = 0.5 * (net(x[test]) + net(x[test].flip(-1)))
    return torch.sigmoid(logits).numpy()


def cluster_bootstrap_auc(labels: np.ndarray, scores: np.ndarray, groups: Sequence[str], resamples: int,
                          confidence: float, seed: int) -> tuple[float, float]:
    """Percentile interval of the AUC when whole groups are resampled, each side separately."""
    if resamples == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    groups = np.asarray([str(g) for g in groups], dtype=object)
    members = []
    for side in (0, 1):
        side_index = np.flatnonzero(labels == side)
        names = sorted(set(groups[side_index]))
        members.append([side_index[groups[side_index] == name] for name in names])
    values = np.empty(resamples)
    for r in range(resamples):
        picked = [np.concatenate([side[i] for i in rng.integers(len(side), size=len(side))]) for side in members]
        index = np.concatenate(picked)
        values[r] = roc_auc_score(labels[index], scores[index])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def automatic_reader(real: Sequence[np.ndarray], real_groups: Sequence[str], synthetic: Sequence[np.ndarray],
                     synthetic_groups: Sequence[str], config: ReaderConfig | None = None) -> ReaderResult:
    """Classifier two-sample test of `real` against `synthetic` (float (H, W) images in [0, 1]).

    `real_groups` are patient ids, `synthetic_groups` generator-model ids (one per image).
    """
    config = config or ReaderConfig()
    if len(real) != len(real_groups) or len(synthetic) != len(synthetic_groups):
        raise InputDataError("the reader needs one group per image on each side.")
    if min(len(real), len(synthetic)) < config.min_images:
        raise InputDataError(f"the reader needs at least {config.min_images} images on each side "
                             f"(got {len(real)} real, {len(synthetic)} synthetic).")
    labels = np.concatenate([np.zeros(len(real), dtype=int), np.ones(len(synthetic), dtype=int)])
    # Prefixes keep a patient id and a model id that happen to be equal apart.
    groups = [f"real:{g}" for g in real_groups] + [f"synthetic:{g}" for g in synthetic_groups]
    x = _tensor(list(real) + list(synthetic), config.image_size)
    y = torch.from_numpy(labels).float()
    held_out, grouped = held_out_folds(labels, groups, config.folds)
    if not grouped:
        log.info("automatic reader: a side has fewer than %d groups; it is split per image", config.folds)
    scores = np.empty(len(labels))
    everything = np.arange(len(labels))
    for k, test in enumerate(held_out):
        train = np.setdiff1d(everything, test)
        scores[test] = _train_and_score(x, y, train, test, config, config.seed + k)
    auc = float(roc_auc_score(labels, scores))
    low, high = cluster_bootstrap_auc(labels, scores, groups, config.bootstrap, config.confidence, config.seed)
    called_fake = scores > 0.5
    return ReaderResult(
        auc=auc, auc_lo=low, auc_hi=high,
        fake_detection=float(called_fake[labels == 1].mean()), real_detection=float((~called_fake)[labels == 0].mean()),
        real_images=len(real), synthetic_images=len(synthetic),
        real_groups=len(set(real_groups)), synthetic_groups=len(set(synthetic_groups)), grouped=grouped, scores=scores,
    )
