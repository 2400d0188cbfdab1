"""CLI for the SinGAN baseline: `sonosynth train singan ...` and `sonosynth generate singan ...`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sonosynth.console import console


def register(app: typer.Typer, train_app: typer.Typer, generate_app: typer.Typer) -> None:
    @train_app.command("singan")
    def train_singan(
        inputs: Annotated[list[Path], typer.Argument(metavar="IMAGE_OR_MANIFEST...",
                                                     help="image files, or one manifest.csv (or its folder)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint folder (resumed if it exists)")],
        preset: Annotated[str, typer.Option(help="smoke | cpu | paper, or a YAML file of settings")] = "cpu",
        set_: Annotated[list[str] | None, typer.Option("--set", help="override a setting: key=value (repeatable)")] = None,
        label: Annotated[str | None, typer.Option(help="label of loose image files; with a manifest, keep only this label")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda:N")] = "auto",
        resume: Annotated[bool, typer.Option(help="continue an interrupted fit in --out")] = True,
    ) -> None:
        """Train SinGAN: one pyramid of patch-GANs per training image (the study's protocol)."""
        from sonosynth.config import load_config, parse_overrides
        from sonosynth.generators.base import training_manifest
        from sonosynth.generators.singan.config import SinGANConfig
        from sonosynth.generators.singan.training import fit

        config = load_config(SinGANConfig, "singan", preset, parse_overrides(set_))
        training = training_manifest(inputs, label)
        folder = fit(training, out, config, device=device, resume=resume, progress=True)
        console.print(f"[green]SinGAN trained[/] on {len(training)} image(s); checkpoint folder: {folder}")

    @generate_app.command("singan")
    def generate_singan(
        checkpoint: Annotated[Path, typer.Argument(metavar="CKPT", help="the --out folder of `train singan` (or one model in it)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="output folder for PNGs and manifest.csv")],
        n: Annotated[int, typer.Option("-n", help="number of images (spread round-robin over the models)")] = 32,
        size: Annotated[str | None, typer.Option(help="output size HxW (default: the training scale's size)")] = None,
        seed: Annotated[int, typer.Option(help="seed of the first image; image i uses seed+i")] = 0,
        label: Annotated[str | None, typer.Option(help="label of the samples (default: the training label)")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda:N")] = "auto",
    ) -> None:
        """Sample a trained SinGAN into a SyntheticSet (PNGs + manifest.csv with provenance)."""
        from sonosynth.generators.singan.sampling import parse_size, sample

        manifest = sample(checkpoint, n, out, label=label, size=parse_size(size) if size else None, seed=seed,
                          device=device, progress=True)
        console.print(f"[green]{len(manifest)} image(s)[/] in {out}")
