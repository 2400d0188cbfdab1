import json

import pandas as pd
import pytest

from sonosynth.data.manifest import Manifest, concat, encode_parents
from sonosynth.errors import ManifestError


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"png")
    return path


def _rows(n=3):
    return [{"path": f"img/{i}.png", "label": "covid" if i % 2 else "healthy", "patient_id": f"p{i}",
             "source": f"v{i}.mp4", "frame_index": i} for i in range(n)]


def test_round_trip_keeps_every_value(tmp_path):
    for row in _rows():
        _touch(tmp_path / row["path"])
    manifest = Manifest.from_rows(_rows(), tmp_path)
    manifest.write()
    again = Manifest.read(tmp_path / "manifest.csv")
    pd.testing.assert_frame_equal(manifest.table, again.table)
    assert again.root == tmp_path
    assert list(again.table["origin"]) == ["real"] * 3


def test_writing_elsewhere_rebases_paths_and_parents(tmp_path):
    real = tmp_path / "real"
    _touch(real / "a.png")
    synthetic_rows = [{"path": "s/1.png", "label": "x", "patient_id": "gen", "origin": "synthetic",
                       "generator": "g", "seed": 1, "parents": encode_parents([real / "a.png"], tmp_path / "syn")}]
    _touch(tmp_path / "syn" / "s" / "1.png")
    manifest = Manifest.from_rows(synthetic_rows, tmp_path / "syn")
    manifest.write(tmp_path / "elsewhere" / "manifest.csv")
    moved = Manifest.read(tmp_path / "elsewhere")
    assert moved.table.loc[0, "path"] == "../syn/s/1.png"
    assert moved.parent_paths()[0][0].resolve() == (real / "a.png").resolve()
    assert json.loads(moved.table.loc[0, "parents"]) == ["../real/a.png"]


def test_a_manifest_parent_expands_into_the_images_it_lists(tmp_path):
    # The guided generator records its training manifest once; leakage guards must still see each image.
    for row in _rows():
        _touch(tmp_path / "real" / row["path"])
    Manifest.from_rows(_rows(), tmp_path / "real").write(tmp_path / "model" / "training" / "manifest.csv")
    parents = encode_parents([tmp_path / "model" / "training" / "manifest.csv"], tmp_path / "syn")
    rows = [{"path": f"s/{i}.png", "label": "covid", "patient_id": "gen", "origin": "synthetic",
             "generator": "guided", "seed": i, "parents": parents} for i in range(2)]
    for row in rows:
        _touch(tmp_path / "syn" / row["path"])
    expanded = Manifest.from_rows(rows, tmp_path / "syn").parent_paths()
    wanted = sorted((tmp_path / "real" / r["path"]).resolve() for r in _rows())
    assert [sorted(p.resolve() for p in row) for row in expanded] == [wanted, wanted]


def test_concat_joins_folders(tmp_path):
    a = Manifest.from_rows(_rows(2), tmp_path / "a")
    b = Manifest.from_rows([{**r, "path": "other/" + r["path"]} for r in _rows(2)], tmp_path / "b")
    joined = concat([a, b], tmp_path)
    assert sorted(joined.table["path"]) == ["a/img/0.png", "a/img/1.png", "b/other/img/0.png", "b/other/img/1.png"]


@pytest.mark.parametrize(
    "csv, message",
    [
        ("path,label,patient_id,colour\na.png,x,p,red\n", "unknown column"),
        ("path,label,patient_id\na.png,x,p\na.png,x,p\n", "duplicate paths"),
        ("path,label,patient_id\na.png,x,\n", "empty `patient_id`"),
        ("path,label,patient_id\na.png,,p\n", "empty `label`"),
        ("path,label,patient_id,origin\na.png,x,p,fake\n", "unknown origin"),
        ("path,label,patient_id,frame_index\na.png,x,p,three\n", "not a whole number"),
        ("path,label,patient_id,origin\na.png,x,p,synthetic\n", "without `generator`"),
        ("label,patient_id\nx,p\n", "missing required"),
    ],
)
def test_bad_manifests_fail_with_a_message_naming_the_problem(tmp_path, csv, message):
    _touch(tmp_path / "a.png")
    (tmp_path / "manifest.csv").write_text(csv)
    with pytest.raises(ManifestError, match=message):
        Manifest.read(tmp_path)


def test_missing_files_are_reported_with_their_names(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label,patient_id\nnot-there.png,x,p\n")
    with pytest.raises(ManifestError, match="not-there.png"):
        Manifest.read(tmp_path)
    assert len(Manifest.read(tmp_path, check_files=False)) == 1


def test_no_manifest_gives_a_hint(tmp_path):
    with pytest.raises(ManifestError, match="sonosynth ingest"):
        Manifest.read(tmp_path)
