"""`create_classifier`: a registry name plus a weights choice -> a ready ClassifierNet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sonosynth.classify.models.base import ClassifierNet
from sonosynth.classify.zoo import build_classifier, classifier_names, classifier_spec
from sonosynth.errors import SonosynthError


def create_classifier(name: str, num_classes: int, in_channels: int = 1, pretrained: str = "none",
                      weights: str | Path | None = None, image_size: int = 224, **options: Any) -> ClassifierNet:
    """Build a zoo classifier.

    pretrained: "none" (random init), "imagenet" (torchvision's ImageNet weights, downloaded, or read from
    the local state-dict file `weights`), or the path of a sonosynth classifier checkpoint (its weights
    are loaded; the class head is re-initialised when the class count differs).
    options: family-specific architecture settings (e.g. pocovidnet's trainable_conv_layers, medmamba's
    variant); they are stored in checkpoints.
    """
    from sonosynth.classify import weights as weight_sources

    spec = classifier_spec(name)
    config = {"name": name, "num_classes": num_classes, "in_channels": in_channels, "image_size": image_size,
              "options": options}
    if weights is not None and pretrained != "imagenet":
        raise SonosynthError("--weights is the local file of ImageNet weights; use it with --pretrained imagenet.")
    if pretrained == "none":
        return build_classifier({**config, "input_mode": "native"})
    if pretrained == "imagenet":
        state = weight_sources.imagenet_state_dict(spec, weights)
        model = build_classifier({**config, "input_mode": "imagenet"})
        model.load_imagenet_state_dict(state, source=str(weights or spec.imagenet_weights))
        return model
    return _from_classifier_checkpoint(Path(pretrained), config)


def _from_classifier_checkpoint(path: Path, config: dict[str, Any]) -> ClassifierNet:
    from sonosynth.classify.checkpoint import read_classifier_checkpoint
    from sonosynth.classify.weights import transfer_classifier_weights

    if not path.is_file():
        raise SonosynthError(f"pretrained={str(path)!r} is neither 'none', 'imagenet' nor an existing "
                             f"classifier checkpoint file. Models: {', '.join(classifier_names())}.")
    payload = read_classifier_checkpoint(path)
    source = payload["config"]
    for key in ("name", "in_channels"):
        if source[key] != config[key]:
            raise SonosynthError(f"{path}: checkpoint has {key}={source[key]!r}, but {config[key]!r} was asked for.")
    # The input handling (ImageNet RGB or native channels) and architecture options follow the checkpoint,
    # or its weights would not fit.
    model = build_classifier({**config, "input_mode": source.get("input_mode", "native"),
                              "options": {**source.get("options", {}), **config["options"]}})
    transfer_classifier_weights(model, payload, path)
    return model
