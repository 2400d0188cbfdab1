"""`sonosynth reader-study create|results|serve` through the CLI: files written, tables printed, clear errors."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from sonosynth.cli import app, main
from sonosynth.reader_study.report import reader_study_section
from sonosynth.reader_study.store import StudyStore

runner = CliRunner()


def test_create_answer_results(tmp_path, phantom_manifest, synthetic_sets):
    out = tmp_path / "study"
    result = runner.invoke(app, [
        "reader-study", "create", "--real", str(phantom_manifest.root), "--synthetic", str(synthetic_sets[0].root),
        "--synthetic", f"fewddm={synthetic_sets[1].root}", "--per-generator", "3", "--real-count", "4",
        "--seed", "3", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    store = StudyStore(out)
    assert sorted(store.key()["generator"].fillna("real").unique()) == ["fakeddm", "fewddm", "real"]

    # Two readers: Ann calls everything synthetic, Bob answers truthfully.
    key = store.key().set_index("image_id")
    for name in ("Ann", "Bob"):
        reader = store.register_reader(name)
        for position in range(reader.total):
            image_id = store.item(reader.token, position).image_id
            truth = key.loc[image_id, "origin"]
            store.answer(reader.token, image_id, "synthetic" if name == "Ann" else truth)

    result = runner.invoke(app, ["reader-study", "results", str(out)])
    assert result.exit_code == 0, result.output
    assert "fake-detection rate" in result.output and "Cohen" in result.output
    detection = pd.read_csv(out / "results" / "detection.csv")
    ann = detection[detection["reader"] == "Ann"].set_index("group")
    assert ann.loc["fakeddm", "rate"] == 1.0 and ann.loc["real", "rate"] == 1.0
    bob = detection[detection["reader"] == "Bob"].set_index("group")
    assert bob.loc["fewddm", "rate"] == 1.0 and bob.loc["real", "rate"] == 0.0
    accuracy = pd.read_csv(out / "results" / "accuracy.csv").set_index("reader")
    assert accuracy.loc["Bob", "specificity"] == 1.0 and accuracy.loc["Ann", "specificity"] == 0.0
    assert "| group | measure | Ann | Bob |" in (out / "results" / "results.md").read_text()

    markdown, fragment = reader_study_section(out)
    assert "### Agreement between readers" in markdown
    assert "<table" in fragment and "fewddm" in fragment and "<script" not in fragment


def test_section_before_any_answer(study_dir):
    markdown, fragment = reader_study_section(study_dir)
    assert "No reader has answered yet" in markdown and fragment.startswith("<p>")


def test_errors_are_one_line(tmp_path, monkeypatch, capsys):
    for args in (["reader-study", "serve", str(tmp_path)], ["reader-study", "results", str(tmp_path / "nope")]):
        monkeypatch.setattr("sys.argv", ["sonosynth", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        assert code == 2, out
        assert "error:" in out.out and "reader-study create" in out.out and "Traceback" not in out.out + out.err
