"""SinGAN speed: seconds per iteration at every scale, total fit time, and samples per second.

Trains the given preset (default `cpu`) on one POCUS pneumonia still image, then samples from it.
Run under the team's CPU lock:
    flock /tmp/sonosynth-cpu.lock python benchmarks/singan_speed.py [--preset cpu] [--image PATH] [--samples 32]
Outputs go to a temporary folder (or --out) outside the project: they derive from the real data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from sonosynth.config import load_config
from sonosynth.generators.base import training_manifest
from sonosynth.generators.singan.checkpoints import SinGANModel, losses_path
from sonosynth.generators.singan.config import SinGANConfig
from sonosynth.generators.singan.sampling import generate
from sonosynth.generators.singan.training import fit

POCUS_IMAGE = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pocus" / "pocus_images" / "convex"
               / "Pneu_Avi_consolidated-lung.JPG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--image", type=Path, default=POCUS_IMAGE)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="keep the checkpoint here (default: a temp folder)")
    args = parser.parse_args()
    if not args.image.is_file():
        raise SystemExit(f"{args.image} not found; pass --image with a pneumonia still image.")
    config = load_config(SinGANConfig, "singan", args.preset)
    with tempfile.TemporaryDirectory(prefix="singan-bench-") as tmp:
        out = args.out or Path(tmp) / "fit"
        began = time.perf_counter()
        fit(training_manifest([args.image], "pneumonia"), out, config, device="cpu", progress=False)
        fit_seconds = time.perf_counter() - began
        model = SinGANModel.from_pretrained(out, "cpu").pyramids[0]
        losses = pd.read_csv(losses_path(out, model.name))
        per_scale = losses.groupby("scale")["seconds"].agg(["mean", "sum"]).reset_index()
        per_scale["shape"] = [f"{h}x{w}" for h, w in model.shapes]
        per_scale["channels"] = [config.widths(int(s))[0] for s in per_scale["scale"]]
        generate(model, [0])  # warm-up
        began = time.perf_counter()
        for start in range(0, args.samples, config.sample_batch_size):
            generate(model, list(range(start, min(args.samples, start + config.sample_batch_size))))
        sample_seconds = time.perf_counter() - began

    print(f"SinGAN preset {args.preset!r} on {args.image.name}: {model.shapes[-1][0]}x{model.shapes[-1][1]} px, "
          f"{len(model.shapes)} scales, {config.iterations} iterations per scale, torch threads {torch.get_num_threads()}")
    print(f"{'scale':>5} {'shape':>9} {'ch':>4} {'s/iter':>8} {'s total':>8}")
    for row in per_scale.itertuples():
        print(f"{row.scale:>5} {row.shape:>9} {row.channels:>4} {row.mean:>8.3f} {row.sum:>8.1f}")
    print(f"total fit time: {fit_seconds:.1f} s ({fit_seconds / 60:.1f} min)")
    print(f"sampling: {args.samples / sample_seconds:.1f} samples/s at {model.shapes[-1][0]}x{model.shapes[-1][1]} "
          f"(batch {config.sample_batch_size})")


if __name__ == "__main__":
    main()
