"""Patient IDs from file names (`ingest folder --patient-id-regex`), so frames of one patient stay in one fold."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sonosynth.cli import app
from sonosynth.data.folder import FolderIngestOptions, patient_from_name
from sonosynth.data.manifest import Manifest


def test_the_pattern_takes_its_patient_group_or_its_first_group():
    assert patient_from_name("p017_clip2.png", r"^(p\d+)_") == "p017"
    assert patient_from_name("scan-A12-3.png", r"(?P<site>scan)-(?P<patient>A\d+)") == "A12"
    assert patient_from_name("other.png", r"^(p\d+)_") is None


def test_a_pattern_without_a_group_is_refused():
    with pytest.raises(ValueError, match="needs a group"):
        FolderIngestOptions(patient_id_regex=r"p\d+")


def test_ingest_folder_reads_patients_from_file_names(tmp_path):
    rng = np.random.default_rng(0)
    for label, names in {"covid": ["p1_a.png", "p1_b.png", "p2_a.png"], "healthy": ["p3_a.png", "odd.png"]}.items():
        (tmp_path / "src" / label).mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / "src" / label / name)
    result = CliRunner().invoke(app, ["ingest", "folder", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                                      "--size", "32", "--no-crop", "--patient-id-regex", r"^(p\d+)_"])
    assert result.exit_code == 0, result.output
    patients = Manifest.read(tmp_path / "out").table.set_index("source")["patient_id"].to_dict()
    assert patients["covid/p1_a.png"] == patients["covid/p1_b.png"] == "p1"
    assert patients["healthy/p3_a.png"] == "p3"
    assert patients["healthy/odd.png"] != "p3"  # no match: its own patient, and the summary says so
    assert "did not match" in result.output
