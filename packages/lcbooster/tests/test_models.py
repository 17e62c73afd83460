import pytest
import torch
import torch.nn.functional as F
import torchvision

from lcbooster.models import (
    MODELS,
    PreActResNet,
    SmallCNN,
    build_model,
    from_official_preresnet,
    preact_resnet18,
    preact_resnet34,
    resnet50,
)
from shared.errors import UserError


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("num_classes", "expected"), [(10, 11_171_274), (100, 11_217_444)])
def test_preact_resnet18_parameter_count(num_classes, expected):
    assert n_params(preact_resnet18(num_classes)) == expected


def test_preact_resnet34_stages():
    model = preact_resnet34(100)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert model.linear.weight.shape == (100, 512)


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("size", [32, 28])
def test_preact_resnet18_output_shape(in_chans, size):
    model = preact_resnet18(7, in_chans=in_chans)
    assert model(torch.randn(2, in_chans, size, size)).shape == (2, 7)


def test_preact_resnet_state_dict_keys_match_dividemix():
    state = preact_resnet18(10).state_dict()
    assert state["conv1.weight"].shape == (64, 3, 3, 3)
    assert state["layer2.0.shortcut.0.weight"].shape == (128, 64, 1, 1)
    assert state["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert state["linear.weight"].shape == (10, 512)
    assert not [k for k in state if k.startswith(("layer1.0.shortcut", "layer2.1.shortcut", "fc."))]
    block = {k.removeprefix("layer3.0.") for k in state if k.startswith("layer3.0.")}
    bn = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    assert block == {f"{b}.{s}" for b in ("bn1", "bn2") for s in bn} | {
        "conv1.weight",
        "conv2.weight",
        "shortcut.0.weight",
    }


def test_forward_is_the_official_one():
    """Stem BN+ReLU, pre-activated identity shortcut, no final BN+ReLU, global average pool, linear."""
    torch.manual_seed(0)
    model = preact_resnet18(10).eval()
    x = torch.randn(2, 3, 32, 32)
    block = model.layer1[0]
    h = F.relu(model.bn1(model.conv1(x)))
    pre = F.relu(block.bn1(h))
    expected_block = block.conv2(F.relu(block.bn2(block.conv1(pre)))) + pre
    torch.testing.assert_close(block(h), expected_block)
    feats = model.layer4(model.layer3(model.layer2(model.layer1(h))))
    torch.testing.assert_close(model(x), model.linear(F.avg_pool2d(feats, 4).flatten(1)))


def test_identity_shortcut_switch():
    torch.manual_seed(0)
    preact, textbook = preact_resnet18(10).eval(), preact_resnet18(10, identity_shortcut="input").eval()
    textbook.load_state_dict(preact.state_dict())
    h = torch.randn(2, 64, 8, 8)
    assert not torch.allclose(preact.layer1[0](h), textbook.layer1[0](h))
    h2 = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(preact.layer2[0](h2), textbook.layer2[0](h2))  # conv shortcut: always pre-activated
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(preact(x), textbook(x))
    with pytest.raises(ValueError):
        PreActResNet((2, 2, 2, 2), identity_shortcut="x")


def test_official_lcbooster_checkpoint_keys_load():
    state = {
        ("module." + k).replace("module.linear.", "module.fc."): v for k, v in preact_resnet18(10).state_dict().items()
    }
    model = preact_resnet18(10)
    model.load_state_dict(from_official_preresnet(state))
    torch.testing.assert_close(model.linear.weight, state["module.fc.weight"])


@pytest.mark.parametrize(("in_chans", "size"), [(1, 8), (1, 28), (3, 28), (3, 32)])
def test_small_cnn_shapes_and_gradients(in_chans, size):
    model = SmallCNN(in_chans, num_classes=10)
    out = model(torch.randn(4, in_chans, size, size))
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.fc.weight.shape == (10, 128)


@pytest.fixture(scope="module")
def imagenet_state(tmp_path_factory):
    """A fresh torchvision ResNet-50 (1000 classes) saved as a state_dict file."""
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(state, path)
    return path, state


def test_resnet50_loads_backbone_and_keeps_new_head(imagenet_state, tmp_path):
    path, state = imagenet_state
    model = resnet50(14, path)
    assert model.fc.weight.shape == (14, 2048)
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(model.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    torch.testing.assert_close(model.bn1.running_var, state["bn1.running_var"])
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    torch.testing.assert_close(resnet50(14, wrapped).layer1[0].conv2.weight, state["layer1.0.conv2.weight"])
    assert resnet50(3)(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def _one_line_user_error(call) -> str:
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_resnet50_bad_weights(imagenet_state, tmp_path):
    _, state = imagenet_state
    renamed = dict(state)
    renamed["extra.weight"] = renamed.pop("layer1.0.conv1.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    message = _one_line_user_error(lambda: resnet50(10, tmp_path / "renamed.pth"))
    assert "1 missing" in message and "layer1.0.conv1.weight" in message and "extra.weight" in message

    reshaped = dict(state, **{"conv1.weight": torch.zeros(64, 1, 7, 7)})
    torch.save(reshaped, tmp_path / "reshaped.pth")
    assert "conv1.weight" in _one_line_user_error(lambda: resnet50(10, tmp_path / "reshaped.pth"))

    torch.save({"note": "not weights"}, tmp_path / "plain.pth")
    _one_line_user_error(lambda: resnet50(10, tmp_path / "plain.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    _one_line_user_error(lambda: resnet50(10, tmp_path / "garbage.pth"))
    _one_line_user_error(lambda: resnet50(10, tmp_path / "missing.pth"))


def test_build_model():
    assert set(MODELS) == {"preact_resnet18", "preact_resnet34", "small_cnn", "resnet50"}
    assert isinstance(build_model("small_cnn", 10, in_chans=1), SmallCNN)
    assert build_model("preact_resnet18", 100).linear.out_features == 100
    assert build_model("preact_resnet18", 10, in_chans=1).conv1.in_channels == 1
    message = _one_line_user_error(lambda: build_model("resnet18", 10))
    assert "preact_resnet18" in message and "small_cnn" in message
    _one_line_user_error(lambda: build_model("small_cnn", 10, in_chans=1, weights="w.pth"))
    _one_line_user_error(lambda: build_model("resnet50", 10, in_chans=1))
