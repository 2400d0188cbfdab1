"""`sonosynth quality`: image-quality and privacy metrics of a SyntheticSet against the real data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer, train_app: typer.Typer, generate_app: typer.Typer) -> None:
    @app.command("quality")
    def quality_command(
        synthetic_manifest: Annotated[Path, typer.Argument(metavar="SYNTH_MANIFEST",
                                                           help="the SyntheticSet's manifest.csv (or its folder)")],
        real: Annotated[Path, typer.Option("--real", help="manifest.csv (or folder) of the real training images")],
        out: Annotated[Path, typer.Option("--out", "-o", help="folder for quality.csv/.md and the audit tables")],
        inception_weights: Annotated[Path | None, typer.Option(
            help="a torchvision inception_v3 state dict (.pth), for machines without internet")] = None,
        features: Annotated[str | None, typer.Option(
            help="'inception' (default, ImageNet), 'classifier:CKPT' (a sonosynth classifier's features) or "
                 "'random_cnn' (a fixed seeded CNN: the same space everywhere, blind to noise)")] = None,
        reader_real: Annotated[Path | None, typer.Option(
            "--reader-real", help="manifest.csv (or folder) of real images for the automatic reader (default: "
                                  "--real); patients any synthetic image came from are left out")] = None,
        no_reader: Annotated[bool, typer.Option("--no-reader", help="skip the automatic reader")] = False,
        threshold: Annotated[float | None, typer.Option(
            help="NCC above which a synthetic image is flagged as a near-copy (default 0.95)")] = None,
        preset: Annotated[str, typer.Option(help="settings preset (smoke, cpu, paper) or a YAML file")] = "cpu",
        device: Annotated[str, typer.Option(help="auto, cpu or cuda:N")] = "auto",
    ) -> None:
        """SIFID, SSIM, FID, KID, copy rate, diversity and the automatic reader per generator, plus the memorization audit."""
        from sonosynth.classify.features import feature_extractor
        from sonosynth.console import console, print_table
        from sonosynth.data.manifest import Manifest
        from sonosynth.device import resolve_device
        from sonosynth.metrics.quality import (
            display_table,
            evaluate_quality,
            load_quality_config,
            write_report,
        )

        overrides: dict = {} if threshold is None else {"threshold": threshold}
        if no_reader:
            overrides["reader_enabled"] = False
        config = load_quality_config(preset, overrides)
        synthetic, real_manifest = Manifest.read(synthetic_manifest), Manifest.read(real)
        held_out = Manifest.read(reader_real) if reader_real is not None else None
        extractor = feature_extractor(features, inception_weights, resolve_device(device), config.inception_size)
        report = evaluate_quality(synthetic, real_manifest, extractor, config, progress=True, reader_real=held_out)
        paths = write_report(report, out)
        print_table(display_table(report.table), title=f"image quality per generator ({report.features})")
        flagged = report.memorization[report.memorization["flagged"]]
        if len(flagged):
            print_table(flagged[["path", "nearest_real", "ncc", "ssim"]].reset_index(drop=True),
                        title=f"{len(flagged)} near-copies (NCC > {config.threshold})")
        else:
            console.print(f"no synthetic image has NCC > {config.threshold} with a real image.")
        console.print(f"wrote {', '.join(str(p) for p in paths.values())}")
