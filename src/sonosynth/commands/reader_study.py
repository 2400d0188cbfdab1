"""`sonosynth reader-study create|serve|results`: the blinded real-vs-synthetic reading study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def _synthetic_inputs(values: list[str]):
    """SYNTH_MANIFEST or NAME=SYNTH_MANIFEST (NAME labels that set's images in the results)."""
    from sonosynth.data.manifest import Manifest
    from sonosynth.reader_study.create import SyntheticInput

    inputs = []
    for value in values:
        name, path = None, Path(value)
        if "=" in value and not path.exists():
            name, _, rest = value.partition("=")
            name, path = name.strip() or None, Path(rest)
        inputs.append(SyntheticInput(Manifest.read(path), name))
    return inputs


def register(app: typer.Typer, train_app: typer.Typer, generate_app: typer.Typer) -> None:
    reader_app = typer.Typer(help="Blinded reader study: an expert labels shuffled real and synthetic images.",
                             no_args_is_help=True)
    app.add_typer(reader_app, name="reader-study")

    @reader_app.command("create")
    def create_command(
        real: Annotated[Path, typer.Option("--real", help="manifest.csv (or folder) of the real images")],
        synthetic: Annotated[list[str], typer.Option(
            "--synthetic", help="a SyntheticSet's manifest.csv (or folder); repeat for several; "
                                "NAME=PATH names the set in the results instead of its generator")],
        out: Annotated[Path, typer.Option("--out", "-o", help="the study folder to create")],
        per_generator: Annotated[int, typer.Option(help="synthetic images drawn per generator")] = 32,
        real_count: Annotated[int, typer.Option(help="real images drawn")] = 32,
        seed: Annotated[int, typer.Option(help="seed of the draw")] = 0,
        size: Annotated[int | None, typer.Option(
            help="side of the square study images (default: the smallest long side among the drawn images)")] = None,
        match_labels: Annotated[bool, typer.Option(
            help="draw real images only from the synthetic images' labels")] = True,
        overwrite: Annotated[bool, typer.Option(help="replace an existing folder (and its answers)")] = False,
    ) -> None:
        """Draw real and synthetic images and copy them under opaque IDs; the key goes into study.sqlite."""
        from sonosynth.console import console, print_table
        from sonosynth.data.manifest import Manifest
        from sonosynth.reader_study.create import StudyOptions, create_study

        options = StudyOptions(per_generator=per_generator, real_count=real_count, seed=seed, size=size,
                               match_labels=match_labels)
        summary = create_study(Manifest.read(real), _synthetic_inputs(synthetic), out, options, overwrite=overwrite)
        print_table(summary.counts, title=f"reader study in {summary.study_dir} ({summary.size} px, {summary.mode})")
        console.print(f"next: sonosynth reader-study serve {summary.study_dir}")

    @reader_app.command("serve")
    def serve_command(
        study_dir: Annotated[Path, typer.Argument(metavar="STUDY_DIR", help="a folder made by `reader-study create`")],
        host: Annotated[str, typer.Option(help="address to listen on; keep 127.0.0.1 unless you mean to share it")] = (
            "127.0.0.1"
        ),
        port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    ) -> None:
        """Serve the reading page; answers are saved as they are given, stop any time with Ctrl+C."""
        import uvicorn

        from sonosynth.console import console
        from sonosynth.reader_study.app import create_app

        loopback = host in LOOPBACK_HOSTS
        web_app = create_app(study_dir, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
        if not loopback:
            console.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach it can read and answer.")
        console.print(f"reader study {study_dir}: open http://{'127.0.0.1' if loopback else host}:{port}/ "
                      "(Ctrl+C stops; answers are already saved)")
        uvicorn.run(web_app, host=host, port=port, log_level="warning")

    @reader_app.command("link")
    def link_command(
        study_dir: Annotated[Path, typer.Argument(metavar="STUDY_DIR", help="a folder made by `reader-study create`")],
        name: Annotated[str, typer.Argument(help="the reader's name (created if new)")],
        address: Annotated[str, typer.Option(help="the address readers open, as given to `serve`")] = (
            "http://127.0.0.1:8000"),
    ) -> None:
        """Print a reader's personal link (their secret): hand it out, or give it back to a reader who lost it."""
        from sonosynth.console import console
        from sonosynth.reader_study.store import StudyStore

        try:
            reader = StudyStore(study_dir).register_reader(name, resume_existing=True)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="NAME") from exc
        console.print(f"{reader.name}: {reader.answered} of {reader.total} answered")
        console.print(f"{address.rstrip('/')}/#reader={reader.token}", soft_wrap=True)

    @reader_app.command("results")
    def results_command(
        study_dir: Annotated[Path, typer.Argument(metavar="STUDY_DIR", help="a folder made by `reader-study create`")],
        out: Annotated[Path | None, typer.Option("--out", "-o", help="folder for the tables (default STUDY_DIR/results)")]
        = None,
        level: Annotated[float, typer.Option(min=0.5, max=0.999, help="confidence level of the intervals")] = 0.95,
    ) -> None:
        """Fake-detection rate per generator, false-alarm rate, sensitivity/specificity, agreement (kappa)."""
        from sonosynth.console import console, print_table
        from sonosynth.reader_study.report import write_results
        from sonosynth.reader_study.results import accuracy_summary, agreement_summary, table4

        files = write_results(study_dir, out, level=level)
        print_table(files.progress, title="answers per reader")
        results = files.results
        print_table(table4(results.detection), title="called synthetic: rate (k/n; Wilson CI)")
        print_table(accuracy_summary(results.accuracy), title="sensitivity / specificity (synthetic = positive)")
        if not results.agreement.empty:
            print_table(agreement_summary(results.agreement), title="agreement between readers")
        console.print(f"wrote {files.markdown}, {files.detection}, {files.accuracy}, {files.agreement}")
