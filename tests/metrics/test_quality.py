"""Image-quality and privacy metrics: SSIM, Fréchet distance, KID, SIFID, memorization, diversity, the CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import linalg
from skimage.metrics import structural_similarity

from sonosynth.classify.features import ClassifierFeatures, feature_extractor
from sonosynth.data.images import load_grayscale, save_png
from sonosynth.data.manifest import Manifest, encode_parents
from sonosynth.errors import SonosynthError
from sonosynth.metrics.quality import (
    QualityConfig,
    audit_memorization,
    create_extractor,
    evaluate_quality,
    feature_frechet_distance,
    frechet_distance,
    kernel_inception_distance,
    mean_pairwise_dissimilarity,
    sifid,
    ssim,
    ssim_batch,
    ssim_to_source,
)
from sonosynth.metrics.quality.inception import InceptionFeatures, random_inception, torchvision_inception
from sonosynth.metrics.quality.random_features import RandomConvFeatures
from sonosynth.metrics.quality.reader import ReaderConfig

SMALL = QualityConfig(audit_size=32, inception_size=75, kid_subsets=5, diversity_samples=4, batch_size=8,
                      reader=ReaderConfig(image_size=32, steps=40, widths=[8, 16], bootstrap=50))


def _skimage_ssim(a, b):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)


def _structured(shape, rng):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = 0.5 + 0.3 * np.sin(xx / 4.0) * np.cos(yy / 6.0)
    image[shape[0] // 3: shape[0] // 2, shape[1] // 4: shape[1] // 2] = 0.95  # an edge-rich block
    return np.clip(image + 0.02 * rng.standard_normal(shape), 0, 1)


@pytest.fixture(scope="module")
def inception():
    return InceptionFeatures(random_inception(seed=0), pooled_size=75)


# ------------------------------------------------------------------------------------------ SSIM
def test_ssim_of_an_image_with_itself_is_one():
    image = np.random.default_rng(0).random((40, 52))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(64, 64), (37, 50), (96, 80)])
def test_ssim_matches_scikit_image_on_random_and_structured_images(shape):
    rng = np.random.default_rng(1)
    random_pair = (rng.random(shape), rng.random(shape))
    structured = _structured(shape, rng)
    structured_pair = (structured, np.clip(structured + 0.1 * rng.standard_normal(shape), 0, 1))
    shifted_pair = (structured, np.roll(structured, 3, axis=1))
    for a, b in (random_pair, structured_pair, shifted_pair):
        assert ssim(a, b) == pytest.approx(_skimage_ssim(a, b), abs=1e-4)
    batch = ssim_batch(np.stack([random_pair[0], structured]), np.stack([random_pair[1], structured_pair[1]]))
    assert batch == pytest.approx([_skimage_ssim(*random_pair), _skimage_ssim(*structured_pair)], abs=1e-4)


def test_ssim_to_source_resizes_the_synthetic_image_to_the_source_size():
    source = _structured((64, 64), np.random.default_rng(2))
    bigger = torch.nn.functional.interpolate(torch.from_numpy(source)[None, None].float(), size=(96, 96),
                                             mode="bilinear", align_corners=False)[0, 0].numpy()
    assert ssim_to_source(bigger, source) > 0.9
    with pytest.raises(SonosynthError, match="at least 11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))


# ------------------------------------------------------------------------------- Fréchet and KID
def test_frechet_distance_of_identical_sets_is_zero():
    features = np.random.default_rng(3).standard_normal((200, 16))
    assert feature_frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_the_closed_form_for_two_gaussians():
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    # Diagonal covariances: Tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(a) - sqrt(b))^2.
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    # General covariances: the symmetric form Tr sqrt(S1^1/2 S2 S1^1/2) from eigenvalues.
    x, y = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    s1, s2 = x @ x.T + 0.1 * np.eye(6), y @ y.T + 0.1 * np.eye(6)
    root1 = linalg.sqrtm(s1).real
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    # Sample estimates converge to it.
    samples1 = rng.multivariate_normal(mu1, s1, 20000)
    samples2 = rng.multivariate_normal(mu2, s2, 20000)
    assert feature_frechet_distance(samples1, samples2) == pytest.approx(expected, rel=0.05)


def test_frechet_distance_handles_rank_deficient_covariances():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((10, 40)), rng.standard_normal((10, 40)) + 0.5  # 10 samples in 40 dimensions
    value = feature_frechet_distance(x, y)
    assert np.isfinite(value) and value > 0
    assert feature_frechet_distance(x, x) == pytest.approx(0.0, abs=1e-3)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((300, 8)), rng.standard_normal((300, 8))
    same, _ = kernel_inception_distance(x, y, subsets=20, subset_size=100)
    shifted, _ = kernel_inception_distance(x, y + 1.0, subsets=20, subset_size=100)
    assert abs(same) < 0.05 < shifted


# ----------------------------------------------------------------------------------------- SIFID
def test_sifid_is_zero_for_an_image_with_itself_and_grows_with_noise(inception):
    rng = np.random.default_rng(7)
    image = _structured((64, 64), rng).astype(np.float32)
    noisy = [np.clip(image + s * rng.standard_normal(image.shape), 0, 1).astype(np.float32) for s in (0.05, 0.3)]
    same = sifid(inception, image, image)
    mild, strong = sifid(inception, image, noisy[0]), sifid(inception, image, noisy[1])
    assert abs(same) < 1e-3 * strong
    assert same < mild < strong


def test_sifid_uses_the_192_channel_layer_before_the_second_max_pool(inception):
    fmap = inception.spatial(torch.rand(1, 1, 64, 64))
    # 64 -> conv s2: 31 -> conv: 29 -> conv pad: 29 -> first max-pool: 14 -> 1x1: 14 -> conv: 12
    assert tuple(fmap.shape) == (1, 192, 12, 12)
    assert tuple(inception.pooled(torch.rand(2, 1, 75, 75)).shape) == (2, 2048)


def test_pool_features_are_torchvisions_penultimate_layer():
    net = random_inception(seed=1)
    extractor = InceptionFeatures(net, pooled_size=75)
    images = torch.rand(2, 1, 75, 75)
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        expected = net(images.expand(-1, 3, -1, -1) * 2 - 1)  # eval mode: no aux output, dropout off
    torch.testing.assert_close(extractor.pooled(images), expected)


# ------------------------------------------------------------------------------------ weights
def test_inception_weights_load_from_a_local_file(tmp_path):
    reference = random_inception(seed=3)
    path = tmp_path / "inception.pth"
    torch.save(reference.state_dict(), path)
    extractor = create_extractor(inception_weights=path, inception_size=75)
    assert torch.equal(extractor.stem[0].conv.weight, reference.Conv2d_1a_3x3.conv.weight)
    assert torch.equal(extractor.rest[-2].branch1x1.conv.weight, reference.Mixed_7c.branch1x1.conv.weight)
    # The auxiliary and class heads are optional.
    torch.save({k: v for k, v in reference.state_dict().items() if not k.startswith(("AuxLogits", "fc"))}, path)
    create_extractor(inception_weights=path, inception_size=75)


def test_missing_or_wrong_inception_weights_are_clear_errors(tmp_path):
    with pytest.raises(SonosynthError, match="--inception-weights"):
        torchvision_inception(allow_download=False, cache_dir=tmp_path)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(SonosynthError, match="not a torchvision inception_v3"):
        create_extractor(inception_weights=wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(SonosynthError, match="not a readable"):
        create_extractor(inception_weights=garbage)
    with pytest.raises(SonosynthError, match="unknown --features"):
        create_extractor(features="resnet")
    with pytest.raises(SonosynthError, match="not found"):
        feature_extractor(f"classifier:{tmp_path / 'missing.pt'}")


# ----------------------------------------------------------------------- the fixed feature space
def test_random_cnn_is_the_same_function_every_time_and_says_which():
    first, second = RandomConvFeatures(seed=0), create_extractor("random_cnn")
    assert first.fingerprint == second.fingerprint and first.fingerprint in first.description
    assert RandomConvFeatures(seed=1).fingerprint != first.fingerprint
    images = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.pooled(images), second.pooled(images))
    assert first.spatial(images).shape == (3, 64, 16, 16)
    assert first.pooled(images).shape == (3, 32 + 64 + 128 + 128)


def test_random_cnn_sifid_ranks_a_noised_copy_nearer_than_an_unrelated_texture():
    rng = np.random.default_rng(2)
    real = _structured((64, 64), rng)
    noised = np.clip(real + 0.03 * rng.standard_normal(real.shape), 0, 1)
    unrelated = rng.random((64, 64))
    extractor = RandomConvFeatures()
    assert sifid(extractor, real, real) == pytest.approx(0.0, abs=1e-6)
    assert sifid(extractor, real, noised) < sifid(extractor, real, unrelated)


def test_metrics_import_nothing_above_them():
    import subprocess
    import sys

    code = ("import sys, sonosynth.metrics.quality, sonosynth.metrics.classification; "
            "print(sorted(m for m in sys.modules if m.startswith(('sonosynth.classify', 'sonosynth.experiment', "
            "'sonosynth.generators', 'sonosynth.report', 'sonosynth.commands'))))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


# ------------------------------------------------------------------------ synthetic set helpers
def _synthetic_set(root, real: Manifest, images: dict[str, tuple[np.ndarray, int]], generator="toy") -> Manifest:
    """A SyntheticSet under `root`: name -> (image, index of the real parent)."""
    rows = []
    real_paths = real.absolute_paths()
    for seed, (name, (image, parent)) in enumerate(images.items()):
        save_png(root / f"{name}.png", image)
        rows.append({"path": f"{name}.png", "label": real.labels[parent], "patient_id": f"synthetic-{generator}",
                     "origin": "synthetic", "generator": generator, "checkpoint": f"ckpt-{parent}", "seed": seed,
                     "parents": encode_parents([real_paths[parent]], root)})
    manifest = Manifest.from_rows(rows, root)
    manifest.write()
    return manifest


def _audit_images(phantom_manifest):
    paths = phantom_manifest.absolute_paths()
    original = load_grayscale(paths[0])
    rng = np.random.default_rng(8)
    noised = np.clip(original + rng.normal(0, 6, original.shape), 0, 255).astype(np.uint8)
    blobs = (rng.random((8, 8)) * 255).astype(np.uint8)
    unrelated = np.kron(blobs, np.ones((8, 8), dtype=np.uint8))  # a blocky pattern unlike any phantom frame
    return {"copy": (original, 0), "noised": (noised, 0), "unrelated": (unrelated, 5)}


def test_audit_flags_exact_and_noised_copies_but_not_an_unrelated_image(phantom_manifest, tmp_path):
    synthetic = _synthetic_set(tmp_path, phantom_manifest, _audit_images(phantom_manifest))
    audit = audit_memorization(synthetic, phantom_manifest, threshold=0.95, size=32)
    details = audit.details.set_index("path")
    assert details.loc["copy.png", "flagged"] and details.loc["noised.png", "flagged"]
    assert not details.loc["unrelated.png", "flagged"]
    assert details.loc["copy.png", "ncc"] == pytest.approx(1.0, abs=1e-5)
    assert details.loc["copy.png", "ssim"] == pytest.approx(1.0, abs=1e-6)
    first_real = phantom_manifest.table["path"][0]
    assert details.loc["copy.png", "nearest_real"] == first_real
    top = audit.most_copied.iloc[0]
    assert top["nearest_real"] == first_real and top["copies"] == 2


def test_diversity_of_collapsed_samples_is_zero():
    image = _structured((48, 48), np.random.default_rng(9))
    assert mean_pairwise_dissimilarity([image, image, image]) == pytest.approx(0.0, abs=1e-6)
    varied = [_structured((48, 48), np.random.default_rng(s)) for s in range(3)]
    assert mean_pairwise_dissimilarity([np.roll(v, 5 * i, axis=1) for i, v in enumerate(varied)]) > 0.1


# ------------------------------------------------------------------------- classifier features
class _TinyClassifier(torch.nn.Module):
    """The classifier contract (feature_map, embed, image_size, in_channels) in a few parameters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image_size, self.in_channels, self.name = 32, 1, "tiny"
        self.conv = torch.nn.Conv2d(1, 8, 3, stride=2)

    def feature_map(self, x):
        return torch.relu(self.conv(x * 2 - 1))

    def embed(self, x):
        return self.feature_map(x).mean(dim=(2, 3))


