"""`sonosynth classify`: train a classifier under one regime on one fold and score it on the fold's real images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

REGIME_HELP = ("real | real+regular | real+synthetic | real+synthetic+regular | synthetic-only | "
               "pretrain-synthetic->finetune-real | mixed")


def register(app: typer.Typer, train_app: typer.Typer, generate_app: typer.Typer) -> None:
    @app.command("classify")
    def classify_command(
        manifest_path: Annotated[Path, typer.Argument(metavar="MANIFEST", help="real images: manifest.csv or its folder")],
        folds: Annotated[Path, typer.Option(help="folds.csv from `sonosynth split`")],
        out: Annotated[Path, typer.Option("--out", "-o", help="output folder (metrics.json, confusion.csv, ...)")],
        fold: Annotated[int, typer.Option(help="the fold scored; the other folds train")] = 0,
        model: Annotated[str, typer.Option(help="classifier from the zoo, e.g. small_cnn, pocovidnet, resnet50")] = (
            "small_cnn"
        ),
        regime: Annotated[str, typer.Option(help=REGIME_HELP)] = "real+regular",
        synthetic: Annotated[Path | None, typer.Option(help="SyntheticSet manifest for the synthetic regimes")] = None,
        keep: Annotated[float, typer.Option(help="share of minority-class training patients kept (from folds.csv)")] = 1.0,
        preset: Annotated[str, typer.Option(help="training preset: smoke, cpu, paper, or a YAML file")] = "cpu",
        set_: Annotated[list[str] | None, typer.Option("--set", help="override a preset field, e.g. --set epochs=5")] = None,
        stop_manifest: Annotated[Path | None, typer.Option(
            help="real images for early stopping (default: patients held out of the fold's training side)")] = None,
        pretrained: Annotated[str, typer.Option(help="none | imagenet | a classifier checkpoint to start from")] = "none",
        weights: Annotated[Path | None, typer.Option(help="local ImageNet state-dict file for --pretrained imagenet")] = None,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda:0")] = "auto",
        progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    ) -> None:
        """Train a classifier under a regime on one fold; report per-class scores on the fold's real images."""
        import time

        import pandas as pd

        from sonosynth.classify.regimes import clear_regime_outputs, read_regime_result
        from sonosynth.classify.training import load_train_config
        from sonosynth.config import parse_overrides
        from sonosynth.console import console, print_table
        from sonosynth.data.manifest import Manifest
        from sonosynth.data.split import read_folds, split_fold
        from sonosynth.experiment.cache import run_in
        from sonosynth.experiment.plan import regime_unit
        from sonosynth.outputs import removed_on_failure

        started = time.perf_counter()
        if not 0 < keep <= 1:
            raise typer.BadParameter("must be in (0, 1]", param_hint="--keep")
        config = load_train_config(preset, parse_overrides(set_))
        data = split_fold(Manifest.read(manifest_path), read_folds(folds), fold, keep)
        synthetic_set = Manifest.read(synthetic) if synthetic is not None else None
        stop = Manifest.read(stop_manifest) if stop_manifest is not None else None
        console.print(
            f"fold {fold}: {len(data.train)} training images ({data.train.table['patient_id'].nunique()} patients), "
            f"{len(data.validation)} validation images ({data.validation.table['patient_id'].nunique()} patients); "
            f"{model}, regime {regime}, preset {preset} ({config.image_size} px)"
        )
        unit = regime_unit(regime, model, config, data, synthetic_set, stop, pretrained, weights, device, progress)
        with removed_on_failure(out):  # a failed run leaves no half-written folder behind
            computed = run_in(out, unit, out, clear=clear_regime_outputs)
        if not computed:
            console.print(f"[yellow]{out} already holds this exact run; showing its results.[/]")
        result = read_regime_result(out)
        print_table(result.plan, title="training images")
        console.print(f"early stopping on {len(result.stop_patients)} patients held out of the training side")
        metrics = result.metrics
        console.print(f"scored on {metrics['images']} real validation images ({metrics['patients']} patients)")
        print_table(result.per_class.reset_index(), title="per-class scores")
        console.print(f"accuracy {metrics['accuracy']:.4f}   balanced accuracy {metrics['balanced_accuracy']:.4f}   "
                      f"macro F1 {metrics['macro_f1']:.4f}")
        confusion = result.confusion.copy()
        confusion.index = pd.Index([f"true {label}" for label in confusion.index], name="")
        confusion.columns = [f"pred {label}" for label in confusion.columns]
        print_table(confusion, title="confusion matrix", index=True)
        for stage in result.stages:
            console.print(f"stage {stage.name}: {stage.images} images, {stage.epochs_run} epochs, "
                          f"best epoch {stage.best_epoch}" + (", stopped early" if stage.stopped_early else ""))
        console.print(f"[green]done[/] in {time.perf_counter() - started:.1f} s "
                      f"(training and scoring {result.seconds:.1f} s); outputs in {out}")
