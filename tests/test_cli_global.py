"""Global CLI options (-v/-q anywhere, --version), the spec reference, logging setup."""

import logging
from pathlib import Path

from typer.testing import CliRunner

from sonosynth import __version__, logs
from sonosynth.cli import app, global_flags_first
from sonosynth.spec_reference import spec_reference

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_version_flag_prints_the_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_verbosity_flags_may_follow_the_command():
    assert global_flags_first(["run", "spec.yaml", "-v", "--out", "x"]) == ["-v", "run", "spec.yaml", "--out", "x"]
    assert global_flags_first(["status", "r", "-q", "--", "-v"]) == ["-q", "status", "r", "--", "-v"]


def test_quiet_and_verbose_set_the_console_level():
    try:
        logs.configure(-1, plain=True)
        assert logs.console_level() == logging.WARNING
        logs.configure(1, plain=True)
        assert logs.console_level() == logging.DEBUG
    finally:
        logs.configure(0, plain=True)


def test_run_log_keeps_messages_and_tables(tmp_path):
    import pandas as pd

    from sonosynth.console import print_table

    with logs.run_log(tmp_path) as path:
        logging.getLogger("sonosynth.test").debug("a debug line for the file only")
        print_table(pd.DataFrame({"condition": ["real"], "Bal. Acc.": ["0.812 ± 0.040"]}), title="headline")
    text = path.read_text()
    assert "a debug line for the file only" in text and "0.812 ± 0.040" in text and "headline" in text


def test_the_spec_reference_in_docs_is_current_and_explains_the_study_fields():
    text = spec_reference()
    for field in ("models", "training_images", "max_models", "minority", "samples_per_model"):
        assert f"| `{field}` |" in text
    assert (ROOT / "docs" / "spec.md").read_text() == text + "\n", "regenerate: sonosynth spec --reference > docs/spec.md"
