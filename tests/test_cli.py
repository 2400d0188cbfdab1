"""The CLI end to end through typer's runner: exit codes, messages, files written."""

import pandas as pd
from typer.testing import CliRunner

from sonosynth.cli import app, main

runner = CliRunner()


def _run_main(monkeypatch, capsys, args):
    monkeypatch.setattr("sys.argv", ["sonosynth", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


def test_phantom_then_split_writes_patient_level_folds(tmp_path):
    result = runner.invoke(app, ["phantom", "--out", str(tmp_path / "ph"), "--patients", "5,3,5", "--frames", "2",
                                 "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "26 frames" in result.output
    result = runner.invoke(app, ["split", str(tmp_path / "ph" / "manifest.csv"), "--folds", "3", "--minority",
                                 "pneumonia", "--keep", "0.5,1", "--out", str(tmp_path / "folds.csv")])
    assert result.exit_code == 0, result.output
    folds = pd.read_csv(tmp_path / "folds.csv")
    assert list(folds.columns) == ["patient_id", "label", "fold", "minority_rank"]
    assert folds["patient_id"].is_unique and len(folds) == 13
    assert folds.loc[folds["label"] == "pneumonia", "minority_rank"].notna().all()
    assert folds.loc[folds["label"] != "pneumonia", "minority_rank"].isna().all()


def test_user_errors_are_one_line_without_traceback(tmp_path, monkeypatch, capsys):
    code, out = _run_main(monkeypatch, capsys, ["split", str(tmp_path / "nothing"), "--out", str(tmp_path / "f.csv")])
    assert code == 2
    assert "error:" in out.out and "Traceback" not in out.out + out.err
    (tmp_path / "src").mkdir()
    code, out = _run_main(monkeypatch, capsys, ["ingest", "pocus", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                                                "--classes", "covid,martian"])
    assert code == 2 and "martian" in out.out


def test_help_lists_the_stages():
    result = runner.invoke(app, ["--help"])
    for command in ("ingest", "split", "phantom", "run", "report", "train", "generate"):
        assert command in result.output
