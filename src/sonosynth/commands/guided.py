"""CLI of the guided-diffusion generator: `sonosynth train guided` and `sonosynth generate guided`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sonosynth.console import console, print_table


def register(app: typer.Typer, train_app: typer.Typer, generate_app: typer.Typer) -> None:
    @train_app.command("guided")
    def train_guided(
        manifest: Annotated[Path, typer.Argument(metavar="MANIFEST", help="manifest.csv (or its folder) of all classes")],
        out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint folder")],
        preset: Annotated[str, typer.Option(help="smoke, cpu, paper, or a YAML file")] = "cpu",
        set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field: key=value "
                                                       "(dotted keys, e.g. train.steps=500)")] = None,
        resume: Annotated[bool, typer.Option(help="continue the run already in --out")] = False,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda:0")] = "auto",
    ) -> None:
        """Train the class-conditional denoiser and its noisy classifier (torchrun -m sonosynth ... for DDP)."""
        from sonosynth.config import load_config, parse_overrides
        from sonosynth.data.manifest import Manifest
        from sonosynth.generators.guided.config import GuidedConfig
        from sonosynth.generators.guided.distributed import launched_by_torchrun
        from sonosynth.generators.guided.training import EVAL_NAME, fit

        config = load_config(GuidedConfig, "guided", preset, parse_overrides(set_))
        folder = fit(Manifest.read(manifest), out, config, device=device, resume=resume)
        import os

        if not launched_by_torchrun() or os.environ.get("RANK") == "0":
            console.print(f"[green]checkpoint[/] {folder / 'checkpoint.pt'}")
            if (folder / EVAL_NAME).is_file():
                import pandas as pd

                print_table(pd.read_csv(folder / EVAL_NAME), title="noisy classifier, held-out accuracy by t")

    @generate_app.command("guided")
    def generate_guided(
        checkpoint: Annotated[Path, typer.Argument(metavar="CKPT", help="checkpoint folder or checkpoint.pt")],
        out: Annotated[Path, typer.Option("--out", "-o", help="output folder (one SyntheticSet per round)")],
        per_class: Annotated[int, typer.Option(help="images of each class per round")],
        rounds: Annotated[int, typer.Option(help="rounds, each a SyntheticSet out/round-<r> with new seeds")] = 1,
        labels: Annotated[str | None, typer.Option(help="comma-separated classes (default: all trained)")] = None,
        guidance: Annotated[str | None, typer.Option(help="classifier, cfg or none (default: the preset's)")] = None,
        scale: Annotated[float | None, typer.Option(help="classifier scale, or the cfg weight w")] = None,
        sampler: Annotated[str | None, typer.Option(help="ddim or ddpm (ddpm walks the full schedule)")] = None,
        steps: Annotated[int | None, typer.Option(help="DDIM steps")] = None,
        batch_size: Annotated[int | None, typer.Option(help="images per batch")] = None,
        seed: Annotated[int, typer.Option(help="base seed; each image has its own seed")] = 0,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda:0")] = "auto",
    ) -> None:
        """Sample labelled images; re-running continues where it stopped and never exceeds --per-class."""
        from sonosynth.generators.guided.sampling import generate_rounds

        settings = {key: value for key, value in {"guidance": guidance, "scale": scale, "sampler": sampler,
                                                  "steps": steps, "batch_size": batch_size}.items()
                    if value is not None}
        chosen = [s.strip() for s in labels.split(",") if s.strip()] if labels else None
        sets = generate_rounds(checkpoint, out, per_class, rounds, labels=chosen, seed=seed, device=device, **settings)
        for r, manifest in enumerate(sets, start=1):
            print_table(manifest.counts(), title=f"round {r}: {len(manifest)} images in {out / f'round-{r}'}",
                        index=True)
