"""The `sonosynth` command: a thin layer that parses options, calls library functions, prints results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from sonosynth import __version__
from sonosynth.commands.output_guard import guard_outputs
from sonosynth.console import console, print_table
from sonosynth.errors import SonosynthError
from sonosynth.logs import configure as configure_logging

app = typer.Typer(
    help="sonosynth: train small generative models on few ultrasound images, synthesize the classes you lack, "
    "and measure with a leakage-free protocol whether the synthetic images help a classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ingest_app = typer.Typer(help="Turn a dataset into PNG frames plus a manifest.csv.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
train_app = typer.Typer(help="Train a generator on images or a manifest; writes a checkpoint folder.",
                        no_args_is_help=True)
app.add_typer(train_app, name="train")
generate_app = typer.Typer(help="Sample a trained generator into a SyntheticSet (PNGs + manifest.csv).",
                           no_args_is_help=True)
app.add_typer(generate_app, name="generate")

def _print_version(value: bool) -> None:
    if value:
        console.print(f"sonosynth {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="more detail (debug messages); accepted after any command too")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only warnings and errors, no progress bars")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="print the version and exit")] = False,
) -> None:
    """Options for every command: -v / -q set how much is logged (on a terminal with colours and bars,
    otherwise as plain timestamped lines)."""
    configure_logging(-1 if quiet else verbose)


# Each area adds its commands from its own module (sonosynth/commands/<area>.py, a `register` function),
# so the CLI stays thin and areas do not edit one shared file.
COMMAND_MODULES = ("generators", "classify", "quality", "experiment", "reader_study")


def _register_command_modules() -> None:
    import importlib

    for name in COMMAND_MODULES:
        module_name = f"sonosynth.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(app=app, train_app=train_app, generate_app=generate_app)


def _split_list(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _print_ingest_summary(manifest, report, out: Path) -> None:
    from sonosynth.data.ingest import SKIPPED_FILENAME

    if report.reused:
        console.print(f"[yellow]{out} already holds this exact ingest; reusing it.[/] (--overwrite to redo)")
    print_table(manifest.counts(), title=f"{len(manifest)} frames in {out}", index=True)
    console.print(f"files read: {report.files_read}   files skipped: {len(report.skipped)}   "
                  f"clips cut short: {len(report.cut_short)}")
    if report.skipped:
        skipped = report.skip_reasons().rename_axis("reason").reset_index(name="files")
        print_table(skipped, title=f"skipped files (details in {out / SKIPPED_FILENAME})")
    if report.cut_short:
        import pandas as pd

        print_table(pd.DataFrame(report.cut_short, columns=["file", "shortfall"]),
                    title=f"clips cut short, their first frames kept (also in {out / SKIPPED_FILENAME})")
    for note, count in report.notes.items():
        console.print(f"note: {note}: {count}")


OutOption = Annotated[Path, typer.Option("--out", "-o", help="output folder (created; built in a temporary folder first)")]
OverwriteOption = Annotated[bool, typer.Option(help="replace an output folder that holds something else")]
SizeOption = Annotated[int, typer.Option(help="side of the square output frames in pixels")]
FpsOption = Annotated[float, typer.Option(help="frames per second sampled from videos, by timestamp")]


@ingest_app.command("pocus")
def ingest_pocus_command(
    source: Annotated[Path, typer.Argument(help="the POCUS data folder (with dataset_metadata.csv)")],
    out: OutOption,
    fps: FpsOption = 3.0,
    size: SizeOption = 256,
    classes: Annotated[str, typer.Option(help="comma-separated classes; add 'viral' to keep viral pneumonia")] = (
        "covid,pneumonia,healthy"
    ),
    exclude_licenses: Annotated[
        str | None, typer.Option(help="regular expression on the License column, e.g. 'NC' drops non-commercial files")
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Ingest the POCUS lung-ultrasound tree: clips sampled at --fps, stills once, cropped, grayscale, square."""
    from sonosynth.data.pocus import PocusIngestOptions, ingest_pocus

    options = PocusIngestOptions(fps=fps, size=size, classes=_split_list(classes), exclude_licenses=exclude_licenses)
    manifest, report = ingest_pocus(source, out, options, overwrite=overwrite)
    _print_ingest_summary(manifest, report, out)


