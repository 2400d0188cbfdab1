"""SinDDM speed and quality-at-equal-time on one real POCUS pneumonia still (CPU or GPU).

Part 1 (speed): the paper network (dim 160) on the image at the 50,000-pixel cap (5 scales, 55..223 px).
For each setting: seconds per training step (the mean over the 5 scales, since training draws a scale
uniformly), achieved GFLOP/s (conv FLOPs: forward x 3 for forward + backward), peak resident memory
(each setting runs in its own process), and for the sampling settings seconds per sampled image.
Per-step time is linear in the batch; pass --batch 32 for the paper's batch (48 s/step on 2 cores in fp32).

Part 2 (quality at equal wall time): (a) plain fp32 full-image training against (c) the default speed
switches, each given the same wall-clock budget. A probe measures each arm's steps/s; the arm then
trains as many steps as fit, with the preset's LR milestones and EMA start at the same fractions of the
run, and samples from its EMA. Quality = multi-scale sliced Wasserstein distance between 7x7 patch
distributions of the samples and the training image (lower is better) and mean SSIM to the training
image. The network is --quality-preset's (default cpu: dim 64, batch 8, which can learn something in
minutes) at --quality-max-pixels (default the paper's 50,000 cap, 223 px, where crops apply).

Part 3 (--checkpoint DIR, a trained SinDDM folder): the same quality measures for sampling strides 1, 2, 4.

Run: flock /tmp/sonosynth-cpu.lock python benchmarks/sinddm_speed.py [--batch 4] [--budget 1200] [--out DIR]
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

PLAIN = {"precision": "fp32", "channels_last": False, "crop_size": None, "compiled_depthwise_grad": False}
SPEED_SETTINGS = {
    "a fp32 full image": PLAIN,
    "b fp32 channels_last": {**PLAIN, "channels_last": True},
    "b bf16": {**PLAIN, "precision": "bf16"},
    "b bf16 channels_last": {**PLAIN, "precision": "bf16", "channels_last": True},
    "b fp32 crop 96": {**PLAIN, "crop_size": 96},
    "b fp32 compiled depthwise grad": {**PLAIN, "compiled_depthwise_grad": True},
    "b bf16 channels_last crop 96": {"precision": "bf16", "channels_last": True, "crop_size": 96,
                                     "compiled_depthwise_grad": False},
    "c default: bf16 channels_last crop 96 compiled dw": {"precision": "bf16", "channels_last": True, "crop_size": 96,
                                                          "compiled_depthwise_grad": True},
}
SAMPLE_SETTINGS = {
    "a fp32 stride 1": ({"precision": "fp32", "channels_last": False}, 1),
    "c bf16 channels_last stride 1": ({"precision": "bf16", "channels_last": True}, 1),
    "c bf16 channels_last stride 2": ({"precision": "bf16", "channels_last": True}, 2),
}


def default_speed_switches() -> dict:
    """The speed switches as SinDDMConfig defaults them (arm (c)), with 'auto' resolved for this machine."""
    import torch

    from sonosynth.device import resolve_precision
    from sonosynth.generators.sinddm.config import SinDDMConfig

    fields = SinDDMConfig.model_fields
    switches = {name: fields[name].default
                for name in ("precision", "channels_last", "crop_size", "compiled_depthwise_grad")}
    return {**switches, "precision": resolve_precision(switches["precision"], torch.device("cpu"))}


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
    from sonosynth.generators.sinddm.training import batch_at, memory_format, new_state, training_loss

    image_path, changes, batch, repeats = args
    torch.manual_seed(0)
    config = _config("paper", batch_size=batch, **changes)
    data = _training_data(image_path, config)
    tables = DiffusionTables.build(config.timesteps, data.blur_levels)
    state = new_state(config, torch.device("cpu"))
    fmt = memory_format(config)
    seconds, flops = [], []
    for scale in range(data.n_scales):
        times = []
        for i in range(repeats + 1):  # the first step warms up the kernels
            start = time.perf_counter()
            drawn = batch_at(data, config, scale, 0)
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
    from sonosynth.generators.sinddm.sampling import SinDDMModel, generate, network_calls
    from sonosynth.generators.sinddm.training import new_state

    image_path, changes, stride, n = args
    torch.manual_seed(0)
    config = _config("paper", sample_stride=stride, **changes)
    data = _training_data(image_path, config)
    tables = DiffusionTables.build(config.timesteps, data.blur_levels)
    denoiser = new_state(config, torch.device("cpu")).ema.eval()
    model = SinDDMModel.in_memory(denoiser, config, tables, data.plan.sizes)
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
def sliced_wasserstein(samples: list[np.ndarray], reference: np.ndarray) -> float:
    """Multi-scale SWD between 7x7 patch distributions (x 1e3) of uint8 images; see metrics.quality.swd."""
    from sonosynth.metrics.quality.swd import patch_swd

    return patch_swd([s / 255.0 for s in samples], [reference / 255.0])


def mean_ssim(samples: list[np.ndarray], reference: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(np.mean([structural_similarity(s, reference, data_range=255) for s in samples]))


def _uint8_images(batch) -> list[np.ndarray]:
    """(n, C, H, W) tensor in [-1, 1] -> n uint8 images."""
    from sonosynth.generators.base import to_uint8

    return list(to_uint8(batch.numpy()))


def _save_grid(out: Path | None, rows: list) -> None:
    if out is None:
        return
    from sonosynth.data.grid import image_grid

    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, tile=160).save(out)


def _fitted_schedule(config, steps: int):
    """The preset's schedule stretched to `steps`: milestones and EMA start keep their fractions of the run."""
    fraction = steps / config.train_steps
    return {"train_steps": steps, "lr_milestones": [max(1, round(m * fraction)) for m in config.lr_milestones],
            "ema_start": round(config.ema_start * fraction)}


