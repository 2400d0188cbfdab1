"""`sonosynth run SPEC` and `sonosynth report RUN_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sonosynth.console import console, print_table


def spec_inputs(spec) -> list[Path]:
    """The input paths a study spec reads its real images from (the run folder may not hold them)."""
    data = spec.data
    sources = [data.manifest, data.pocus.source if data.pocus else None, data.folder.source if data.folder else None,
               data.fetal_planes.source if data.fetal_planes else None]
    return [Path(s) for s in sources if s is not None]


def register(app: typer.Typer, train_app: typer.Typer, generate_app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="study spec YAML (see configs/)")],
        out: Annotated[Path | None, typer.Option("--out", "-o", help="run folder (default runs/<spec name>)")] = None,
        data: Annotated[Path | None, typer.Option(help="override the spec's data source folder or manifest")] = None,
        device: Annotated[str | None, typer.Option(help="override the spec's device: auto, cpu, cuda, cuda:N")] = None,
        set_values: Annotated[list[str] | None, typer.Option("--set", help="override a spec field: key.sub=value")] = None,
        jobs: Annotated[int, typer.Option(help="independent units run in this many processes (one GPU each)")] = 1,
        executor: Annotated[str, typer.Option(help="local (this machine) or ray (a Ray cluster, sonosynth[cluster])")] = "local",
        address: Annotated[str | None, typer.Option(help="Ray cluster: auto, host:port or ray://host:port")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="validate the spec and print the plan; train nothing")] = False,
        probe: Annotated[bool, typer.Option("--probe", help="with --dry-run: one step of every network here, "
                                            "parameters, memory, time estimate")] = False,
    ) -> None:
        """Run a whole study: folds x fractions x generators x regimes x classifiers, cached and resumable.

        Re-running the same command after an interruption recomputes only unfinished units; an
        extended spec computes only what is new. The report is written at the end.
        """
        from sonosynth.config import parse_overrides
        from sonosynth.experiment.spec import load_spec
        from sonosynth.outputs import check_output_location
        from sonosynth.study import make_executor, run_study

        overrides = parse_overrides(set_values)
        if device:
            overrides["device"] = device
        spec = load_spec(spec_path, overrides)
        from sonosynth.logs import run_log

        run_dir = out or Path("runs") / spec.name
        check_output_location(run_dir, [data, *spec_inputs(spec)])
        if dry_run or probe:
            from sonosynth.study import print_dry_run

            print_dry_run(spec, run_dir, data=data, probe=probe)
            return
        outcome = run_study(spec, run_dir, data=data, jobs=jobs,
                            executor=make_executor(executor, run_dir, jobs, spec.device, address))
        with run_log(run_dir):  # the run's log keeps the headline table the console shows
            print_table(outcome.report.headline, title=outcome.report.headline_title)
        console.print(f"report: {outcome.report.html_path}  (Markdown: {outcome.report.markdown_path})")

    @app.command("report")
    def report_command(
        run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a run folder written by `sonosynth run`")],
    ) -> None:
        """Rebuild report.md and report.html of a run folder from its results."""
        from sonosynth.report.build import write_report

        report = write_report(run_dir)
        print_table(report.headline, title=report.headline_title)
        console.print(f"report: {report.html_path}")

    @app.command("spec")
    def spec_command(
        spec_path: Annotated[Path | None, typer.Argument(metavar="[SPEC]", help="a study spec YAML to validate")] = None,
        schema: Annotated[bool, typer.Option(help="print the JSON Schema of a study spec")] = False,
        reference: Annotated[bool, typer.Option(help="print the Markdown reference of every spec field")] = False,
        set_values: Annotated[list[str] | None, typer.Option("--set", help="override a spec field: key.sub=value")] = None,
    ) -> None:
        """Explain or check a study spec: --reference (every field explained), --schema, or SPEC (validate and
        print it resolved, defaults filled in)."""
        import json

        import yaml

        from sonosynth.config import parse_overrides
        from sonosynth.experiment.spec import StudySpec, load_spec
        from sonosynth.spec_reference import spec_reference

        if schema:
            console.print_json(json.dumps(StudySpec.model_json_schema()))
        elif reference:
            print(spec_reference())
        elif spec_path is not None:
            spec = load_spec(spec_path, parse_overrides(set_values))
            print(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), end="")
        else:
            raise typer.BadParameter("give a SPEC file, --schema or --reference")
