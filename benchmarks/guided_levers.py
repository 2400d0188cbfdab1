"""Speed levers of the guided generator on the CPU, each against the plain fp32 eager baseline of the same run.

    flock /tmp/sonosynth-cpu.lock python benchmarks/guided_levers.py --out /tmp/levers --part speed
    flock /tmp/sonosynth-cpu.lock python benchmarks/guided_levers.py --out /tmp/levers --part quality

`--part speed` times, for the preset (default `cpu`) and each of bf16 autocast, channels-last and both:
seconds per training step (denoiser + noisy classifier, the same batches for every variant, interleaved
rounds, median), and seconds per sampled image with DDIM-50 and DPM-Solver++-20 under classifier
guidance. Every figure is also given as a ratio to fp32 / default layout / DDIM-50 of this run.

`--part quality` trains one model per lever for the same wall time (`--seconds`; its step count is that
time over the step time `--part speed` measured for the lever, read from `--out`) and reports the
neighbour-difference energy and the saturated-pixel share of its samples beside the real images',
for DDIM-50 and DPM-Solver++-20, and writes one grid PNG per lever and sampler (real images on top).

Data: `--data` an ingested manifest folder (e.g. POCUS frames from `sonosynth ingest pocus`), or by
default a phantom dataset built in `--out`. Everything is written to `--out`, which must be outside the
repository (never commit real data or anything derived from it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = {"fp32": {}, "bf16": {"precision": "bf16"}, "channels_last": {"channels_last": True},
           "bf16+channels_last": {"precision": "bf16", "channels_last": True}}
SAMPLERS = {"ddim-50": {"sampler": "ddim", "steps": 50}, "dpm++-20": {"sampler": "dpm++", "steps": 20}}
# Quality levers: config updates on the preset (dotted keys), each trained for the same wall time.
QUALITY = {
    "baseline": {},
    "epsilon": {"schedule.prediction": "epsilon"},
    "min-snr-5": {"train.min_snr_gamma": 5.0},
    "bf16": {"precision": "bf16"},
}
SPEED_FILE = "speed.json"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder, outside the repository")
    parser.add_argument("--part", choices=["speed", "quality"], required=True)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--data", type=Path, default=None, help="a manifest folder (default: a phantom dataset)")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    parser.add_argument("--images", type=int, default=8, help="images per sampling measurement")
    parser.add_argument("--seconds", type=float, default=75.0, help="training wall time per quality lever")
    parser.add_argument("--levers", nargs="*", default=list(QUALITY), help=f"quality levers ({', '.join(QUALITY)})")
    parser.add_argument("--samples", type=int, default=8, help="samples per class per quality lever and sampler")
    args = parser.parse_args()
    if args.out.resolve().is_relative_to(REPO):
        parser.error(f"--out {args.out} is inside the repository; write benchmark outputs elsewhere (e.g. /tmp).")
    return args


def _manifest(args: argparse.Namespace, size: int):
    from sonosynth.data.manifest import Manifest
    from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset

    if args.data is not None:
        return Manifest.read(args.data)
    options = PhantomOptions(patients={"covid": 3, "pneumonia": 3, "healthy": 3}, frames=4, size=size, seed=0)
    manifest, _ = make_phantom_dataset(args.out / "phantom", options, progress=False)
    return manifest


def _with(config, updates: dict):
    """The config with dotted-key updates, validated."""
    values = config.model_dump()
    for key, value in updates.items():
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node[part]
        node[leaf] = value
    return type(config).model_validate(values)


def _real_uint8(data) -> np.ndarray:
    from sonosynth.generators.base import to_uint8

    return to_uint8(data.images.numpy())


def _sample_seconds(model, settings, images: int) -> float:
    from sonosynth.generators.guided.sampling import sample_batch

    sample_batch(model, [0], [10_000], settings.model_copy(update={"steps": 2}))  # warm-up: allocation, kernels
    start = time.perf_counter()
    sample_batch(model, [i % len(model.classes) for i in range(images)], list(range(images)), settings)
    return (time.perf_counter() - start) / images


def speed(args: argparse.Namespace) -> None:
    from sonosynth.config import load_config
    from sonosynth.generators.base import load_checkpoint_weights, read_record
    from sonosynth.generators.guided.config import GuidedConfig
    from sonosynth.generators.guided.data import held_out_split, load_training_tensors, resolve_classes
    from sonosynth.generators.guided.sampling import GuidedModel, resolve_settings
    from sonosynth.generators.guided.schedules import ddpm_scheduler
    from sonosynth.generators.guided.training import (
        _optimize,
        build_models,
        classifier_loss,
        denoiser_loss,
        fit,
    )

    device = torch.device("cpu")
    base = load_config(GuidedConfig, "guided", args.preset)
    manifest = _manifest(args, base.image_size)
    classes = resolve_classes(manifest, base.classes)
    data = load_training_tensors(manifest, classes, base.image_size, base.in_channels)
    train_index = torch.as_tensor(held_out_split(data, 0.0, 0)[0])
    scheduler = ddpm_scheduler(base.schedule)
    print(f"preset {args.preset}: {base.image_size}px, batch {base.train.batch_size}, {len(data.labels)} training "
          f"images, torch threads {torch.get_num_threads()}")

    variants = {name: _with(base, update) for name, update in LAYOUTS.items()}
    models = {}
    for name, config in variants.items():
        torch.manual_seed(0)
        models[name] = build_models(config, len(classes), device)

    def train_steps(name: str, first: int, count: int) -> float:
        config, m = variants[name], models[name]
        start = time.perf_counter()
        for step in range(first, first + count):
            loss = denoiser_loss(m.denoiser, data, config, scheduler, step, 0, device)
            c_loss = classifier_loss(m.classifier, data, train_index, config, scheduler, step, 0, device)
            _optimize(m, loss, c_loss, config)
        return (time.perf_counter() - start) / count

    for name in variants:
        train_steps(name, 0, 4)  # warm-up: allocation and oneDNN's kernel choice for each layout and dtype
    step_seconds: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in variants:
            step_seconds[name].append(train_steps(name, 4 + r * args.steps, args.steps))
    train = {name: statistics.median(values) for name, values in step_seconds.items()}

    ckpt = args.out / "speed-ckpt"
    if not (ckpt / "generator.json").is_file():
        fit(manifest, ckpt, _with(base, {"train.steps": 1, "train.checkpoint_every": 1}), device="cpu",
            progress=False)
    record = read_record(ckpt)
    tensors = load_checkpoint_weights(ckpt, record)
    sample: dict[str, dict[str, float]] = {}
    for name, config in variants.items():
        model = GuidedModel(ckpt, record, config, tensors, device)
        sample[name] = {}
        for sampler, overrides in SAMPLERS.items():
            settings = resolve_settings(model, {"guidance": "classifier", **overrides})
            sample[name][sampler] = _sample_seconds(model, settings, args.images)

    base_train, base_sample = train["fp32"], sample["fp32"]["ddim-50"]
    print(f"\n{'variant':<20} {'s/train step':>12} {'ratio':>6}   " + "   ".join(
        f"{s + ' s/img':>14} {'ratio':>6}" for s in SAMPLERS))
    for name in variants:
        cells = "   ".join(f"{sample[name][s]:>14.3f} {sample[name][s] / base_sample:>6.2f}" for s in SAMPLERS)
        print(f"{name:<20} {train[name]:>12.3f} {train[name] / base_train:>6.2f}   {cells}")
    print("ratios: to fp32 / default layout (training) and to fp32 DDIM-50 (sampling), classifier guidance; "
          f"rounds: {step_seconds}")
    result = {"preset": args.preset, "train_seconds_per_step": train, "sample_seconds_per_image": sample,
              "rounds": step_seconds}
    (args.out / SPEED_FILE).write_text(json.dumps(result, indent=2) + "\n")


def _grid(real: list[np.ndarray], samples: list[np.ndarray]) -> np.ndarray:
    """Per class, a row of real images above a row of its samples; (H, W) uint8 on a white background."""
    side = samples[0].shape[-1]
    rows = [row for pair in zip(real, samples, strict=True) for row in pair]
    columns = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (side + 2), columns * (side + 2)), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            canvas[r * (side + 2):r * (side + 2) + side, c * (side + 2):c * (side + 2) + side] = image
    return canvas


def quality(args: argparse.Namespace) -> None:
    from sonosynth.config import load_config
    from sonosynth.data.images import save_png
    from sonosynth.generators.base import to_uint8
    from sonosynth.generators.guided.config import GuidedConfig
    from sonosynth.generators.guided.data import load_training_tensors, resolve_classes
    from sonosynth.generators.guided.diagnostics import neighbour_difference, saturated_share
    from sonosynth.generators.guided.sampling import load_model, resolve_settings, sample_batch
    from sonosynth.generators.guided.training import fit

    speed_file = args.out / SPEED_FILE
    if not speed_file.is_file():
        raise SystemExit(f"{speed_file} is missing: run --part speed with the same --out first.")
    rates = json.loads(speed_file.read_text())["train_seconds_per_step"]
    base = load_config(GuidedConfig, "guided", args.preset)
    manifest = _manifest(args, base.image_size)
    classes = resolve_classes(manifest, base.classes)
    data = load_training_tensors(manifest, classes, base.image_size, base.in_channels)
    real = _real_uint8(data)
    labels = data.labels.numpy()
    real_energy = neighbour_difference(real)
    print(f"real: {len(real)} images of {classes}, neighbour difference {real_energy:.2f}, saturated "
          f"{saturated_share(real):.3f}")
    rows = []
    for lever in args.levers:
        update = QUALITY[lever]
        layout = next((name for name, values in LAYOUTS.items()
                       if values == {k: v for k, v in update.items() if k in ("precision", "channels_last")}), "fp32")
        steps = max(1, int(args.seconds / rates[layout]))
        config = _with(base, {**update, "train.steps": steps, "train.checkpoint_every": steps,
                              "train.warmup_steps": max(1, round(base.train.warmup_steps * steps / base.train.steps)),
                              "checkpoint_interval": "1000h"})
        out = args.out / "quality" / lever
        start = time.perf_counter()
        fit(manifest, out, config, device="cpu", progress=False)
        trained = time.perf_counter() - start
        model = load_model(out, "cpu")
        for sampler, overrides in SAMPLERS.items():
            settings = resolve_settings(model, {"guidance": "classifier", **overrides})
            wanted = [k for k in range(len(classes)) for _ in range(args.samples)]
            images = to_uint8(sample_batch(model, wanted, list(range(len(wanted))), settings).numpy())
            energy = neighbour_difference(images)
            rows.append({"lever": lever, "steps": steps, "train_s": round(trained, 1), "sampler": sampler,
                         "neighbour_difference": round(energy, 2), "ratio_to_real": round(energy / real_energy, 2),
                         "saturated": round(saturated_share(images), 4)})
            print(rows[-1], flush=True)
            grid = _grid([real[labels == k][:args.samples] for k in range(len(classes))],
                         [images[np.asarray(wanted) == k] for k in range(len(classes))])
            save_png(args.out / "grids" / f"{lever}_{sampler}.png", grid)
    print(f"\n{'lever':<20} {'steps':>6} {'train s':>8} {'sampler':<9} {'nbr diff':>9} {'/ real':>7} {'saturated':>9}")
    for row in rows:
        print(f"{row['lever']:<20} {row['steps']:>6} {row['train_s']:>8} {row['sampler']:<9} "
              f"{row['neighbour_difference']:>9} {row['ratio_to_real']:>7} {row['saturated']:>9}")
    print(f"real neighbour difference {real_energy:.2f}; grids (real images on top) in {args.out / 'grids'}")
    (args.out / "quality.json").write_text(json.dumps({"real": real_energy, "rows": rows}, indent=2) + "\n")


def main() -> None:
    args = _arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    speed(args) if args.part == "speed" else quality(args)


if __name__ == "__main__":
    main()
