"""SinDDM speed and quality-at-equal-time on one real POCUS pneumonia still (CPU or GPU).

Part 1 (speed): the paper network (dim 160) on the image at the 50,000-pixel cap (5 scales, 55..223 px).
For each setting: seconds per training step (the mean over the 5 scales, since training draws a scale
uniformly), achieved GFLOP/s (conv FLOPs: forward x 3 for forward + backward), peak resident memory
(each setting runs in its own process), and for the sampling settings seconds per sampled image.
Per-step time is linear in the batch; pass --batch 32 for the paper's batch (48 s/step on 2 cores in fp32).

Part 2 (quality at equal wall time): (a) plain fp32 full-image training against (c) the default fast
path, each trained for the same number of seconds, then sampled; quality = multi-scale sliced
Wasserstein distance between 7x7 patch distributions of the samples and the training image (lower is
better) and mean SSIM to the training image. --quality-preset picks the network/image size (cpu: the
128 px cpu preset, which can learn something in minutes; paper: dim 160 at 223 px).

Run: flock /tmp/sonosynth-cpu.lock python benchmarks/sinddm_speed.py [--batch 4] [--budget 150]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_IMAGE = Path(__file__).resolve().parents[1].parent / "shared/data/pocus/pocus_images/convex/Pneu_Avi_consolidated-lung.JPG"

SPEED_SETTINGS = {
    "a fp32 full image": {"precision": "fp32", "channels_last": False},
    "b fp32 channels_last": {"precision": "fp32", "channels_last": True},
    "b bf16": {"precision": "bf16", "channels_last": False},
    "b bf16 channels_last": {"precision": "bf16", "channels_last": True},
    "b fp32 crop 96": {"precision": "fp32", "channels_last": False, "crop_size": 96},
    "c bf16 channels_last crop 96": {"precision": "bf16", "channels_last": True, "crop_size": 96},
}
SAMPLE_SETTINGS = {
    "a fp32 stride 1": ({"precision": "fp32", "channels_last": False}, 1),
    "c bf16 channels_last stride 1": ({"precision": "bf16", "channels_last": True}, 1),
    "c bf16 channels_last stride 2": ({"precision": "bf16", "channels_last": True}, 2),
}


def _config(preset: str, **changes):
    from sonosynth.config import load_config
    from sonosynth.generators.sinddm.config import SinDDMConfig

    return load_config(SinDDMConfig, "sinddm", preset, changes)


def _training_data(image_path: Path, config):
    from sonosynth.data.images import load_grayscale
    from sonosynth.generators.sinddm.data import prepare_training_data

    return prepare_training_data([load_grayscale(image_path)], config)


# ------------------------------------------------------------------------------------------ speed
def _measure_training(args: tuple) -> dict:
    """Runs in a child process so that its peak memory is its own."""
    import torch

    from sonosynth.generators.sinddm.diffusion import DiffusionTables
    from sonosynth.generators.sinddm.network import conv_flops_per_pixel
    from sonosynth.generators.sinddm.training import (
        Batch,
        memory_format,
        new_state,
        random_crops,
        training_loss,
    )

    image_path, changes, batch, repeats = args
    torch.manual_seed(0)
    config = _config("paper", batch_size=batch, **changes)
    data = _training_data(image_path, config)
    tables = DiffusionTables.build(config.timesteps, data.blur_levels)
    state = new_state(config, torch.device("cpu"))
    fmt = memory_format(config)
    seconds, flops = [], []
    for scale in range(data.n_scales):
        sharp, blurry = data.sharp[scale][0], data.blurry[scale][0]
        times = []
        for i in range(repeats + 1):  # the first step warms up the kernels
            start = time.perf_counter()
            if config.crop_size and max(sharp.shape[-2:]) > config.crop_size:
                drawn = Batch(scale, 0, *random_crops(sharp, blurry, batch, config.crop_size))
            else:
                drawn = Batch(scale, 0, sharp.expand(batch, *sharp.shape), blurry.expand(batch, *blurry.shape))
            loss = training_loss(state.model, tables, drawn, config.precision, fmt)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            if i:
                times.append(time.perf_counter() - start)
        seconds.append(float(np.mean(times)))
        flops.append(3 * conv_flops_per_pixel(state.model) * drawn.sharp.shape[-1] * drawn.sharp.shape[-2] * batch)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s_per_step": float(np.mean(seconds)), "gflops": float(np.sum(flops) / np.sum(seconds) / 1e9),
            "peak_mib": peak_mib, "per_scale_s": [round(s, 2) for s in seconds]}


def _measure_sampling(args: tuple) -> dict:
    import torch

    from sonosynth.generators.sinddm.diffusion import DiffusionTables
    from sonosynth.generators.sinddm.sampling import TrainedModel, generate, network_calls
    from sonosynth.generators.sinddm.training import new_state

    image_path, changes, stride, n = args
    torch.manual_seed(0)
    config = _config("paper", sample_stride=stride, **changes)
    data = _training_data(image_path, config)
    tables = DiffusionTables.build(config.timesteps, data.blur_levels)
    denoiser = new_state(config, torch.device("cpu")).ema.eval()
    model = TrainedModel(denoiser, config, tables, data.plan.sizes, (), "x", Path("."), 0)
    generate(model, [0], size=(64, 64))  # warm-up
    start = time.perf_counter()
    generate(model, list(range(n)))
    seconds = time.perf_counter() - start
    return {"s_per_image": seconds / n, "calls": network_calls(model, stride),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _in_child(function, args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, (args,))


# ------------------------------------------------------------------------------------------ quality
def sliced_wasserstein(samples: list[np.ndarray], reference: np.ndarray, levels: int = 3, patch: int = 7,
                       directions: int = 128, max_patches: int = 20000, seed: int = 0) -> float:
    """Multi-scale SWD between 7x7 patch distributions (x 1e3); each level halves the resolution."""
    import torch
    from torch.nn import functional as F

    rng = np.random.default_rng(seed)

    def patches(images: list[np.ndarray], level: int) -> np.ndarray:
        rows = []
        for image in images:
            tensor = torch.from_numpy(image.astype(np.float32) / 127.5 - 1)[None, None]
            for _ in range(level):
                tensor = F.avg_pool2d(tensor, 2)
            rows.append(F.unfold(tensor, patch).squeeze(0).T.numpy())
        stacked = np.concatenate(rows)
        keep = rng.choice(len(stacked), size=min(max_patches, len(stacked)), replace=False)
        return stacked[keep]

    distances = []
    quantiles = np.linspace(0, 1, 256)
    for level in range(levels):
        real, fake = patches([reference], level), patches(samples, level)
        mean, std = real.mean(0), real.std(0) + 1e-6
        real, fake = (real - mean) / std, (fake - mean) / std
        projections = rng.standard_normal((real.shape[1], directions))
        projections /= np.linalg.norm(projections, axis=0, keepdims=True)
        a = np.quantile(real @ projections, quantiles, axis=0)
        b = np.quantile(fake @ projections, quantiles, axis=0)
        distances.append(np.abs(a - b).mean())
    return float(np.mean(distances) * 1e3)


def mean_ssim(samples: list[np.ndarray], reference: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(np.mean([structural_similarity(s, reference, data_range=255) for s in samples]))


def _train_for(args: tuple) -> dict:
    """Train for `budget` wall seconds, then sample; returns quality numbers."""
    import torch

    from sonosynth.generators.base import to_uint8
    from sonosynth.generators.sinddm.diffusion import DiffusionTables
    from sonosynth.generators.sinddm.sampling import TrainedModel, generate
    from sonosynth.generators.sinddm.training import new_state, train_step

    image_path, preset, changes, budget, n_samples = args
    torch.manual_seed(0)
    config = _config(preset, ema_start=10**9, **changes)  # sample the raw model: same rule for both
    data = _training_data(image_path, config)
    tables = DiffusionTables.build(config.timesteps, data.blur_levels)
    state = new_state(config, torch.device("cpu"))
    precision = config.precision
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        train_step(state, data, tables, config, precision)
    model = TrainedModel(state.model.eval(), config, tables, data.plan.sizes, (), "x", Path("."), state.step)
    samples = to_uint8(generate(model, list(range(n_samples))).numpy())
    reference = to_uint8(data.sharp[-1].numpy())[0]
    samples = list(samples)
    return {"steps": state.step, "swd": sliced_wasserstein(samples, reference),
            "ssim": mean_ssim(samples, reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--batch", type=int, default=4, help="training batch for the speed table (paper: 32)")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per scale (after one warm-up)")
    parser.add_argument("--sample-images", type=int, default=2, help="images per sampling measurement")
    parser.add_argument("--budget", type=float, default=150, help="wall seconds of training per quality run")
    parser.add_argument("--quality-preset", default="cpu", help="preset of the quality comparison")
    parser.add_argument("--quality-crop", type=int, default=80, help="crop size of (c) in the quality comparison")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: train,sample,quality")
    args = parser.parse_args()
    if not args.image.is_file():
        sys.exit(f"{args.image}: not found (the POCUS data lives in ../shared/data/pocus)")
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, dict] = {}

    if "train" not in skip:
        print(f"training step, paper network, batch {args.batch}, mean over the 5 scales of {args.image.name}")
        print(f"{'setting':34} {'s/step':>8} {'speed-up':>8} {'GFLOP/s':>8} {'peak MiB':>9}  per-scale s")
        base = None
        for name, changes in SPEED_SETTINGS.items():
            r = _in_child(_measure_training, (args.image, changes, args.batch, args.repeats))
            base = base or r["s_per_step"]
            results[name] = r
            print(f"{name:34} {r['s_per_step']:8.2f} {base / r['s_per_step']:8.2f} {r['gflops']:8.1f} "
                  f"{r['peak_mib']:9.0f}  {r['per_scale_s']}", flush=True)

    if "sample" not in skip:
        print(f"\nsampling, paper network, {args.sample_images} images per batch, 223x223 output")
        print(f"{'setting':34} {'s/image':>8} {'speed-up':>8} {'calls':>6} {'peak MiB':>9}")
        base = None
        for name, (changes, stride) in SAMPLE_SETTINGS.items():
            r = _in_child(_measure_sampling, (args.image, changes, stride, args.sample_images))
            base = base or r["s_per_image"]
            results["sample " + name] = r
            print(f"{name:34} {r['s_per_image']:8.2f} {base / r['s_per_image']:8.2f} {r['calls']:6d} "
                  f"{r['peak_mib']:9.0f}", flush=True)

    if "quality" not in skip:
        print(f"\nquality after {args.budget:.0f} s of training each ({args.quality_preset} preset network), "
              "16 samples; SWD x1e3 lower is better, SSIM to the training image")
        print(f"{'setting':34} {'steps':>6} {'SWD':>8} {'SSIM':>6}")
        for name, changes in {"a fp32 full image": {"precision": "fp32", "channels_last": False},
                              "c bf16 channels_last": {"precision": "bf16", "channels_last": True},
                              f"c bf16 channels_last crop {args.quality_crop}": {
                                  "precision": "bf16", "channels_last": True, "crop_size": args.quality_crop}}.items():
            r = _in_child(_train_for, (args.image, args.quality_preset, changes, args.budget, 16))
            results["quality " + name] = r
            print(f"{name:34} {r['steps']:6d} {r['swd']:8.1f} {r['ssim']:6.3f}", flush=True)
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
