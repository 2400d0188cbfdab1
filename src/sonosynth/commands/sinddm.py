"""`sonosynth train sinddm` and `sonosynth generate sinddm`: options in, library calls out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sonosynth.errors import SonosynthError


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'HxW' (or one number for a square) -> (height, width) in pixels."""
    if text is None:
        return None
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError as exc:
        raise SonosynthError(f"--size {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 223x300.") from exc
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise SonosynthError(f"--size {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 223x300.")
    return values[0], values[1]


def parse_scale_mul(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise SonosynthError(f"--scale-mul {text!r}: expected HxW multipliers, e.g. 1x2 or 1.5.") from exc
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def register(app: typer.Typer, train_app: typer.Typer, generate_app: typer.Typer) -> None:
    @train_app.command("sinddm")
    def train_sinddm(
        inputs: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="one image (SinDDM), several "
                                                     "(FewDDM), or one manifest.csv / dataset folder")],
        out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint folder (created)")],
        preset: Annotated[str, typer.Option(help="smoke | cpu | paper, or a YAML file of SinDDMConfig fields")] = "cpu",
        overrides: Annotated[list[str] | None, typer.Option("--set", help="override a config field, key=value "
                                                            "(repeatable), e.g. --set train_steps=500")] = None,
        label: Annotated[str | None, typer.Option(help="label of the training images (image files default to "
                                                  "'unlabelled')")] = None,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
        resume: Annotated[bool, typer.Option(help="continue from the checkpoint in --out if there is one")] = True,
    ) -> None:
        """Train SinDDM on one image, or FewDDM on several; shows loss and steps/s."""
        from sonosynth.config import load_config, parse_overrides
        from sonosynth.console import console
        from sonosynth.generators.base import create_generator, training_manifest
        from sonosynth.generators.sinddm import SinDDMConfig

        config = load_config(SinDDMConfig, "sinddm", preset, parse_overrides(overrides))
        training = training_manifest(inputs, label)
        name = "fewddm" if len(training) > 1 else "sinddm"
        folder = create_generator(name).fit(training, out, config, device=device, resume=resume, progress=True)
        console.print(f"[green]{name}[/] trained on {len(training)} image(s); checkpoint in {folder}")

    @generate_app.command("sinddm")
    def generate_sinddm(
        checkpoint: Annotated[Path, typer.Argument(metavar="CKPT", help="the folder `train sinddm` wrote, or its "
                                                   "checkpoint.pt")],
        out: Annotated[Path, typer.Option("--out", "-o", help="SyntheticSet folder (PNGs + manifest.csv)")],
        n: Annotated[int, typer.Option("-n", help="number of images")] = 32,
        size: Annotated[str | None, typer.Option(help="output HEIGHTxWIDTH in pixels (default: training size)")] = None,
        scale_mul: Annotated[str | None, typer.Option(help="HxW multipliers of the training size, e.g. 1x2")] = None,
        seed: Annotated[int, typer.Option(help="seed of the first image; image i uses seed + i")] = 0,
        stride: Annotated[int | None, typer.Option(help="sampling step stride (1 = official)")] = None,
        label: Annotated[str | None, typer.Option(help="label of the synthetic rows (default: training label)")] = None,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    ) -> None:
        """Sample a trained SinDDM/FewDDM into a SyntheticSet; re-running continues where it stopped."""
        from sonosynth.console import console
        from sonosynth.generators.base import create_generator

        settings = {}
        if stride is not None:
            settings["stride"] = stride
        if scale_mul is not None:
            settings["scale_mul"] = parse_scale_mul(scale_mul)
        manifest = create_generator("sinddm").sample(checkpoint, n, out, label=label, size=parse_size(size),
                                                     seed=seed, device=device, progress=True, **settings)
        console.print(f"[green]{len(manifest)}[/] images in {out}")
