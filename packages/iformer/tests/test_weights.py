"""Loading official-format checkpoints by name, including the release's 384 grids."""

import argparse
from pathlib import Path

import pytest
import torch

from iformer import InceptionTransformer, create_model
from iformer.weights import load_weights, read_weights
from shared.errors import UserError

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # made from the official release (fixtures/README.md)


@pytest.fixture(scope="module")
def golden():
    return torch.load(FIXTURES / "tiny_official_golden.pt", weights_only=True)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3, "arch": "iformer_small"},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {"state_dict_ema": sd},
        lambda sd: {"state_dict": sd, "args": argparse.Namespace(lr=1e-3, model="iformer_small"), "version": 2},
    ],
    ids=["raw", "state_dict", "module-prefixed", "ema", "timm-training-checkpoint"],
)
def test_official_formats_load_and_reproduce_golden(golden, tmp_path, wrap):
    path = tmp_path / "weights.pth"
    torch.save(wrap(golden["state_dict"]), path)
    model = load_weights(InceptionTransformer(**golden["config"]), path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(golden["input"]), golden["logits"], atol=1e-5, rtol=0)


def test_224_checkpoint_into_384_models():
    """The release's 384 checkpoints hold 224-grid tables: both ways of loading them agree."""
    torch.manual_seed(0)
    state = create_model("iformer_small").state_dict()  # a 224 (or released 384) checkpoint
    as_coded = load_weights(create_model("iformer_small_384"), state).eval()  # tables resized to 96/48/24/12
    release_grid = create_model("iformer_small_384", pos_grid_size=224)
    release_grid.load_state_dict(state, strict=True)  # tables kept at 56/28/14/7, resized at run time
    release_grid.eval()
    assert as_coded.pos_embed1.shape == (1, 96, 96, 96) and release_grid.pos_embed1.shape == (1, 56, 56, 96)
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        assert torch.equal(as_coded(x), release_grid(x))


def test_wrong_architecture_names_the_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(create_model("tiny_test", depths=(1, 1, 1, 1), attention_heads=(1, 2, 4, 7)).state_dict(), path)
    with pytest.raises(UserError) as info:
        load_weights(create_model("tiny_test"), path)
    message = str(info.value)
    assert (
        "19 missing (blocks3.1.layer_scale_1," in message and "do not fit this model" in message and "\n" not in message
    )
    torch.save(create_model("tiny_test", embed_dims=(32, 64, 96, 160), num_heads=(2, 4, 6, 10)).state_dict(), path)
    with pytest.raises(UserError, match=r"shape mismatches \(pos_embed4 \(1, 1, 1, 160\) vs \(1, 1, 1, 128\)"):
        load_weights(create_model("tiny_test"), path)


def test_new_head_for_fine_tuning():
    source = create_model("tiny_test", num_classes=1000).state_dict()
    target = create_model("tiny_test", num_classes=10)
    with pytest.raises(UserError, match=r"head.weight \(1000, 128\) vs \(10, 128\)"):
        load_weights(target, source)
    head_before = target.head.weight.clone()
    load_weights(target, source, new_head=True)
    assert torch.equal(target.head.weight, head_before)
    assert torch.equal(target.blocks1[0].mlp.fc1.weight, source["blocks1.0.mlp.fc1.weight"])


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        read_weights(tmp_path / "missing.pth")
    path = tmp_path / "cut.pth"
    torch.save(create_model("tiny_test").state_dict(), path)
    path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(UserError, match="corrupt or truncated"):
        read_weights(path)
    torch.save({"epoch": 3, "note": "no weights"}, path)
    with pytest.raises(UserError, match="no state_dict of tensors"):
        read_weights(path)
