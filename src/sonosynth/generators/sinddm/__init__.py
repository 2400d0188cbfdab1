"""SinDDM (Kulikov et al., ICML 2023) and FewDDM (the lung study's extension to a few images).

One generator, registered as "sinddm" (and "fewddm", the same code under the study's name):
`fit` trains one model on the 1 or k images of the training manifest; `sample` draws n images of
the training size (or any size) into a SyntheticSet. See `training.py` and `sampling.py` for the
method, and `pyramid.py` for where the official code and the paper differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from sonosynth.data.manifest import Manifest
from sonosynth.device import resolve_device
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import SyntheticSetWriter, register_generator, to_uint8
from sonosynth.generators.sinddm.config import SinDDMConfig
from sonosynth.progress import task as progress_task

_SETTING_NAMES = ("stride", "scale_mul", "gamma_max", "batch_size", "precision")


@register_generator("sinddm")
class SinDDMGenerator:
    """SinDDM on one image, FewDDM on several: each training step draws one of the k images at random."""

    name: ClassVar[str] = "sinddm"
    config_type: ClassVar[type[SinDDMConfig]] = SinDDMConfig
    presets: ClassVar[str] = "sinddm"

    def fit(self, training: Manifest, out: Path, config: SinDDMConfig, *, device: str = "auto",
            resume: bool = True, progress: bool = True) -> Path:
        from sonosynth.generators.sinddm.data import load_training_arrays, prepare_training_data
        from sonosynth.generators.sinddm.training import train

        labels = sorted(set(training.labels))
        if len(labels) > 1:
            raise SonosynthError(f"SinDDM trains on images of one class; the manifest mixes {labels}. "
                                 "Select one label first (Manifest.with_labels).")
        data = prepare_training_data(load_training_arrays(training, config.channels), config)
        parents = [str(path) for path in training.absolute_paths()]
        return train(data, config, Path(out), resolve_device(device), parents=parents, label=labels[0],
                     resume=resume, progress=progress)

    def sample(self, checkpoint: Path, n: int, out: Path, *, label: str | None = None,
               size: tuple[int, int] | None = None, seed: int = 0, device: str = "auto",
               progress: bool = True, **settings: Any) -> Manifest:
        from sonosynth.generators.sinddm.sampling import (
            generate,
            load_trained_model,
            network_calls,
            sampling_settings,
        )

        unknown = sorted(set(settings) - set(_SETTING_NAMES))
        if unknown:
            raise SonosynthError(f"unknown SinDDM sampling setting(s) {unknown}; known: {list(_SETTING_NAMES)}.")
        if n < 0:
            raise SonosynthError(f"cannot sample {n} images.")
        model = load_trained_model(checkpoint, resolve_device(device))
        batch_size = int(settings.pop("batch_size", None) or model.config.sample_batch_size)
        writer = SyntheticSetWriter(out, self.name, model.path.parent, model.parents,
                                    sampling_settings(model, size, **settings), label or model.label)
        missing = writer.missing_seeds(range(seed, seed + n))
        batches = [missing[i:i + batch_size] for i in range(0, len(missing), batch_size)]
        calls = max(1, network_calls(model, settings.get("stride") or model.config.sample_stride))
        # Progress counts images, advanced a fraction per network call, so a one-batch call still moves.
        with progress_task("SinDDM sampling", len(missing), unit="image", enabled=progress and bool(batches)) as bar:
            for batch in batches:
                share = len(batch) / calls
                images = to_uint8(generate(model, batch, size=size, on_call=lambda share=share: bar.advance(share),
                                           **settings).cpu().numpy())
                for image_seed, image in zip(batch, images, strict=True):
                    writer.add(image_seed, image)
                writer.flush()
                bar.update(missing.index(batch[-1]) + 1)
        return writer.flush()


@register_generator("fewddm")
class FewDDMGenerator(SinDDMGenerator):
    """The same generator under the study's name for its several-image use; samples record 'fewddm'."""

    name: ClassVar[str] = "fewddm"


__all__ = ["FewDDMGenerator", "SinDDMConfig", "SinDDMGenerator"]