def test_evaluate_quality_on_classifier_features(phantom_manifest, tmp_path):
    from sonosynth.data.phantom import simulate_patient

    images = _audit_images(phantom_manifest)
    # Honest samples: the same simulator with another seed, so similar-looking but not copies.
    for index, frame in enumerate(simulate_patient("covid", 0, 3, 64, seed=1)):
        images[f"sample{index}"] = (frame.image, index)
    synthetic = _synthetic_set(tmp_path, phantom_manifest, images)
    report = evaluate_quality(synthetic, phantom_manifest, ClassifierFeatures(_TinyClassifier()), SMALL)
    row = report.table.iloc[0]
    assert row["generator"] == "toy" and row["images"] == 6 and row["copies"] == 2
    assert row["copy_rate"] == pytest.approx(2 / 6)
    per_image = report.per_image.set_index("path")
    assert per_image.loc["copy.png", "ssim"] == pytest.approx(1.0, abs=1e-6)
    assert per_image.loc["copy.png", "sifid"] == pytest.approx(0.0, abs=1e-3)
    assert per_image.loc["unrelated.png", "sifid"] > per_image.loc["noised.png", "sifid"]
    assert np.isfinite(row[["fid", "kid", "diversity_feature", "crops_diversity_ssim"]].astype(float)).all()
    # The reader meets only the covid patients no sample came from (covid-002 and -003, 3 frames each).
    assert row["reader_real_images"] == 6 and row["reader_synthetic_images"] == 6
    assert 0.0 <= row["reader_auc_lo"] <= row["reader_auc"] <= row["reader_auc_hi"] <= 1.0
    assert list(report.reader["label"]) == ["covid"]


