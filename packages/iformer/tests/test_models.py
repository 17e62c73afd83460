"""Architecture: exact sizes, official key manifest, golden outputs, resolution rules."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from iformer import InceptionTransformer, create_model, iformer_small, list_models
from iformer.models import IFormerBlock

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # made from the official release (fixtures/README.md)

PARAMS = {
    "iformer_small": 19_866_344,
    "iformer_base": 47_866_216,
    "iformer_large": 86_637_096,
    "iformer_small_384": 20_899_944,
    "iformer_base_384": 48_936_296,
    "iformer_large_384": 87_743_656,
    "tiny_test": 651_498,
}


def count(model):
    return sum(p.numel() for p in model.parameters())


def on_meta(name, **kwargs):
    """Shapes and counts without allocating or initialising weights."""
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize("name", list(PARAMS))
def test_exact_parameter_counts(name):
    kwargs = {"num_classes": 10} if name == "tiny_test" else {}
    assert count(on_meta(name, **kwargs)) == PARAMS[name]


@pytest.mark.parametrize("name", ["iformer_small_384", "iformer_base_384", "iformer_large_384"])
def test_384_with_release_grid_has_the_224_count(name):
    assert count(on_meta(name, pos_grid_size=224)) == PARAMS[name.removesuffix("_384")]


def test_small_per_component_counts_and_arguments():
    with torch.device("meta"):
        model = iformer_small()
    sizes = {
        "pos": sum(getattr(model, f"pos_embed{i}").numel() for i in range(1, 5)),
        "stem": count(model.patch_embed),
        "pe2": count(model.patch_embed2),
        "pe3": count(model.patch_embed3),
        "pe4": count(model.patch_embed4),
        "blocks": [count(getattr(model, f"blocks{i}")) for i in range(1, 5)],
        "norm": count(model.norm),
        "head": count(model.head),
    }
    assert sizes == {
        "pos": 533_120,
        "stem": 43_200,
        "pe2": 166_464,
        "pe3": 553_920,
        "pe4": 1_107_072,
        "blocks": [298_176, 1_178_496, 10_434_560, 5_165_568],
        "norm": 768,
        "head": 385_000,
    }
    assert count(on_meta("iformer_small", in_chans=1, num_classes=10)) == 19_484_330


@pytest.mark.parametrize("name", [n for n in PARAMS if n != "tiny_test"])
def test_state_dict_equals_official_manifest(name):
    manifest = json.loads((FIXTURES / "official_state_dict_manifest.json").read_text())[name]
    model = on_meta(name)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == manifest["state_dict"]
    assert count(model) == manifest["num_params"]


def test_layer_scale_only_in_stages_3_and_4_and_frequency_ramp():
    model = iformer_small()
    keys = [k for k in model.state_dict() if "layer_scale" in k]
    assert keys and all(k.startswith(("blocks3.", "blocks4.")) for k in keys)
    assert len(keys) == 2 * (9 + 3)
    splits = [(b.attn.high_dim, b.attn.low_dim) for i in range(1, 5) for b in getattr(model, f"blocks{i}")]
    assert splits == [(64, 32)] * 3 + [(96, 96)] * 3 + [(96, 224)] * 4 + [(32, 288)] * 5 + [(32, 352)] * 3
    assert model.blocks3[0].layer_scale_1.eq(1e-6).all()


def test_golden_official_outputs_reproduced():
    golden = torch.load(FIXTURES / "tiny_official_golden.pt", weights_only=True)
    model = InceptionTransformer(**golden["config"])
    model.load_state_dict(golden["state_dict"], strict=True)
    model.eval()
    with torch.inference_mode():  # the fused inference path
        torch.testing.assert_close(model(golden["input"]), golden["logits"], atol=1e-5, rtol=0)
        torch.testing.assert_close(model.forward_features(golden["input"]), golden["features"], atol=1e-5, rtol=0)
    logits = model(golden["input"])  # the autograd path
    torch.testing.assert_close(logits.detach(), golden["logits"], atol=1e-5, rtol=0)


def test_inference_path_equals_training_path():
    torch.manual_seed(0)
    model = create_model("tiny_test", img_size=64).eval()
    for block in model.modules():
        if isinstance(block, IFormerBlock) and block.layer_scale_1 is not None:
            block.layer_scale_1.data.fill_(0.7)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        fast = model(x)
    torch.testing.assert_close(fast, model(x).detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [32, 48, 64, 96, 224])
def test_resolutions_that_work(size):
    model = create_model("tiny_test", num_classes=5, img_size=32).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 5)


@pytest.mark.parametrize("size", [200, 232, 40])
def test_resolutions_the_release_cannot_tile_are_refused(size):
    model = create_model("tiny_test", img_size=32)
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.randn(1, 3, size, size))


def test_non_square_inputs_work_here():
    """A deliberate relaxation: the release crashes on non-square inputs."""
    model = create_model("tiny_test", num_classes=4, img_size=32).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 64)).shape == (2, 4)


def test_pos_embed_resize_equals_pre_interpolated_tables():
    small_grid = create_model("tiny_test", img_size=32).eval()
    big_grid = create_model("tiny_test", img_size=64).eval()
    state = small_grid.state_dict()
    for i in range(1, 5):
        table = state[f"pos_embed{i}"]
        size = getattr(big_grid, f"pos_embed{i}").shape[1:3]
        state[f"pos_embed{i}"] = F.interpolate(
            table.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False
        ).permute(0, 2, 3, 1)
    big_grid.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(small_grid(x), big_grid(x))


def test_features_stages_classifier_reset():
    model = create_model("tiny_test", num_classes=7, img_size=32)
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_features(x).shape == (2, 128)
    stages = model.forward_features(x, return_stages=True)
    assert [tuple(s.shape) for s in stages] == [(2, 32, 8, 8), (2, 64, 4, 4), (2, 96, 2, 2), (2, 128, 1, 1)]
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.get_classifier().out_features == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)
    assert create_model("tiny_test", num_classes=0)(x).shape == (2, 128)
    assert model.no_weight_decay() == {"pos_embed1", "pos_embed2", "pos_embed3", "pos_embed4"}
    assert set(model.no_weight_decay()) <= set(dict(model.named_parameters()))


def test_in_chans_and_bad_input_shape():
    model = create_model("tiny_test", in_chans=1, num_classes=10)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"expected input \(B, 1, H, W\)"):
        model(torch.randn(2, 3, 32, 32))


def test_drop_path_schedule_spans_all_blocks():
    model = create_model("tiny_test", drop_path_rate=0.4)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for i in range(1, 5) for b in getattr(model, f"blocks{i}")]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_gradients_reach_every_parameter():
    model = create_model("tiny_test", num_classes=3, img_size=32)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_registry():
    assert list_models() == [*PARAMS]
    with pytest.raises(ValueError, match="unknown model 'iformer_tiny'"):
        create_model("iformer_tiny")
