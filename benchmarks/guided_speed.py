"""Speed of the guided-diffusion `cpu` preset on this machine: training steps/s, DDIM-50 images/s, peak memory.

    flock /tmp/sonosynth-cpu.lock .venv/bin/python benchmarks/guided_speed.py [--steps 20] [--images 50]

Runs on a small phantom dataset at the preset's size, so it needs no real data.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    from sonosynth.config import load_config
    from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset
    from sonosynth.device import resolve_device
    from sonosynth.generators.guided.config import GuidedConfig
    from sonosynth.generators.guided.data import held_out_split, load_training_tensors, resolve_classes
    from sonosynth.generators.guided.networks import parameter_count
    from sonosynth.generators.guided.sampling import load_model, resolve_settings, sample_batch
    from sonosynth.generators.guided.schedules import ddpm_scheduler
    from sonosynth.generators.guided.training import (
        _optimize,
        build_models,
        classifier_loss,
        denoiser_loss,
        fit,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (after 2 warm-up steps)")
    parser.add_argument("--images", type=int, default=50, help="images sampled with DDIM-50")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    config = load_config(GuidedConfig, "guided", args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        options = PhantomOptions(patients={"covid": 2, "pneumonia": 2, "healthy": 2}, frames=4,
                                 size=config.image_size, seed=0)
        manifest, _ = make_phantom_dataset(Path(tmp) / "data", options, progress=False)
        classes = resolve_classes(manifest, None)
        data = load_training_tensors(manifest, classes, config.image_size, config.in_channels)
        train_index = torch.as_tensor(held_out_split(data, 0.0, 0)[0])
        models = build_models(config, len(classes), device)
        scheduler = ddpm_scheduler(config.schedule)
        print(f"preset {args.preset}: {config.image_size}x{config.image_size}, denoiser "
              f"{parameter_count(models.denoiser) / 1e6:.2f}M parameters, classifier "
              f"{parameter_count(models.classifier) / 1e6:.2f}M, batch {config.train.batch_size}, "
              f"torch threads {torch.get_num_threads()}, device {device}")

        def train_step(step: int) -> None:
            loss = denoiser_loss(models.denoiser, data, config, scheduler, step, 0, device)
            c_loss = classifier_loss(models.classifier, data, train_index, config, scheduler, step, 0, device)
            _optimize(models, loss, c_loss, config)

        for step in range(2):
            train_step(step)
        start = time.perf_counter()
        for step in range(args.steps):
            train_step(step)
        train_seconds = time.perf_counter() - start
        rate = args.steps / train_seconds
        print(f"training: {rate:.3f} steps/s ({1 / rate:.2f} s/step) -> {config.train.steps} preset steps in "
              f"{config.train.steps / rate / 60:.1f} min")

        ckpt = Path(tmp) / "ckpt"
        fit(manifest, ckpt, config.model_copy(update={"train": config.train.model_copy(
            update={"steps": 1, "checkpoint_every": 1})}), device=args.device, progress=False)
        model = load_model(ckpt, args.device)
        for guidance in ("classifier", "cfg", "none"):
            settings = resolve_settings(model, {"guidance": guidance, "sampler": "ddim", "steps": 50})
            batch = config.sample_batch_size
            start = time.perf_counter()
            done = 0
            while done < args.images:
                count = min(batch, args.images - done)
                sample_batch(model, [0] * count, list(range(done, done + count)), settings)
                done += count
            seconds = time.perf_counter() - start
            print(f"DDIM-50 sampling, {guidance} guidance: {args.images / seconds:.2f} images/s "
                  f"(batch {batch}; 300 images in {300 / (args.images / seconds) / 60:.1f} min)")
    print(f"peak memory: {peak_memory_mb(device):.0f} MiB ({'CUDA allocated' if device.type == 'cuda' else 'RSS'})")


if __name__ == "__main__":
    main()
