"""The classifier zoo: every registered model builds, trains a step, exposes features, loads weights, round-trips."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from sonosynth.checkpoint import save_checkpoint
from sonosynth.classify import (
    build_classifier,
    classifier_names,
    create_classifier,
    load_classifier,
    save_classifier,
)
from sonosynth.classify import weights as weight_sources
from sonosynth.classify.models.base import count_trainable
from sonosynth.classify.models.medmamba import (
    channel_shuffle,
    chunked_selective_scan,
    merge_scan_orders,
    scan_orders,
    selective_scan,
)
from sonosynth.classify.zoo import classifier_spec
from sonosynth.errors import SonosynthError

NAMES = classifier_names()
# The smallest input each architecture handles well; ViT-B/32 gets a 2x2 patch grid.
TEST_SIZE = {"vit_b_32": 64}
IMAGENET_NAMES = [name for name in NAMES if classifier_spec(name).imagenet_weights]


def size_for(name: str) -> int:
    return TEST_SIZE.get(name, 32)


def images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_registry_holds_the_issue_models():
    assert {"small_cnn", "pocovidnet", "resnet50", "densenet169", "vit_b_32", "swin_t", "medmamba_t",
            "medmamba_compact"} <= set(NAMES)


def test_unknown_name_lists_the_available_models():
    with pytest.raises(SonosynthError, match="unknown classifier 'vgg99'.*small_cnn"):
        create_classifier("vgg99", 3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 3), (1, 6), (3, 3), (3, 6)])
def test_builds_and_trains_a_step(name, in_channels, num_classes):
    torch.manual_seed(0)
    size = size_for(name)
    model = create_classifier(name, num_classes, in_channels=in_channels, image_size=size)
    assert (model.name, model.num_classes, model.in_channels, model.image_size) == (name, num_classes, in_channels, size)
    model.train()
    logits = model(images(2, in_channels, size))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, num_classes - 1])).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert any(p.grad.abs().sum() > 0 for p in trainable)


@pytest.mark.parametrize("name", NAMES)
def test_feature_map_and_embedding_feed_the_head(name):
    torch.manual_seed(0)
    size = size_for(name)
    model = create_classifier(name, 3, in_channels=1, image_size=size).eval()
    x = images(3, 1, size)
    with torch.no_grad():
        fmap, embedding, logits = model.feature_map(x), model.embed(x), model(x)
    assert fmap.ndim == 4 and fmap.shape[0] == 3 and fmap.shape[2] >= 1 and fmap.shape[3] >= 1
    assert embedding.shape == (3, fmap.shape[1])
    torch.testing.assert_close(model.head(embedding), logits)
    if name != "vit_b_32":  # ViT's embedding is its class token; the others pool their feature map
        torch.testing.assert_close(embedding, fmap.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)


def test_wrong_channel_count_is_a_clear_error():
    model = create_classifier("small_cnn", 3, in_channels=1, image_size=32)
    with pytest.raises(SonosynthError, match=r"\(N, 1, H, W\)"):
        model(torch.rand(2, 3, 32, 32))


def imagenet_architecture(name: str, num_classes: int, **options) -> nn.Module:
    """The network as built for ImageNet weights, without them (they are not downloadable here)."""
    from sonosynth.classify import build_classifier

    return build_classifier({"name": name, "num_classes": num_classes, "in_channels": 3, "image_size": 32,
                             "input_mode": "imagenet", "options": options})


def test_pocovidnet_trains_only_the_last_conv_and_the_head():
    model = imagenet_architecture("pocovidnet", 3)
    last_conv = 512 * 512 * 9 + 512
    head = (512 * 64 + 64) + 2 * 64 + (64 * 3 + 3)  # dense 64, batch norm (scale, shift), dense 3
    assert count_trainable(model) == last_conv + head == 2_392_963  # the lung study's ~2.4 M
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen == 12_354_880  # the study's ~12.4 M non-trainable
    whole = create_classifier("pocovidnet", 3, in_channels=3, image_size=32, trainable_conv_layers=13)
    assert count_trainable(whole) == sum(p.numel() for p in whole.parameters())


def test_pocovidnet_refuses_frozen_random_layers_and_trains_all_by_default():
    with pytest.raises(SonosynthError, match="frozen at their random initialisation.*pretrained: imagenet"):
        create_classifier("pocovidnet", 3, image_size=32, trainable_conv_layers=1)
    scratch = create_classifier("pocovidnet", 3, image_size=32)
    assert count_trainable(scratch) == sum(p.numel() for p in scratch.parameters())


def test_pocovidnet_avg4x4_head_is_borns_pooling():
    from sonosynth.classify import build_classifier

    model = build_classifier({"name": "pocovidnet", "num_classes": 3, "in_channels": 1, "image_size": 224,
                              "input_mode": "imagenet", "options": {"head_pooling": "avg4x4"}}).eval()
    assert count_trainable(model) == 2_392_963  # 7 x 7 map -> one 4 x 4 window -> 512 features, as global pooling
    fmap = torch.rand(2, 512, 7, 7)
    torch.testing.assert_close(model.pool(fmap), fmap[:, :, :4, :4].mean(dim=(2, 3)))
    wide = build_classifier({"name": "pocovidnet", "num_classes": 3, "in_channels": 1, "image_size": 256,
                             "input_mode": "imagenet", "options": {"head_pooling": "avg4x4"}})
    assert wide.head[0].in_features == 512 * 4  # 8 x 8 map -> 2 x 2 windows
    with pytest.raises(SonosynthError, match="image_size >= 128"):
        create_classifier("pocovidnet", 3, image_size=64, head_pooling="avg4x4")


def test_pocovidnet_head_order():
    head = create_classifier("pocovidnet", 3, image_size=32).head
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.BatchNorm1d, nn.Linear]
    assert head[0].out_features == 64 and head[2].p == 0.5


def _torchvision_imagenet_state(name: str) -> dict[str, torch.Tensor]:
    """A state dict shaped like torchvision's ImageNet file for `name`, with recognisable values."""
    torch.manual_seed(1)
    if name == "pocovidnet":
        from torchvision.models.vgg import cfgs, make_layers

        state = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}
        state["classifier.6.weight"] = torch.zeros(1000, 8)  # the ImageNet classifier is ignored
    else:
        state = getattr(torchvision.models, classifier_spec(name).torchvision_arch)().state_dict()
    return {k: v + 0.5 if v.is_floating_point() else v for k, v in state.items()}


