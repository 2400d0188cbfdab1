"""Training regimes: which images a classifier trains on, with which augmentation, in which stages.

`plan.py`: `plan_regime`, a pure function from (regime, real training Manifest, optional
SyntheticSet) to a TrainingPlan; `leakage.py`: the guards below; `run.py`: `run_regime`, which
carries a plan out on one fold and scores it on the fold's real validation images.

| regime | stages |
| --- | --- |
| `real` | real training images, no augmentation |
| `real+regular` | real training images, regular augmentation |
| `real+synthetic` | real + synthetic images (the lung study's top-up of the minority class), no augmentation |
| `real+synthetic+regular` | real + synthetic images, regular augmentation on all of them |
| `synthetic-only` | synthetic images only |
| `pretrain-synthetic->finetune-real` | stage 1 on synthetic images; stage 2 reloads the stage-1 checkpoint from disk and fine-tunes on the real images with the same optimizer settings (the fetal study) |
| `mixed` | one shuffled pool of synthetic and real images: the fetal study's "Mixed Data" arm. It trains on the same images as `real+synthetic`; the name is kept so each study's table can be reproduced under its own label |

Leakage rules enforced here: evaluation is on real validation images only; a synthetic image made
from an evaluation-fold image is an error; the early-stopping set is held-out real TRAINING patients
(or a caller's manifest disjoint from the evaluation fold), and synthetic images made from those
patients' images are left out of fitting, so the stopping loss is never measured on parents of
training images.
"""

from sonosynth.classify.regimes.leakage import check_synthetic_parents, drop_derived, stopping_split
from sonosynth.classify.regimes.plan import (
    ALL_ORIGINS,
    NEEDS_SYNTHETIC,
    REGIMES,
    Stage,
    TrainingPlan,
    plan_regime,
)
from sonosynth.classify.regimes.run import (
    RegimeResult,
    StageRecord,
    clear_regime_outputs,
    read_regime_result,
    run_regime,
)

__all__ = [
    "ALL_ORIGINS", "NEEDS_SYNTHETIC", "REGIMES", "RegimeResult", "Stage", "StageRecord", "TrainingPlan",
    "check_synthetic_parents", "clear_regime_outputs", "drop_derived", "plan_regime", "read_regime_result",
    "run_regime", "stopping_split",
]