def _train_for(args: tuple) -> dict:
    """Train for about `budget` wall seconds with a complete schedule, then sample from the EMA.

    A short probe measures this setting's steps per second; the run then gets as many steps as fit in
    the budget, with the preset's learning-rate milestones and EMA start at the same fractions of the run,
    as a user with a fixed time budget would configure it. Neither arm is cut off mid-schedule.
    """
    import torch

    from sonosynth.generators.sinddm.diffusion import DiffusionTables
    from sonosynth.generators.sinddm.sampling import SinDDMModel, generate
    from sonosynth.generators.sinddm.training import new_state, train_step

    image_path, preset, changes, budget, n_samples, probe_seconds, out = args
    probe_config = _config(preset, **changes)
    data = _training_data(image_path, probe_config)
    tables = DiffusionTables.build(probe_config.timesteps, data.blur_levels)
    torch.manual_seed(1)
    state = new_state(probe_config, torch.device("cpu"))
    train_step(state, data, tables, probe_config, probe_config.precision)  # kernels warm up
    start, probe_steps = time.perf_counter(), 0
    while time.perf_counter() - start < probe_seconds:
        train_step(state, data, tables, probe_config, probe_config.precision)
        probe_steps += 1
    steps = max(10, int(budget * probe_steps / (time.perf_counter() - start)))

    config = _config(preset, **changes, **_fitted_schedule(probe_config, steps))
    torch.manual_seed(0)
    state = new_state(config, torch.device("cpu"))
    start = time.perf_counter()
    while state.step < config.train_steps:
        train_step(state, data, tables, config, config.precision)
    train_seconds = time.perf_counter() - start
    model = SinDDMModel.in_memory(state.ema.eval(), config, tables, data.plan.sizes, state.step)
    samples = _uint8_images(generate(model, list(range(n_samples))))
    reference = _uint8_images(data.sharp[-1])[0]
    _save_grid(out, [("training", [reference]), ("samples 1-8", samples[:8]), ("samples 9-16", samples[8:16])])
    return {"steps": state.step, "train_s": train_seconds, "swd": sliced_wasserstein(samples, reference),
            "ssim": mean_ssim(samples, reference)}


def _stride_quality(args: tuple) -> dict:
    """Sample one trained SinDDM checkpoint at several strides: the quality that fewer steps cost."""

    from sonosynth.generators.sinddm.sampling import SinDDMModel, generate, network_calls

    checkpoint, strides, n, out = args
    model = SinDDMModel.from_pretrained(checkpoint, "cpu")
    reference = _uint8_images(_training_data(model.training_images[0], model.config).sharp[-1])[0]
    generate(model, [0], size=(48, 48))  # warm-up
    results, rows = {}, [("training", [reference])]
    for stride in strides:
        start = time.perf_counter()
        samples = _uint8_images(generate(model, list(range(n)), stride=stride))
        seconds = (time.perf_counter() - start) / n
        results[stride] = {"s_per_image": seconds, "calls": network_calls(model, stride),
                           "swd": sliced_wasserstein(samples, reference), "ssim": mean_ssim(samples, reference)}
        rows.append((f"stride {stride}", samples[:8]))
    _save_grid(out, rows)
    return results