def _stem_key(name: str) -> tuple[str, str]:
    """(key in the torchvision file, key in our model) of the first convolution's weight."""
    return {
        "pocovidnet": ("features.0.weight", "backbone.0.weight"),
        "resnet50": ("conv1.weight", "backbone.conv1.weight"),
        "densenet169": ("features.conv0.weight", "backbone.features.conv0.weight"),
        "vit_b_32": ("conv_proj.weight", "backbone.conv_proj.weight"),
        "swin_t": ("features.0.0.weight", "backbone.features.0.0.weight"),
    }[name]


@pytest.mark.parametrize("name", IMAGENET_NAMES)
def test_imagenet_weights_from_a_local_file(name, tmp_path):
    state = _torchvision_imagenet_state(name)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    size = size_for(name)
    model = create_classifier(name, 3, in_channels=1, pretrained="imagenet", weights=path, image_size=size)
    assert model.input_mode == "imagenet"
    source_key, own_key = _stem_key(name)
    own = model.state_dict()
    assert own[own_key].shape[1] == 3  # RGB stem: grayscale is repeated at the boundary
    torch.testing.assert_close(own[own_key], state[source_key])
    loaded = [k for k in own if k.startswith("backbone.") and own[k].is_floating_point()]
    assert len(loaded) > 10
    if name == "vit_b_32":  # the 7x7 position grid was resized to this image size's 2x2
        assert own["backbone.encoder.pos_embedding"].shape == (1, 1 + 2 * 2, 768)
    assert model(images(2, 1, size)).shape == (2, 3)


def test_densenet_weights_with_the_published_key_names(tmp_path):
    state = _torchvision_imagenet_state("densenet169")
    # The published file spells `norm1` as `norm.1`; both must load.
    old_style = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in state.items()}
    assert old_style.keys() != state.keys()
    model = create_classifier("densenet169", 3, in_channels=3, pretrained="imagenet", weights=_save(old_style, tmp_path))
    key = "features.denseblock1.denselayer1.norm1.weight"
    torch.testing.assert_close(model.state_dict()[f"backbone.{key}"], state[key])