@ingest_app.command("fetal-planes")
def ingest_fetal_planes_command(
    source: Annotated[Path, typer.Argument(help="the FETAL_PLANES_DB folder (FETAL_PLANES_DB_data.csv, Images/)")],
    out: OutOption,
    size: SizeOption = 128,
    crop: Annotated[bool, typer.Option(help="crop to the ultrasound content first (the study did not)")] = False,
    fit: Annotated[str, typer.Option(help="pad (aspect kept) or stretch (the study's resize)")] = "stretch",
    overwrite: OverwriteOption = False,
) -> None:
    """Ingest FETAL_PLANES_DB: planes as classes, Patient_num as patients, the Train flag as `subset`."""
    from sonosynth.data.fetal_planes import FetalPlanesIngestOptions, ingest_fetal_planes

    options = FetalPlanesIngestOptions(size=size, crop=crop, fit=fit)
    manifest, report = ingest_fetal_planes(source, out, options, overwrite=overwrite)
    _print_ingest_summary(manifest, report, out)


@ingest_app.command("folder")
def ingest_folder_command(
    source: Annotated[Path, typer.Argument(help="a folder with one sub-folder per class, or a CSV path,label[,patient_id]")],
    out: OutOption,
    fps: FpsOption = 3.0,
    size: SizeOption = 256,
    crop: Annotated[bool, typer.Option(help="crop to the ultrasound content before squaring")] = True,
    classes: Annotated[str | None, typer.Option(help="comma-separated labels to keep (default: all)")] = None,
    patient_id_regex: Annotated[str | None, typer.Option(
        help="regular expression on file names whose first group is the patient ID, e.g. '^(p\\d+)_'")] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Ingest any class-folder tree or CSV listing of images and clips."""
    from sonosynth.data.folder import FolderIngestOptions, ingest_folder

    options = FolderIngestOptions(fps=fps, size=size, crop=crop, classes=_split_list(classes),
                                  patient_id_regex=patient_id_regex)
    manifest, report = ingest_folder(source, out, options, overwrite=overwrite)
    _print_ingest_summary(manifest, report, out)


@app.command("split")
def split_command(
    manifest_path: Annotated[Path, typer.Argument(metavar="MANIFEST", help="manifest.csv (or its folder)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write folds.csv")],
    folds: Annotated[int, typer.Option(help="number of folds")] = 5,
    seed: Annotated[int, typer.Option(help="seed for the fold assignment and the minority ranks")] = 0,
    minority: Annotated[str | None, typer.Option(help="class to subsample on the training side")] = None,
    keep: Annotated[str, typer.Option(help="comma-separated fractions of minority patients to keep")] = "1.0",
) -> None:
    """Patient-level stratified k-fold split, with nested minority subsets (25% inside 50% inside ...)."""
    from sonosynth.data.manifest import Manifest
    from sonosynth.data.split import fold_summary, make_folds, mixed_label_patients, write_folds

    keeps = [float(k) for k in _split_list(keep) or ["1.0"]]
    if any(not 0 < k <= 1 for k in keeps):
        raise typer.BadParameter("fractions must be in (0, 1]", param_hint="--keep")
    manifest = Manifest.read(manifest_path)
    table = make_folds(manifest, n_folds=folds, seed=seed, minority=minority)
    write_folds(table, out)
    print_table(fold_summary(manifest, table, keeps if minority else ()), title=f"{folds} patient-level folds -> {out}")
    mixed = mixed_label_patients(manifest)
    if mixed:
        console.print(
            f"note: {len(mixed)} patient(s) have images of several classes and stay whole in one fold: {', '.join(mixed)}"
        )


@app.command("phantom")
def phantom_command(
    out: OutOption,
    patients: Annotated[str, typer.Option(help="patients per class: covid,pneumonia,healthy (or label=n,...)")] = "12,4,12",
    frames: Annotated[int, typer.Option(help="frames per patient")] = 10,
    size: Annotated[int, typer.Option(help="side of the square frames in pixels")] = 128,
    seed: Annotated[int, typer.Option(help="seed; the same seed gives the same dataset")] = 0,
    overwrite: OverwriteOption = False,
) -> None:
    """Simulate the embedded default dataset: convex-probe lung ultrasound with A-lines, B-lines, consolidations."""
    from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset, parse_patient_counts

    try:
        counts = parse_patient_counts(patients)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--patients") from exc
    options = PhantomOptions(patients=counts, frames=frames, size=size, seed=seed)
    manifest, report = make_phantom_dataset(out, options, overwrite=overwrite)
    _print_ingest_summary(manifest, report, out)


@app.command("grid")
def grid_command(
    manifest_path: Annotated[Path, typer.Argument(metavar="MANIFEST", help="manifest.csv (or its folder)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write")],
    per_class: Annotated[int, typer.Option(help="images per class (one row per class)")] = 6,
    seed: Annotated[int, typer.Option(help="seed of the random draw")] = 0,
    tile: Annotated[int, typer.Option(help="thumbnail side in pixels")] = 128,
) -> None:
    """Render a contact sheet of a manifest: a random draw of images, one row per class."""
    from sonosynth.data.grid import manifest_grid, save_image
    from sonosynth.data.manifest import Manifest

    save_image(manifest_grid(Manifest.read(manifest_path), per_class=per_class, seed=seed, tile=tile), out)
    console.print(f"wrote {out}")


@app.command("version")
def version_command() -> None:
    """Print the sonosynth version."""
    console.print(__version__)


@app.command("status")
def status_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a run folder of `sonosynth run`")],
) -> None:
    """What a study run has done, is doing and has left, with its latest numbers (running or finished)."""
    from sonosynth.progress import format_duration
    from sonosynth.status import read_status

    status = read_status(run_dir)
    total = status.total if status.total is not None else "?"
    line = f"{run_dir}: {status.state}, {status.done}/{total} units done"
    if status.left is not None and status.state != "finished":
        line += f", {status.left} left"
    if status.eta_seconds is not None:
        bound = ">= " if status.eta_untimed_units else ""
        line += f", ETA {bound}{format_duration(status.eta_seconds, coarse=True)}"
        if status.eta_untimed_units:
            line += f" (+{status.eta_untimed_units} units not yet timed)"
    console.print(line)
    for entry in status.running:
        import time

        since = format_duration(time.time() - float(entry.get("since", time.time())))
        console.print(f"  running: {entry['description']} (for {since}) {entry.get('progress', '')}".rstrip())
    if not status.units.empty:
        print_table(status.units, title="units in the cache")
    if not status.latest.empty:
        print_table(status.latest, title="latest classifier runs (real validation fold)")
    for note in status.notes:
        console.print(f"note: {note}")
    if status.results:
        from sonosynth.experiment.layout import RunFolder

        folder = RunFolder.at(run_dir)
        console.print(f"results: {folder.results}; report: {folder.report_html}")


_register_command_modules()
guard_outputs(app)


GLOBAL_FLAGS = ("-v", "-vv", "-vvv", "--verbose", "-q", "--quiet")


def global_flags_first(args: list[str]) -> list[str]:
    """-v / -q may follow any command (`sonosynth run spec.yaml -v`); move them before it, where typer reads them."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if a in GLOBAL_FLAGS]
    rest = [a for a in args[:end] if a not in GLOBAL_FLAGS]
    return flags + rest + args[end:]


def main() -> None:
    """Console entry point: user errors become one clear line and exit code 2, never a traceback."""
    configure_logging(0)
    try:
        app(args=global_flags_first(sys.argv[1:]), prog_name="sonosynth")
    except SonosynthError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except ValidationError as exc:
        from sonosynth.config import format_validation_error

        console.print(f"[bold red]invalid option:[/] {format_validation_error(exc)}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished outputs are kept; re-run the same command to continue.")
        sys.exit(130)


__all__ = ["app", "main"]
