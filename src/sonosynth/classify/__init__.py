"""Downstream classification: the classifier zoo, its checkpoints and (elsewhere in this package) training."""

from sonosynth.classify.checkpoint import load_classifier, read_classifier_checkpoint, save_classifier
from sonosynth.classify.factory import build_classifier, create_classifier
from sonosynth.classify.models.base import ClassifierNet
from sonosynth.classify.zoo import classifier_names

__all__ = [
    "ClassifierNet",
    "build_classifier",
    "classifier_names",
    "create_classifier",
    "load_classifier",
    "read_classifier_checkpoint",
    "save_classifier",
]
