"""SinDDM (Kulikov et al., ICML 2023) and FewDDM (the lung study's extension to a few images).

One generator, registered as "sinddm" (and "fewddm", the same code under the study's name):
`fit` trains one model on the 1 or k images of the training manifest; `sample` draws n images of
the training size (or any size) into a SyntheticSet. See `training.py` and `sampling.py` for the
method, and `pyramid.py` for where the official code and the paper differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from sonosynth.data.manifest import Manifest
from sonosynth.generators.base import BaseGenerator, register_generator, single_label, start_fit
from sonosynth.generators.sinddm.config import SinDDMConfig, SinDDMSampleSettings

KINDS = ("sinddm", "fewddm")


@register_generator("sinddm")
class SinDDMGenerator(BaseGenerator):
    """SinDDM on one image, FewDDM on several: each training step draws one of the k images at random."""

    name: ClassVar[str] = "sinddm"
    config_type: ClassVar[type[SinDDMConfig]] = SinDDMConfig
    presets: ClassVar[str] = "sinddm"

    @property
    def model_type(self):  # the torch-heavy module loads on first use
        from sonosynth.generators.sinddm.sampling import SinDDMModel

        return SinDDMModel

    def fit(self, training: Manifest, out: Path, config: SinDDMConfig, *, device: str = "auto",
            resume: bool = True, progress: bool = True) -> Path:
        from sonosynth.device import resolve_device
        from sonosynth.generators.base import load_training_images
        from sonosynth.generators.sinddm.data import prepare_training_data
        from sonosynth.generators.sinddm.training import measure_step_seconds, train

        label = single_label(training, "SinDDM")
        torch_device = resolve_device(device)
        data = None

        def probe(probe_config: SinDDMConfig) -> float:
            # The real training step on these images, each scale timed alone and weighted by how often the
            # run draws it (training.measure_step_seconds).
            return 1.0 / measure_step_seconds(prepared(), probe_config, torch_device)

        def prepared():
            nonlocal data
            if data is None:
                data = prepare_training_data(load_training_images(training, config.channels), config)
            return data

        start = start_fit(self.name, KINDS, training, out, config, resume, probe=probe)
        return train(prepared(), start, Path(out), torch_device, kind=self.name, label=label, progress=progress)


@register_generator("fewddm")
class FewDDMGenerator(SinDDMGenerator):
    """The same generator under the study's name for its several-image use; samples record 'fewddm'."""

    name: ClassVar[str] = "fewddm"


__all__ = ["FewDDMGenerator", "SinDDMConfig", "SinDDMGenerator", "SinDDMSampleSettings"]