def test_quality_cli_with_a_classifier_checkpoint(phantom_manifest, tmp_path):
    from typer.testing import CliRunner

    from sonosynth.classify import create_classifier, save_classifier
    from sonosynth.cli import app

    checkpoint = tmp_path / "classifier.pt"
    save_classifier(checkpoint, create_classifier("small_cnn", 3, in_channels=1, image_size=32),
                    phantom_manifest.classes)
    synthetic = _synthetic_set(tmp_path / "synthetic", phantom_manifest, _audit_images(phantom_manifest))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["quality", str(synthetic.root), "--real", str(phantom_manifest.root),
                                      "--features", f"classifier:{checkpoint}", "--preset", "smoke",
                                      "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "quality.csv")
    assert table.loc[0, "copies"] == 2
    assert "| toy | 3 |" in (out / "quality.md").read_text()
    memorization = pd.read_csv(out / "memorization.csv")
    assert set(memorization.loc[memorization["flagged"], "path"]) == {"copy.png", "noised.png"}
    assert (out / "most_copied.csv").is_file() and (out / "per_image.csv").is_file()
    assert {"reader_auc", "reader_auc_lo", "reader_auc_hi", "reader_fake_detection"} <= set(table.columns)
    assert "reader AUC" in (out / "quality.md").read_text()


def test_real_rows_are_required(phantom_manifest, tmp_path):
    shutil.copytree(phantom_manifest.root, tmp_path / "real")
    real = Manifest.read(tmp_path / "real")
    with pytest.raises(SonosynthError, match="no synthetic rows"):
        evaluate_quality(real, real, ClassifierFeatures(_TinyClassifier()), SMALL)


# ------------------------------------------------------------------------------------- patch SWD
def test_patch_swd_is_zero_for_the_same_images_and_grows_with_the_difference():
    from sonosynth.metrics.quality.swd import patch_swd

    rng = np.random.default_rng(4)
    real = [_structured((48, 48), rng) for _ in range(2)]
    assert patch_swd(real, real) == pytest.approx(0.0, abs=1e-9)
    slightly = [np.clip(r + 0.02 * rng.standard_normal(r.shape), 0, 1) for r in real]
    noise = [rng.random((48, 48)) for _ in range(2)]
    assert 0 < patch_swd(slightly, real) < patch_swd(noise, real)
    assert np.isnan(patch_swd([np.zeros((4, 4))], real, levels=1))
