"""SinDDM / FewDDM: pyramid, schedule, forward process, denoiser, fit/sample/resume, CLI (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sonosynth.checkpoint import load_checkpoint, load_weights
from sonosynth.config import load_config
from sonosynth.data.images import load_grayscale, save_png
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import create_generator, manifest_from_images
from sonosynth.generators.sinddm.config import SinDDMConfig
from sonosynth.generators.sinddm.data import prepare_training_data
from sonosynth.generators.sinddm.diffusion import (
    DiffusionTables,
    clean_target,
    eps_from_v,
    forward_process,
    velocity,
)
from sonosynth.generators.sinddm.network import SinDDMDenoiser, parameter_count
from sonosynth.generators.sinddm.pyramid import blur_level, build_pyramid, plan_pyramid
from sonosynth.generators.sinddm.sampling import SinDDMModel, generate, output_sizes
from sonosynth.generators.sinddm.schedule import make_schedule, sampling_timesteps, start_steps
from sonosynth.generators.sinddm.training import (
    batch_at,
    draw_batch,
    new_state,
    random_crops,
    scale_probabilities,
    train_step,
)


def smoke_config(**changes) -> SinDDMConfig:
    return load_config(SinDDMConfig, "sinddm", "smoke", {"precision": "fp32", **changes})


def stripes(height: int = 48, width: int = 48, period: float = 3.0) -> np.ndarray:
    """Vertical stripes: intensity varies along x only."""
    x = np.arange(width)[None, :].repeat(height, 0)
    return np.where(np.sin(x / period * np.pi) > 0, 220, 30).astype(np.uint8)


@pytest.fixture()
def stripe_manifest(tmp_path):
    save_png(tmp_path / "stripes.png", stripes())
    return manifest_from_images([tmp_path / "stripes.png"], label="pneumonia")


# ------------------------------------------------------------------------------------------ pyramid
@pytest.mark.parametrize(("height", "width", "expected"), [
    (560, 560, [(55, 55), (78, 78), (111, 111), (157, 157), (223, 223)]),  # the worked example
    (128, 128, [(55, 55), (84, 84), (128, 128)]),  # 128 / 55 = e^0.845; 0.845 / ln 1.411 = 2.45 -> 3 scales
    (300, 500, [(43, 72), (61, 101), (86, 144), (122, 203), (173, 288)]),  # capped by sqrt(3); coarsest 43
    (64, 64, [(64, 64)]),  # the official code divides by zero here; one scale is a plain DDPM
])
def test_pyramid_sizes_match_hand_worked_cases(height, width, expected):
    assert list(plan_pyramid(height, width).sizes) == expected


def test_blur_level_reproduces_uint8_wraparound_and_offers_float():
    sharp, blurry = np.full((1, 1, 1), 10, np.uint8), np.full((1, 1, 1), 13, np.uint8)
    # 10 - 13 wraps to 253 in uint8; the official code sees 3 identical RGB channels: 253 * sqrt(3) / 3.
    assert blur_level(sharp, blurry, "official") == pytest.approx(253 / np.sqrt(3))
    assert blur_level(sharp, blurry, "float") == pytest.approx(3.0)


def test_pyramid_scales_and_blurry_images():
    noise = np.random.default_rng(0).integers(0, 256, (100, 100)).astype(np.uint8)
    pyramid = build_pyramid(noise, plan_pyramid(100, 100))
    assert [a.shape for a in pyramid.sharp] == [(55, 55, 1), (74, 74, 1), (100, 100, 1)]
    assert pyramid.blurry[0] is pyramid.sharp[0]
    assert pyramid.blurry[2].shape == pyramid.sharp[2].shape
    # the blurry image is smoother than the sharp one
    assert np.abs(np.diff(pyramid.blurry[2].astype(float), axis=1)).mean() < \
        np.abs(np.diff(pyramid.sharp[2].astype(float), axis=1)).mean()


# ------------------------------------------------------------------------------------------ schedule
def test_start_steps_for_the_official_blur_levels():
    # the example image: official levels 1.095 / 0.761 / 0.531 / 0.373 -> 52 / 40 / 30 / 22
    assert start_steps(make_schedule(100), [1.095, 0.761, 0.531, 0.373]) == [100, 52, 40, 30, 22]


def test_sampling_timesteps_official_and_strided():
    assert sampling_timesteps(100) == list(range(99, -1, -1))
    # 100 + 52 + 40 + 30 + 22 network calls for the example image
    assert sum(len(sampling_timesteps(k)) for k in (100, 52, 40, 30, 22)) == 244
    strided = sampling_timesteps(52, stride=2)
    assert strided[0] == 51 and strided[-1] == 0 and len(strided) == 26
    assert strided == sorted(strided, reverse=True)


def test_forward_process_endpoints_and_blur_mixing():
    torch.manual_seed(0)
    tables = DiffusionTables.build(100, [0.8])
    sharp = torch.rand(4, 1, 64, 64) * 2 - 1
    blurry = torch.rand(4, 1, 64, 64) * 2 - 1
    noise = torch.randn(4, 1, 64, 64)
    zeros = torch.zeros(4, dtype=torch.long)
    at_zero = forward_process(sharp, blurry, zeros, 1, tables, noise)
    assert (at_zero - sharp).abs().mean() < 0.03  # t = 0: the (sharp) image, barely noised
    last = torch.full((4,), 99, dtype=torch.long)
    at_end = forward_process(sharp, blurry, last, 1, tables, noise)
    assert at_end.std().item() == pytest.approx(1.0, abs=0.03)  # t = T: unit-variance noise
    assert abs(np.corrcoef(at_end.flatten(), sharp.flatten())[0, 1]) < 0.05
    # without noise, the clean part is gamma_t * blurry + (1 - gamma_t) * sharp, gamma from sigma_t / level
    sigma = make_schedule(100).sigma
    for t in (5, 30, 60):
        steps = torch.full((4,), t, dtype=torch.long)
        clean = forward_process(sharp, blurry, steps, 1, tables, torch.zeros_like(noise)) / tables.alpha_bar[t].sqrt()
        gamma = min(1.0, sigma[t] / 0.8)
        torch.testing.assert_close(clean, gamma * blurry + (1 - gamma) * sharp, atol=1e-5, rtol=1e-5)
    # coarsest scale: no blur at all
    steps = torch.full((4,), 60, dtype=torch.long)
    clean = forward_process(sharp, blurry, steps, 0, tables, torch.zeros_like(noise)) / tables.alpha_bar[60].sqrt()
    torch.testing.assert_close(clean, sharp, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", [0, 1])
def test_v_prediction_target_recovers_the_noise_and_the_clean_image(scale):
    torch.manual_seed(0)
    tables = DiffusionTables.build(100, [0.8])
    sharp, blurry = torch.rand(3, 1, 16, 16) * 2 - 1, torch.rand(3, 1, 16, 16) * 2 - 1
    noise = torch.randn(3, 1, 16, 16)
    for t in (0, 40, 99):
        steps = torch.full((3,), t, dtype=torch.long)
        x_t = forward_process(sharp, blurry, steps, scale, tables, noise).double()
        clean = clean_target(sharp, blurry, steps, scale, tables).double()
        v = velocity(clean, noise.double(), tables.alpha_bar[steps].double())
        ab = tables.schedule.alpha_bar_at(t)
        eps = eps_from_v(x_t, v, ab)
        torch.testing.assert_close(eps, noise.double(), atol=1e-5, rtol=0)
        # the sampler's x0 estimate from that eps is the clean image, even at t = T-1 where 1/sqrt(ab) ~ 300
        x0 = (x_t - (1 - ab) ** 0.5 * eps) / ab ** 0.5
        torch.testing.assert_close(x0, clean, atol=1e-4, rtol=0)


def test_v_prediction_is_a_model_setting_that_trains_and_samples(stripe_manifest, tmp_path):
    generator = create_generator("sinddm")
    folder = generator.fit(stripe_manifest, tmp_path / "run", smoke_config(prediction="v"), progress=False)
    model = SinDDMModel.from_pretrained(folder, "cpu")
    assert model.config.prediction == "v"
    images = generate(model, [0, 1])
    assert images.shape[0] == 2 and torch.isfinite(images).all()
    with pytest.raises(SonosynthError, match="prediction"):
        generator.fit(stripe_manifest, tmp_path / "run", smoke_config(prediction="epsilon", train_steps=30),
                      progress=False)


# ------------------------------------------------------------------------------------------ network
@pytest.mark.parametrize("channels", [1, 3])
def test_denoiser_shapes_for_odd_sizes(channels):
    net = SinDDMDenoiser(channels, dim=16)
    out = net(torch.randn(2, channels, 37, 51), torch.tensor([0, 99]), 3)
    assert out.shape == (2, channels, 37, 51)


def test_paper_denoiser_size():
    assert 1.0e6 < parameter_count(SinDDMDenoiser(1, 160)) < 1.2e6


def test_receptive_field_is_33_pixels():
    torch.manual_seed(0)
    net = SinDDMDenoiser(1, dim=8).double()
    x = torch.randn(1, 1, 65, 65, dtype=torch.float64, requires_grad=True)
    net(x, torch.tensor([10]), 1)[0, 0, 32, 32].backward()
    rows, cols = torch.nonzero(x.grad[0, 0].abs() > 0, as_tuple=True)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (33, 33)


# ------------------------------------------------------------------------------------------ fit and sample
def test_fit_lowers_loss_and_samples_keep_stripe_orientation(stripe_manifest, tmp_path):
    config = smoke_config(train_steps=200, dim=24, lr=0.003, lr_milestones=[150], ema_start=150, checkpoint_every=200,
                          batch_size=8)
    generator = create_generator("sinddm")
    folder = generator.fit(stripe_manifest, tmp_path / "run", config, progress=False)
    losses = pd.read_csv(folder / "loss.csv")["loss"].to_numpy()
    assert losses[-30:].mean() < 0.6 * losses[:10].mean()
    samples = generator.sample(folder, 4, tmp_path / "samples", progress=False)
    assert len(samples) == 4 and set(samples.labels) == {"pneumonia"}
    for path in samples.absolute_paths():
        image = load_grayscale(path).astype(float)
        along_x = np.abs(np.diff(image, axis=1)).mean()
        along_y = np.abs(np.diff(image, axis=0)).mean()
        assert along_x > 2 * along_y, (along_x, along_y)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sinddm")
    save_png(root / "stripes.png", stripes())
    manifest = manifest_from_images([root / "stripes.png"], label="pneumonia")
    folder = create_generator("sinddm").fit(manifest, root / "run", smoke_config(), progress=False)
    return folder


def test_sampling_any_size_and_scale_multiplier(trained):
    model = SinDDMModel.from_pretrained(trained, "cpu")
    assert generate(model, [0], size=(40, 70)).shape == (1, 1, 40, 70)
    height, width = model.sizes[-1]
    assert generate(model, [0, 1], scale_mul=(1.0, 2.0)).shape == (2, 1, height, 2 * width)
    assert output_sizes(model.sizes, None, (1.0, 2.0))[0] == (model.sizes[0][0], 2 * model.sizes[0][1])
    assert not generate(model, [0]).requires_grad


def test_sampling_is_deterministic_per_seed_and_batch_independent(trained):
    model = SinDDMModel.from_pretrained(trained, "cpu")
    together = generate(model, [3, 4, 5])
    alone = generate(model, [4])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_gamma_max_scales_what_the_fine_scales_add_to_the_upsampled_coarse_sample(trained):
    """sharp = x~ + (x0_mix - x~) / (1 - g): the departure from the coarse sample grows with the clamp g."""
    model = SinDDMModel.from_pretrained(trained, "cpu")
    fine_sizes = model.sizes
    model.sizes = fine_sizes[:1]
    coarse = generate(model, [0, 1, 2, 3])
    model.sizes = fine_sizes
    upsampled = torch.nn.functional.interpolate(coarse, size=fine_sizes[-1], mode="bilinear", align_corners=False)
    departure = [float((generate(model, [0, 1, 2, 3], gamma_max=g) - upsampled).abs().mean()) for g in (0.0, 0.5, 0.9)]
    assert departure[0] < departure[1] < departure[2], departure


def test_cpu_preset_takes_the_fine_scale_estimate_as_is_and_paper_keeps_the_official_clamp():
    assert load_config(SinDDMConfig, "sinddm", "cpu").sample_gamma_max == 0.0
    assert load_config(SinDDMConfig, "sinddm", "paper").sample_gamma_max == 0.55


def test_sample_writes_provenance_and_resumes(trained, tmp_path):
    generator = create_generator("sinddm")
    first = generator.sample(trained, 2, tmp_path / "set", seed=10, progress=False)
    again = generator.sample(trained, 3, tmp_path / "set", seed=10, progress=False)
    assert len(first) == 2 and len(again) == 3
    assert sorted(again.table["seed"].tolist()) == [10, 11, 12]
    assert all("stripes.png" in parents[0].name for parents in again.parent_paths())
    assert (again.table["origin"] == "synthetic").all()


def test_resume_continues_exactly(stripe_manifest, tmp_path):
    generator = create_generator("sinddm")
    config = smoke_config(train_steps=12, checkpoint_every=6, ema_start=4)
    straight = generator.fit(stripe_manifest, tmp_path / "straight", config, progress=False)
    split = tmp_path / "split"
    generator.fit(stripe_manifest, split, smoke_config(train_steps=6, checkpoint_every=6, ema_start=4), progress=False)
    generator.fit(stripe_manifest, split, config, progress=False)
    a = pd.read_csv(straight / "loss.csv")
    b = pd.read_csv(split / "loss.csv")
    assert len(a) == len(b) == 12
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    assert (a["scale"] == b["scale"]).all()
    ema_a, _ = load_weights(straight / "model.safetensors")
    ema_b, _ = load_weights(split / "model.safetensors")
    for key in ema_a:
        torch.testing.assert_close(ema_a[key], ema_b[key], atol=1e-6, rtol=1e-5)
    state_a = load_checkpoint(straight / "training_state.safetensors")
    state_b = load_checkpoint(split / "training_state.safetensors")
    for key in state_a["optimizer"]["state"]:
        for name, value in state_a["optimizer"]["state"][key].items():
            torch.testing.assert_close(value, state_b["optimizer"]["state"][key][name], atol=1e-6, rtol=1e-5)


def test_resuming_a_finished_fit_with_new_sampling_defaults_stores_them_without_training(stripe_manifest, tmp_path):
    from sonosynth.generators.base import read_record

    generator = create_generator("sinddm")
    run = tmp_path / "run"
    generator.fit(stripe_manifest, run, smoke_config(train_steps=2), progress=False)
    weights_before = (run / "model.safetensors").read_bytes()
    generator.fit(stripe_manifest, run, smoke_config(train_steps=2, sample_stride=2, sample_gamma_max=0.0),
                  progress=False)
    record = read_record(run)
    assert record.step == 2 and record.complete
    assert record.config["sample_stride"] == 2 and record.config["sample_gamma_max"] == 0.0
    assert (run / "model.safetensors").read_bytes() == weights_before
    # More steps: trained as before, and the checkpoint written at the end carries the settings.
    generator.fit(stripe_manifest, run, smoke_config(train_steps=4, sample_stride=3), progress=False)
    record = read_record(run)
    assert record.step == 4 and record.config["sample_stride"] == 3


def test_resume_refuses_other_config_or_images(stripe_manifest, tmp_path):
    generator = create_generator("sinddm")
    generator.fit(stripe_manifest, tmp_path / "run", smoke_config(train_steps=2), progress=False)
    with pytest.raises(SonosynthError, match="different config"):
        generator.fit(stripe_manifest, tmp_path / "run", smoke_config(train_steps=4, dim=8), progress=False)
    save_png(tmp_path / "other.png", stripes().T.copy())
    other = manifest_from_images([tmp_path / "other.png"], label="pneumonia")
    with pytest.raises(SonosynthError, match="other images"):
        generator.fit(other, tmp_path / "run", smoke_config(train_steps=4), progress=False)


def test_nan_loss_stops_and_keeps_last_checkpoint(stripe_manifest, tmp_path, monkeypatch):
    from sonosynth.generators.sinddm import training

    generator = create_generator("sinddm")
    real_loss, calls = training.training_loss, {"n": 0}

    def failing_loss(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 8 else loss

    monkeypatch.setattr(training, "training_loss", failing_loss)
    with pytest.raises(SonosynthError, match="diverged.*step 8.*step 5"):
        generator.fit(stripe_manifest, tmp_path / "run", smoke_config(train_steps=20, checkpoint_every=5),
                      progress=False)
    assert load_checkpoint(tmp_path / "run" / "training_state.safetensors")["step"] == 5


def test_fewddm_draws_every_image_and_brings_them_to_one_size(tmp_path):
    images = [stripes(48, 48), stripes(60, 40).T.copy(), np.full((52, 52), 128, np.uint8)]
    data = prepare_training_data(images, smoke_config())
    assert data.n_images == 3 and all(s.shape[0] == 3 for s in data.sharp)
    torch.manual_seed(0)
    drawn = {draw_batch(data, smoke_config()).image for _ in range(60)}
    assert drawn == {0, 1, 2}
    paths = []
    for i, image in enumerate(images):
        save_png(tmp_path / f"img{i}.png", image)
        paths.append(tmp_path / f"img{i}.png")
    manifest = manifest_from_images(paths, label="pneumonia")
    folder = create_generator("fewddm").fit(manifest, tmp_path / "few", smoke_config(train_steps=30), progress=False)
    log = pd.read_csv(folder / "loss.csv")
    assert set(log["image"]) == {0, 1, 2}
    samples = create_generator("fewddm").sample(folder, 2, tmp_path / "few-samples", progress=False)
    assert len(samples.parent_paths()[0]) == 3


def test_image_embedding_starts_as_the_official_network_and_conditions_only_the_coarsest_scale():
    torch.manual_seed(0)
    official, embedded = SinDDMDenoiser(1, 16), SinDDMDenoiser(1, 16, images=3)
    embedded.load_state_dict({**official.state_dict(), "image_embed.weight": embedded.image_embed.weight})
    x, t = torch.randn(3, 1, 24, 24), torch.tensor([5, 5, 5])
    images = torch.tensor([0, 1, 2])
    torch.testing.assert_close(embedded(x, t, 0, images), official(x, t, 0))  # zero vectors: the official net
    with torch.no_grad():
        embedded.image_embed.weight.normal_()
    same = x[:1].expand(3, -1, -1, -1)
    coarsest, finer = embedded(same, t, 0, images), embedded(same, t, 1, images)
    assert (coarsest[0] - coarsest[1]).abs().max() > 1e-3
    torch.testing.assert_close(finer[0], finer[1])
    with pytest.raises(ValueError, match="image index"):
        embedded(x, t, 0)


def test_fewddm_with_image_embedding_gives_each_sample_one_parent_and_its_embedding(tmp_path):
    """Seed s draws with image s mod k's embedding, and that image is its only parent. Whether the
    embedding makes samples follow one layout is a learning question, measured in benchmarks/realism.py."""
    paths = []
    for i, image in enumerate([stripes(), stripes().T.copy(), np.full((48, 48), 128, np.uint8)]):
        save_png(tmp_path / f"img{i}.png", image)
        paths.append(tmp_path / f"img{i}.png")
    config = smoke_config(train_steps=20, image_embedding=True)
    generator = create_generator("fewddm")
    folder = generator.fit(manifest_from_images(paths, label="pneumonia"), tmp_path / "few", config, progress=False)
    embedding = load_weights(folder / "model.safetensors")[0]["image_embed.weight"]
    assert embedding.shape == (3, 32) and embedding.abs().sum() > 0  # trained away from its zero start
    samples = generator.sample(folder, 7, tmp_path / "samples", progress=False)
    parents = {int(seed): [p.name for p in ps] for seed, ps in zip(samples.table["seed"], samples.parent_paths(),
                                                                    strict=True)}
    assert parents == {seed: [f"img{seed % 3}.png"] for seed in range(7)}
    model = SinDDMModel.from_pretrained(folder, "cpu")
    with torch.no_grad():
        model.denoiser.image_embed.weight[1] += 5.0  # only seeds 1 and 4 use image 1
    changed = generate(model, [0, 1, 2, 4]) - generate(SinDDMModel.from_pretrained(folder, "cpu"), [0, 1, 2, 4])
    assert [bool(c.abs().max() > 1e-3) for c in changed] == [False, True, False, True]


def test_blurry_input_network_takes_the_coarser_image_at_finer_scales_and_zeros_at_the_coarsest():
    torch.manual_seed(0)
    net = SinDDMDenoiser(1, 16, blurry_input=True)
    x, t, blurry = torch.randn(2, 1, 24, 24), torch.tensor([5, 5]), torch.randn(2, 1, 24, 24)
    torch.testing.assert_close(net(x, t, 0), net(x, t, 0, blurry=torch.zeros_like(x)))
    assert (net(x, t, 1, blurry=blurry) - net(x, t, 1, blurry=blurry.flip(-1))).abs().max() > 1e-3
    with pytest.raises(ValueError, match="blurry_input"):
        SinDDMDenoiser(1, 16)(x, t, 1, blurry=blurry)


def _record_blurry_inputs(denoiser: SinDDMDenoiser) -> list[tuple[int, torch.Tensor | None]]:
    """Wrap the denoiser's forward so every call's scale and blurry input are kept."""
    calls, forward = [], denoiser.forward

    def recording(x, t, scale, image=None, blurry=None):
        calls.append((int(torch.as_tensor(scale).flatten()[0]), None if blurry is None else blurry.detach().clone()))
        return forward(x, t, scale, image, blurry)

    denoiser.forward = recording
    return calls


def test_blurry_input_training_shows_each_finer_scale_its_blurry_image():
    config = smoke_config(blurry_input=True, compiled_depthwise_grad=False)  # the stock gradient: no compile wait
    data = prepare_training_data([stripes(50, 50)], config)
    state = new_state(config, torch.device("cpu"))
    tables = DiffusionTables.build(config.timesteps, data.blur_levels)
    calls = _record_blurry_inputs(state.model)
    for scale in range(data.n_scales):
        batch = batch_at(data, config, scale, 0)
        train_step(state, data, tables, config, "fp32", batch)
        seen_scale, seen = calls[-1]
        assert seen_scale == scale
        if scale == 0:
            assert seen is None
        else:
            torch.testing.assert_close(seen, batch.blurry.float())


def test_blurry_input_sampling_gives_each_finer_scale_the_upsampled_coarser_sample(stripe_manifest, tmp_path):
    config = smoke_config(train_steps=20, blurry_input=True, compiled_depthwise_grad=False)
    folder = create_generator("sinddm").fit(stripe_manifest, tmp_path / "fit", config, progress=False)
    assert load_weights(folder / "model.safetensors")[0]["blocks.0.depthwise.weight"].shape[0] == 2  # x_t and x~
    model = SinDDMModel.from_pretrained(folder, "cpu")
    sizes = model.sizes
    assert len(sizes) > 1
    calls = _record_blurry_inputs(model.denoiser)
    generate(model, [0, 1])
    for scale in range(1, len(sizes)):
        model.sizes = sizes[:scale]  # the same seeds draw the same coarser sample
        coarser = generate(model, [0, 1])
        expected = torch.nn.functional.interpolate(coarser, size=sizes[scale], mode="bilinear", align_corners=False)
        given = [blurry for s, blurry in calls if s == scale]
        assert given and all(torch.equal(blurry, given[0]) for blurry in given)
        torch.testing.assert_close(given[0], expected)
    assert all(blurry is None for s, blurry in calls if s == 0)


def test_equal_time_scale_sampling_weights_scales_by_inverse_pixels():
    data = prepare_training_data([stripes(50, 50)], smoke_config())
    pixels = torch.tensor([float(h * w) for h, w in data.plan.sizes])
    assert torch.allclose(scale_probabilities(data, smoke_config()), torch.full((data.n_scales,), 1 / data.n_scales))
    equal_time = smoke_config(scale_sampling="equal_time")
    probabilities = scale_probabilities(data, equal_time)
    assert torch.allclose(probabilities * pixels, (probabilities * pixels)[0].expand(data.n_scales))
    assert probabilities[0] > probabilities[-1]
    torch.manual_seed(0)
    counts = torch.bincount(torch.tensor([draw_batch(data, equal_time).scale for _ in range(4000)]),
                            minlength=data.n_scales)
    assert torch.allclose(counts / 4000, probabilities, atol=0.03)
    # with crops, a cropped scale costs the crop's pixels, not the full scale's
    cropped = scale_probabilities(data, smoke_config(scale_sampling="equal_time", crop_size=40))
    finest = data.plan.sizes[-1]
    assert cropped[-1] / cropped[0] == pytest.approx(
        (data.plan.sizes[0][0] * data.plan.sizes[0][1]) / (min(40, finest[0]) * min(40, finest[1])), rel=1e-5)


def test_crop_training_and_single_scale_and_rgb(tmp_path):
    crops = prepare_training_data([stripes(50, 50)], smoke_config())
    torch.manual_seed(0)
    for _ in range(10):
        batch = draw_batch(crops, smoke_config(crop_size=40))
        assert batch.sharp.shape[-1] == min(40, crops.plan.sizes[batch.scale][1])
        assert batch.sharp.shape == batch.blurry.shape
    # the loss counts only pixels whose 33x33 view is the same as in the full image
    sharp = torch.arange(100.0 * 100).reshape(1, 100, 100)
    cut, _, mask = random_crops(sharp, sharp, 64, 40)
    for b in range(64):
        y, x = divmod(int(cut[b, 0, 0, 0]), 100)
        rows, cols = torch.nonzero(mask[b, 0], as_tuple=True)
        assert rows.min() == (0 if y == 0 else 16) and cols.max() == (39 if x + 40 == 100 else 23)
    # a small image is one scale (plain DDPM) instead of the official code's division by zero
    rgb = np.stack([stripes(40, 40), stripes(40, 40)[::-1], np.full((40, 40), 90, np.uint8)], axis=-1)
    save_png(tmp_path / "rgb.png", rgb)
    manifest = manifest_from_images([tmp_path / "rgb.png"], label="x")
    config = smoke_config(channels=3, max_pixels=50_000, coarsest_min=42, coarsest_max=55, train_steps=3)
    folder = create_generator("sinddm").fit(manifest, tmp_path / "rgb", config, progress=False)
    model = SinDDMModel.from_pretrained(folder, "cpu")
    assert model.sizes == ((40, 40),)
    assert generate(model, [0]).shape == (1, 3, 40, 40)


def test_crop_counted_pixels_see_what_the_full_image_shows():
    """Crops are the default: where the mask counts a pixel, the denoiser's output on the crop equals its
    output on the whole image, so the crop loss is the full-image loss on those pixels."""
    torch.manual_seed(0)
    model = SinDDMDenoiser(1, 16).eval()
    noisy = torch.randn(1, 90, 90)
    where = torch.arange(90.0 * 90).reshape(1, 90, 90)  # cropped alongside to recover each window's place
    t = torch.tensor([37])
    with torch.no_grad():
        full = model(noisy[None], t, 1)[0]
        cut, places, mask = random_crops(noisy, where, 12, 48)
        cropped = model(cut, t.expand(12), 1)
    for b in range(12):
        y, x = divmod(int(places[b, 0, 0, 0]), 90)
        counted = mask[b, 0].bool()
        assert counted.sum() >= 16 * 16
        window = full[0, y:y + 48, x:x + 48]
        assert torch.allclose(cropped[b, 0][counted], window[counted], atol=1e-5)
        # and the uncounted border really differs (it saw zero padding), which is why it is masked
        if not counted.all():
            assert not torch.allclose(cropped[b, 0][~counted], window[~counted], atol=1e-3)


def test_cli_train_and_generate(tmp_path):
    from typer.testing import CliRunner

    from sonosynth.cli import app

    save_png(tmp_path / "img.png", stripes())
    runner = CliRunner()
    result = runner.invoke(app, ["train", "sinddm", str(tmp_path / "img.png"), "--preset", "smoke", "--out",
                                 str(tmp_path / "run"), "--set", "train_steps=4", "--label", "pneumonia"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["generate", "sinddm", str(tmp_path / "run" / "generator.json"), "-n", "2",
                                 "--size", "30x45", "--out", str(tmp_path / "set")])
    assert result.exit_code == 0, result.output
    assert load_grayscale(next((tmp_path / "set" / "images" / "pneumonia").glob("*.png"))).shape == (30, 45)
