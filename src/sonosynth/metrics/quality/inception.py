"""Inception-v3 features for SIFID, FID and KID, on torchvision's architecture.

Weights come from a file the user gives (a torchvision `inception_v3` state dict), from torchvision's
download cache, or from a download when the machine is online. The layers follow the reference code:
SIFID (Shaham et al., SinGAN's SIFID/inception.py, block index 1 = 192 dims) takes the output of
Conv2d_4a_3x3, i.e. everything up to but excluding the second max-pool, at the image's own size; FID/KID
take the 2048-d average pool after Mixed_7c with the input resized to 299 px as pytorch-fid does.
Both scale [0, 1] input to [-1, 1], the range the torchvision weights see after their own input transform.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from sonosynth.errors import SonosynthError

AUX_PREFIX = "AuxLogits."
HEAD_PREFIX = "fc."


def _architecture(init_weights: bool) -> nn.Module:
    from torchvision.models import inception_v3

    return inception_v3(weights=None, aux_logits=True, init_weights=init_weights)


def random_inception(seed: int = 0) -> nn.Module:
    """Inception-v3 with random (torchvision-initialised) weights: for tests, never for reported numbers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _architecture(init_weights=True).eval()


def read_inception_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise SonosynthError(f"{path}: Inception weights file not found (--inception-weights).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a tensor pickle
        raise SonosynthError(
            f"{path}: not a readable torch state dict ({type(exc).__name__}: {exc}). "
            "Save one with torch.save(torchvision.models.inception_v3(...).state_dict(), PATH)."
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SonosynthError(f"{path}: expected a state dict (parameter name -> tensor) of torchvision inception_v3.")
    return state


def inception_from_state_dict(state: dict[str, torch.Tensor], where: str) -> nn.Module:
    net = _architecture(init_weights=False)
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise SonosynthError(f"{where}: weights do not fit torchvision's inception_v3 ({exc}).") from exc
    # The auxiliary and final classifiers are not used for features, so a state dict without them is fine.
    missing = [k for k in result.missing_keys if not k.startswith((AUX_PREFIX, HEAD_PREFIX))]
    if missing or result.unexpected_keys:
        raise SonosynthError(
            f"{where}: not a torchvision inception_v3 state dict "
            f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})."
        )
    return net.eval()


def torchvision_inception(allow_download: bool = True, cache_dir: str | os.PathLike | None = None) -> nn.Module:
    """ImageNet weights from torchvision's cache, downloading them if allowed; a clear error otherwise."""
    from torchvision.models import Inception_V3_Weights

    weights = Inception_V3_Weights.IMAGENET1K_V1
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / Path(urlparse(weights.url).path).name
    if cached.is_file():
        return inception_from_state_dict(read_inception_state_dict(cached), str(cached))
    how = (f"On a machine with internet, download {weights.url} and pass the file with "
           "--inception-weights PATH, or use --features classifier:CKPT (features of a sonosynth classifier, "
           "no download, and closer to ultrasound than ImageNet).")
    if not allow_download:
        raise SonosynthError(f"no Inception-v3 weights: {cached} does not exist and downloading is off. {how}")
    try:
        torch.hub.load_state_dict_from_url(weights.url, model_dir=str(cache_dir), progress=True, check_hash=True)
    except Exception as exc:  # URLError, HTTPError, timeouts, hash mismatch: all mean "not available"
        raise SonosynthError(f"no Inception-v3 weights: the download failed ({type(exc).__name__}: {exc}). {how}") from exc
    return inception_from_state_dict(read_inception_state_dict(cached), str(cached))


class InceptionFeatures:
    """The FeatureExtractor over an Inception-v3 network."""

    def __init__(self, net: nn.Module, pooled_size: int = 299, device: str | torch.device = "cpu",
                 description: str = "Inception-v3", fingerprint: str = "") -> None:
        self.device = torch.device(device)
        self.pooled_size = pooled_size
        self.description = description
        self.fingerprint = fingerprint
        self.stem = nn.Sequential(net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, net.maxpool1,
                                  net.Conv2d_3b_1x1, net.Conv2d_4a_3x3).to(self.device).eval()
        self.rest = nn.Sequential(net.maxpool2, net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a,
                                  net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e, net.Mixed_7a,
                                  net.Mixed_7b, net.Mixed_7c, net.avgpool).to(self.device).eval()

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, torch.float32)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return images * 2.0 - 1.0

    @torch.no_grad()
    def spatial(self, images: torch.Tensor) -> torch.Tensor:
        return self.stem(self._prepare(images))

    @torch.no_grad()
    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.rest(self.stem(self._prepare(images))), 1)