def _save(state, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    return path


def test_missing_weights_file_says_how_to_provide_weights(tmp_path):
    with pytest.raises(SonosynthError) as error:
        create_classifier("resnet50", 3, pretrained="imagenet", weights=tmp_path / "absent.pth")
    message = str(error.value)
    assert "absent.pth not found" in message
    assert "ResNet50_Weights.IMAGENET1K_V2" in message and "--weights" in message


def test_failed_download_says_how_to_provide_weights(monkeypatch):
    def offline(enum_name):
        raise OSError("network unreachable")

    monkeypatch.setattr(weight_sources, "_download_state_dict", offline)
    with pytest.raises(SonosynthError, match=r"Swin_T_Weights\.IMAGENET1K_V1.*network unreachable.*--weights"):
        create_classifier("swin_t", 3, pretrained="imagenet")


def test_weights_of_the_wrong_architecture_are_rejected(tmp_path):
    path = _save(_torchvision_imagenet_state("resnet50"), tmp_path)
    with pytest.raises(SonosynthError, match="do not fit"):
        create_classifier("swin_t", 3, pretrained="imagenet", weights=path, image_size=32)


def test_models_without_imagenet_weights_say_so():
    with pytest.raises(SonosynthError, match="small_cnn has no ImageNet weights"):
        create_classifier("small_cnn", 3, pretrained="imagenet")


def test_imagenet_input_repeats_grayscale_and_uses_imagenet_statistics():
    torch.manual_seed(0)
    config = {"name": "resnet50", "num_classes": 3, "image_size": 32, "input_mode": "imagenet"}
    gray = build_classifier({**config, "in_channels": 1}).eval()
    rgb = build_classifier({**config, "in_channels": 3}).eval()
    rgb.load_state_dict(gray.state_dict())
    x = images(2, 1, 32)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(gray.prepare(x), (x.expand(-1, 3, -1, -1) - mean) / std)


def test_vit_checks_its_image_size():
    with pytest.raises(SonosynthError, match="multiple of 32"):
        create_classifier("vit_b_32", 3, image_size=48)
    model = create_classifier("vit_b_32", 3, image_size=64)
    with pytest.raises(SonosynthError, match="built for 64 px"):
        model(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize(("name", "options"), [
    ("small_cnn", {}),
    ("medmamba_compact", {}),
    ("pocovidnet", {"trainable_conv_layers": 13}),
])
def test_save_load_round_trip_gives_identical_logits(name, options, tmp_path):
    torch.manual_seed(0)
    model = create_classifier(name, 3, in_channels=1, image_size=32, **options)
    model.train()
    model(images(4, 1, 32)).sum().backward()  # move BatchNorm statistics away from their defaults
    model.eval()
    path = save_classifier(tmp_path / "model.pt", model, ["covid", "healthy", "pneumonia"], extra={"epoch": 7})
    loaded, classes = load_classifier(path)
    assert classes == ["covid", "healthy", "pneumonia"]
    assert (loaded.name, loaded.num_classes, loaded.in_channels, loaded.image_size) == (name, 3, 1, 32)
    assert not loaded.training
    x = images(3, 1, 32, seed=5)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert count_trainable(loaded) == count_trainable(model)


def test_round_trip_keeps_imagenet_input_handling(tmp_path):
    model = build_classifier({"name": "swin_t", "num_classes": 3, "in_channels": 1, "image_size": 32,
                              "input_mode": "imagenet"}).eval()
    path = save_classifier(tmp_path / "model.pt", model, ["a", "b", "c"])
    loaded, _ = load_classifier(path)
    assert loaded.input_mode == "imagenet"
    x = images(2, 1, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_load_classifier_rejects_other_checkpoints(tmp_path):
    path = save_checkpoint(tmp_path / "generator.pt", {"kind": "generator", "config": {}})
    with pytest.raises(SonosynthError, match="not a sonosynth classifier checkpoint"):
        load_classifier(path)
    with pytest.raises(SonosynthError, match="not found"):
        load_classifier(tmp_path / "absent.pt")


def test_save_requires_one_name_per_class(tmp_path):
    model = create_classifier("small_cnn", 3, image_size=32)
    with pytest.raises(SonosynthError, match="3 outputs but 2 class names"):
        save_classifier(tmp_path / "model.pt", model, ["a", "b"])


def test_pretrained_from_a_classifier_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = create_classifier("small_cnn", 6, image_size=32).eval()
    path = save_classifier(tmp_path / "pretrained.pt", source, list("abcdef"))
    same = create_classifier("small_cnn", 6, pretrained=str(path), image_size=32).eval()
    x = images(2, 1, 32)
    with torch.no_grad():
        assert torch.equal(same(x), source(x))
    fewer = create_classifier("small_cnn", 3, pretrained=str(path), image_size=32).eval()
    assert fewer.num_classes == 3
    torch.testing.assert_close(fewer.embed(x), source.embed(x))  # backbone reloaded, head fresh
    with pytest.raises(SonosynthError, match="name='small_cnn'"):
        create_classifier("medmamba_compact", 3, pretrained=str(path), image_size=32)
    with pytest.raises(SonosynthError, match="neither 'none', 'imagenet' nor an existing"):
        create_classifier("small_cnn", 3, pretrained=str(tmp_path / "absent.pt"))


def test_vit_checkpoint_transfers_to_another_image_size(tmp_path):
    source = create_classifier("vit_b_32", 3, image_size=64)
    path = save_classifier(tmp_path / "vit.pt", source, ["a", "b", "c"])
    bigger = create_classifier("vit_b_32", 3, pretrained=str(path), image_size=96)
    assert bigger.state_dict()["backbone.encoder.pos_embedding"].shape == (1, 1 + 3 * 3, 768)
    assert bigger(torch.rand(1, 1, 96, 96)).shape == (1, 3)


# --- MedMamba's selective scan ------------------------------------------------------------------------


def _convolution_form(u, delta, A, B, C, D):
    """y_t = sum_{s<=t} C_t . (prod_{s<r<=t} exp(delta_r A)) delta_s B_s u_s + D u_t, summed explicitly."""
    length = u.shape[-1]
    y = torch.zeros_like(u)
    for t in range(length):
        for s in range(t + 1):
            decay = torch.exp(delta[..., s + 1 : t + 1].sum(-1).unsqueeze(-1) * A)  # (b, k, d, n)
            drive = (delta[..., s] * u[..., s]).unsqueeze(-1) * B[:, :, None, :, s]
            y[..., t] += (C[:, :, None, :, t] * decay * drive).sum(-1)
    return y + D.unsqueeze(-1) * u


def _scan_inputs(length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, k, d, n = 2, 4, 3, 5
    u = torch.randn(b, k, d, length, generator=g, dtype=torch.float64)
    delta = nn.functional.softplus(torch.randn(b, k, d, length, generator=g, dtype=torch.float64))
    A = -torch.rand(k, d, n, generator=g, dtype=torch.float64) * 3
    B = torch.randn(b, k, n, length, generator=g, dtype=torch.float64)
    C = torch.randn(b, k, n, length, generator=g, dtype=torch.float64)
    D = torch.randn(k, d, generator=g, dtype=torch.float64)
    return u, delta, A, B, C, D


def test_selective_scan_matches_the_convolution_form():
    inputs = _scan_inputs(7)
    torch.testing.assert_close(selective_scan(*inputs), _convolution_form(*inputs))


@pytest.mark.parametrize(("length", "chunk"), [(1, None), (16, None), (17, None), (50, 7), (50, 64)])
def test_chunked_scan_equals_the_step_by_step_scan(length, chunk):
    u, delta, A, B, C, D = _scan_inputs(length, seed=length)
    u.requires_grad_(True)
    reference = selective_scan(u, delta, A, B, C, D)
    chunked = chunked_selective_scan(u, delta, A, B, C, D, chunk=chunk)
    torch.testing.assert_close(chunked, reference)
    weights = torch.randn_like(reference)
    (grad_reference,) = torch.autograd.grad((reference * weights).sum(), u)
    (grad_chunked,) = torch.autograd.grad((chunked * weights).sum(), u)
    torch.testing.assert_close(grad_chunked, grad_reference)


def test_scan_directions_visit_every_token_and_merge_back():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    orders = scan_orders(x)
    assert orders.shape == (2, 4, 3, 20)
    assert torch.equal(orders[0, 0, 0, :6], torch.cat([x[0, 0, 0], x[0, 0, 1, :1]]))  # row-major: a row, then the next
    assert torch.equal(orders[0, 1, 0, :4], x[0, 0, :, 0])  # column-major walks down a column first
    assert torch.equal(orders[:, 2], orders[:, 0].flip(-1)) and torch.equal(orders[:, 3], orders[:, 1].flip(-1))
    torch.testing.assert_close(merge_scan_orders(orders, 4, 5), 4 * x)


def test_channel_shuffle_interleaves_the_two_branches():
    x = torch.tensor([0.0, 1.0, 10.0, 11.0]).view(1, 1, 1, 4)
    assert channel_shuffle(x, 2).flatten().tolist() == [0.0, 10.0, 1.0, 11.0]


def test_medmamba_tiny_is_the_papers_size():
    model = create_classifier("medmamba_t", 6, in_channels=3, image_size=32)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert math.isclose(millions, 14.5, abs_tol=0.1)  # MedMamba-T, 14.5 M parameters (Yue & Li 2024)
    assert model.options == {"variant": "tiny"}


def test_the_old_medmamba_name_says_which_network_is_meant():
    with pytest.raises(SonosynthError, match="medmamba_t .*MedMamba-T.*medmamba_compact"):
        create_classifier("medmamba", 6)
    assert "medmamba" not in NAMES


def test_small_cnn_is_compact():
    model = create_classifier("small_cnn", 3, image_size=128)
    assert 100_000 <= sum(p.numel() for p in model.parameters()) <= 300_000