def _describe(switches: dict) -> str:
    crop = switches["crop_size"]
    words = [switches["precision"], "channels_last" if switches["channels_last"] else None,
             f"crop {crop}" if crop else "full image"]
    return " ".join(word for word in words if word)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--batch", type=int, default=4, help="training batch for the speed table (paper: 32)")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps per scale (after one warm-up)")
    parser.add_argument("--sample-images", type=int, default=2, help="images per sampling measurement")
    parser.add_argument("--budget", type=float, default=1200, help="wall seconds of training per quality run")
    parser.add_argument("--quality-preset", default="cpu", help="preset of the quality comparison")
    parser.add_argument("--quality-max-pixels", type=int, default=50000,
                        help="image size of the quality runs (50000 = the paper's cap, 223 px, where crops apply)")
    parser.add_argument("--quality-arms", default="a,c", help="which quality arms to run (a, c or a,c)")
    parser.add_argument("--probe", type=float, default=60, help="seconds that measure each arm's steps/s")
    parser.add_argument("--samples", type=int, default=16, help="samples per quality arm")
    parser.add_argument("--out", type=Path, default=None, help="folder for the quality arms' sample grids")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a trained SinDDM folder: sample it at strides 1, 2, 4 and compare quality (part 3)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: train,sample,quality")
    args = parser.parse_args()
    if not args.image.is_file():
        sys.exit(f"{args.image}: not found (the POCUS data lives in ../shared/data/pocus)")
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, dict] = {}

    if "train" not in skip:
        print(f"training step, paper network, batch {args.batch}, mean over the 5 scales of {args.image.name}")
        print(f"{'setting':40} {'s/step':>8} {'speed-up':>8} {'GFLOP/s':>8} {'peak MiB':>9}  per-scale s")
        base = None
        for name, changes in SPEED_SETTINGS.items():
            r = _in_child(_measure_training, (args.image, changes, args.batch, args.repeats))
            base = base or r["s_per_step"]
            results[name] = r
            print(f"{name:40} {r['s_per_step']:8.2f} {base / r['s_per_step']:8.2f} {r['gflops']:8.1f} "
                  f"{r['peak_mib']:9.0f}  {r['per_scale_s']}", flush=True)

    if "sample" not in skip:
        print(f"\nsampling, paper network, {args.sample_images} images per batch, 223x223 output")
        print(f"{'setting':40} {'s/image':>8} {'speed-up':>8} {'calls':>6} {'peak MiB':>9}")
        base = None
        for name, (changes, stride) in SAMPLE_SETTINGS.items():
            r = _in_child(_measure_sampling, (args.image, changes, stride, args.sample_images))
            base = base or r["s_per_image"]
            results["sample " + name] = r
            print(f"{name:40} {r['s_per_image']:8.2f} {base / r['s_per_image']:8.2f} {r['calls']:6d} "
                  f"{r['peak_mib']:9.0f}", flush=True)

    if "quality" not in skip:
        print(f"\nquality after about {args.budget:.0f} s of training each ({args.quality_preset} preset, "
              f"max_pixels {args.quality_max_pixels}), {args.samples} EMA samples; each arm's schedule is "
              "fitted to the steps it reaches; SWD x1e3 lower is better, SSIM to the training image")
        print(f"{'setting':40} {'steps':>6} {'train s':>8} {'SWD':>8} {'SSIM':>6}")
        arms = {"a fp32 full image": PLAIN, "c default " + _describe(default_speed_switches()): {}}
        wanted = set(args.quality_arms.split(","))
        for name, changes in arms.items():
            if name.split()[0] not in wanted:
                continue
            changes = {**default_speed_switches(), **changes, "max_pixels": args.quality_max_pixels}
            grid = args.out / f"quality-{name.split()[0]}.png" if args.out else None
            r = _in_child(_train_for, (args.image, args.quality_preset, changes, args.budget, args.samples,
                                       args.probe, grid))
            results["quality " + name] = r
            print(f"{name:40} {r['steps']:6d} {r['train_s']:8.0f} {r['swd']:8.1f} {r['ssim']:6.3f}", flush=True)
    if args.checkpoint is not None:
        grid = args.out / "strides.png" if args.out else None
        table = _in_child(_stride_quality, (args.checkpoint, (1, 2, 4), args.samples, grid))
        print(f"\nsampling stride vs quality, {args.checkpoint}, {args.samples} samples; SWD x1e3 lower is better")
        print(f"{'stride':>6} {'calls':>6} {'s/image':>8} {'SWD':>8} {'SSIM':>6}")
        for stride, r in table.items():
            results[f"stride {stride}"] = r
            print(f"{stride:6d} {r['calls']:6d} {r['s_per_image']:8.2f} {r['swd']:8.1f} {r['ssim']:6.3f}", flush=True)
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
