"""`sonosynth train KIND` and `sonosynth generate KIND` for every registered generator: options in, calls out.

The commands are the same for every generator (registered from `generators.base`): a new generator
gets both commands by registering itself, with no CLI code. Generator-specific settings go through
`--set key=value` (config fields for train, SampleSettings fields for generate), validated by the
generator's typed config or settings.
"""

from __future__ import annotations

import os
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
    if len(values) != 2 or min(values) < 8:
        raise SonosynthError(f"--size {text!r}: expected HEIGHTxWIDTH in pixels with both sides at least 8, "
                             "e.g. 223x300.")
    return values[0], values[1]


def settings_help(kind: str) -> str:
    """--set help of `generate KIND`: the generator's sampling settings and their choices, when it declares them."""
    from typing import Literal, get_args, get_origin

    from sonosynth.generators.base import create_generator

    settings_type = getattr(type(create_generator(kind)), "settings_type", None)
    if settings_type is None:
        return "a sampling setting, key=value (repeatable), e.g. --set stride=2"
    described = []
    for name, field in settings_type.model_fields.items():
        choices = [arg for arg in get_args(field.annotation) if get_origin(arg) is Literal]
        described.append(f"{name}={'|'.join(map(str, get_args(choices[0])))}" if choices else name)
    return (f"a sampling setting, key=value (repeatable): {', '.join(described)}; defaults are the checkpoint's "
            "(set at training with --set sample.NAME=VALUE)")


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports


def _train_command(kind: str):
    def train(
        inputs: Annotated[list[Path], typer.Argument(metavar="IMAGE_OR_MANIFEST...", help="image files, or one "
                                                     "manifest.csv (or its folder)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint folder (resumed if it holds one)")],
        preset: Annotated[str, typer.Option(help="smoke | cpu | paper, or a YAML file of config fields")] = "cpu",
        overrides: Annotated[list[str] | None, typer.Option("--set", help="override a config field, key=value "
                                                            "(repeatable; dotted keys for nested fields, e.g. "
                                                            "train.steps=500)")] = None,
        budget: Annotated[str | None, typer.Option(help="train for this wall time (e.g. 20m, 1h30m) instead of "
                                                   "the preset's step count")] = None,
        label: Annotated[str | None, typer.Option(help="label of loose image files; with a manifest, keep only "
                                                  "this label")] = None,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
        resume: Annotated[bool, typer.Option(help="continue the checkpoint in --out (--no-resume refuses an "
                                                  "existing checkpoint; nothing is deleted)")] = True,
    ) -> None:
        from sonosynth.config import load_config, parse_overrides
        from sonosynth.console import console
        from sonosynth.generators.base import create_generator, read_record, training_manifest

        generator = create_generator(kind)
        values = parse_overrides(overrides)
        if budget is not None:
            values["budget"] = budget
        config = load_config(generator.config_type, generator.presets, preset, values)
        training = training_manifest(inputs, label)
        if kind == "sinddm" and len(training) > 1:
            generator = create_generator("fewddm")  # the study's name for several images
        folder = generator.fit(training, out, config, device=device, resume=resume, progress=True)
        if _is_main_process():
            record = read_record(folder)
            step = f" ({record.step} steps)" if record is not None else ""
            console.print(f"[green]{generator.name}[/] trained on {len(training)} image(s){step}; checkpoint in {folder}")

    train.__doc__ = f"Train the {kind} generator into a checkpoint folder (shared layout; resumable)."
    return train


def _generate_command(kind: str):
    def generate(
        checkpoint: Annotated[Path, typer.Argument(metavar="CKPT", help="the --out folder of `sonosynth train`")],
        out: Annotated[Path, typer.Option("--out", "-o", help="SyntheticSet folder (PNGs + manifest.csv)")],
        n: Annotated[int, typer.Option("-n", help="images per label (the total when no label is given)")] = 32,
        labels: Annotated[list[str] | None, typer.Option("--label", help="label of the images: the class to "
                                                         "generate (class-conditional) or the rows' label; "
                                                         "repeatable")] = None,
        size: Annotated[str | None, typer.Option(help="output HEIGHTxWIDTH in pixels (default: training size)")] = None,
        seed: Annotated[int, typer.Option(help="seed of the first image; image i uses seed + i")] = 0,
        settings: Annotated[list[str] | None, typer.Option("--set")] = None,  # help: settings_help(kind), below
        device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    ) -> None:
        from sonosynth.config import parse_overrides
        from sonosynth.console import print_table
        from sonosynth.generators.base import create_generator

        generator = create_generator(kind)
        values = parse_overrides(settings)
        manifest = None
        for label in labels or [None]:
            manifest = generator.sample(checkpoint, n, out, label=label, size=parse_size(size), seed=seed,
                                        device=device, progress=True, **values)
        assert manifest is not None
        print_table(manifest.counts(), title=f"{len(manifest)} images in {out}", index=True)

    # Annotations are strings here (postponed evaluation), so the per-kind help is put in as an object.
    generate.__annotations__["settings"] = Annotated[list[str] | None, typer.Option("--set", help=settings_help(kind))]
    generate.__doc__ = f"Sample a trained {kind} checkpoint into a SyntheticSet; re-running continues where it stopped."
    return generate


def register(app: typer.Typer, train_app: typer.Typer, generate_app: typer.Typer) -> None:
    from sonosynth.generators.base import generator_names

    for kind in generator_names():
        train_app.command(kind)(_train_command(kind))
        generate_app.command(kind)(_generate_command(kind))
