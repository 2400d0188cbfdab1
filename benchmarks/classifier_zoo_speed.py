"""Print each zoo classifier's parameter count and its training-step and inference throughput on this machine.

Run: python benchmarks/classifier_zoo_speed.py [--size 64] [--batch 16] [--models small_cnn,medmamba_compact]
Target (CPU presets): small_cnn trains at >= 100 images/s at 64 px on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from sonosynth.classify import classifier_names, create_classifier


def images_per_second(model: nn.Module, batch: int, size: int, channels: int, train: bool, repeats: int) -> float:
    x = torch.rand(batch, channels, size, size)
    target = torch.randint(0, model.num_classes, (batch,))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train(train)

    def step() -> None:
        if train:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), target).backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(x)

    step()  # warm-up: allocator, kernels
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=None, help="comma-separated names (default: all)")
    args = parser.parse_args()
    names = args.models.split(",") if args.models else classifier_names()
    print(f"torch threads: {torch.get_num_threads()}, {args.size} px, batch {args.batch}")
    print(f"{'model':<12} {'params':>10} {'trainable':>10} {'train img/s':>12} {'infer img/s':>12}")
    for name in names:
        torch.manual_seed(0)
        model = create_classifier(name, 3, in_channels=args.channels, image_size=args.size)
        params = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        train = images_per_second(model, args.batch, args.size, args.channels, True, args.repeats)
        infer = images_per_second(model, args.batch, args.size, args.channels, False, args.repeats)
        print(f"{name:<12} {params:>10,} {trainable:>10,} {train:>12.1f} {infer:>12.1f}")


if __name__ == "__main__":
    main()
