"""Backbones: exact parameter/key counts of the official release, official key names, output shapes, WRN quirk."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from knowfactor.backbones import (
    BACKBONES,
    MobileNetV2,
    ResNet,
    SimpleConv64,
    SimpleGaussianConv64,
    TinyCNN,
    WideResNetCIFAR,
    build_backbone,
    feature_channels,
    make_divisible,
)
from shared.errors import UserError


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "params", "keys"),
    [
        ("wrn28_2", {}, 1_466_768, 168),
        ("resnet18_cifar", {}, 11_168_832, 120),
        ("resnet18", {}, 11_176_512, 120),
        ("resnet50", {}, 23_508_032, 318),
        ("mobilenetv2", {}, 2_223_872, 312),
        ("mobilenetv2_cifar", {}, 2_223_872, 312),
        ("mobilenetv2_x0.5_cifar", {}, 687_680, 312),
        ("mobilenetv2_x0.5", {}, 687_680, 312),
        ("simpleconv64", {}, 1_756_938, 14),
        ("simpleconv64", {"in_channels": 3}, 1_757_962, 14),
        ("simplegaussianconv64", {}, 1_759_508, 14),
        ("tiny_cnn", {}, 287_456, 36),
    ],
)
def test_parameter_and_key_counts(name, kwargs, params, keys):
    with torch.device("meta"):
        model = build_backbone(name, **kwargs)
    assert n_params(model) == params
    assert len(model.state_dict()) == keys


def test_tsn_counts_from_mobilenetv2_half_body():
    # TSN = MBv2 ×0.5 (CIFAR stem) + bias-free Linear(1280 → d): the official totals.
    with torch.device("meta"):
        body = n_params(build_backbone("mobilenetv2_x0.5_cifar"))
    assert {d: body + 1280 * d for d in (128, 512, 1280)} == {128: 851_520, 512: 1_343_040, 1280: 2_326_080}


def test_official_key_names():
    with torch.device("meta"):
        mbv2 = MobileNetV2().state_dict()
        wrn = WideResNetCIFAR().state_dict()
        r18c = build_backbone("resnet18_cifar").state_dict()
    assert {"conv1.conv.weight", "conv1.bn.running_mean", "conv2.conv.weight", "conv2.bn.running_var"} <= set(mbv2)
    # expand_ratio 1 → two ConvModules (dw, linear); otherwise three (expand, dw, linear)
    assert "layer1.0.conv.1.conv.weight" in mbv2 and "layer1.0.conv.2.conv.weight" not in mbv2
    assert "layer2.0.conv.2.bn.weight" in mbv2 and "layer7.0.conv.2.conv.weight" in mbv2
    assert mbv2["layer1.0.conv.0.conv.weight"].shape == (32, 1, 3, 3)  # depthwise
    assert mbv2["conv2.conv.weight"].shape == (1280, 320, 1, 1)
    assert wrn["conv1.weight"].shape == (16, 3, 3, 3) and "bn1.weight" in wrn and wrn["bn1.weight"].shape == (128,)
    assert wrn["layer2.0.downsample.0.weight"].shape == (64, 32, 1, 1) and "layer2.0.downsample.1.running_var" in wrn
    assert wrn["layer1.0.bn1.weight"].shape == (16,)  # pre-activation BN on the block input
    assert "layer1.1.downsample.0.weight" not in wrn and not any(k.startswith("conv1.bias") for k in wrn)
    assert r18c["conv1.weight"].shape == (64, 3, 3, 3) and "layer4.0.downsample.1.weight" in r18c


@pytest.mark.parametrize(("depth", "factory"), [(18, torchvision.models.resnet18), (50, torchvision.models.resnet50)])
def test_imagenet_resnet_matches_torchvision_keys(depth, factory):
    with torch.device("meta"):
        ours = {k: v.shape for k, v in ResNet(depth).state_dict().items()}
        ref = {k: v.shape for k, v in factory().state_dict().items() if not k.startswith("fc.")}
    assert list(ours.items()) == list(ref.items())


@pytest.mark.parametrize(
    ("name", "out_indices", "shapes"),
    [
        ("wrn28_2", (0, 1, 2), [(32, 32, 32), (64, 16, 16), (128, 8, 8)]),
        ("resnet18_cifar", (1, 2, 3), [(128, 16, 16), (256, 8, 8), (512, 4, 4)]),
        ("mobilenetv2_cifar", (5, 6, 7), [(160, 4, 4), (320, 4, 4), (1280, 4, 4)]),
        ("mobilenetv2_x0.5_cifar", (7,), [(1280, 4, 4)]),
        ("tiny_cnn", (0, 1, 2), [(32, 32, 32), (64, 16, 16), (128, 8, 8)]),
        ("resnet18", (1, 2, 3), [(128, 4, 4), (256, 2, 2), (512, 1, 1)]),
    ],
)
def test_output_shapes_at_32x32(name, out_indices, shapes):
    model = build_backbone(name, out_indices=out_indices).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 32, 32))
    assert isinstance(outs, tuple)
    assert [tuple(o.shape[1:]) for o in outs] == shapes
    assert feature_channels(model) == [s[0] for s in shapes]


def test_wrn_official_intermediate_activation_quirk():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    ref = WideResNetCIFAR(out_indices=(2,)).eval()
    state = ref.state_dict()

    def run(out_indices, quirk):
        model = WideResNetCIFAR(out_indices=out_indices, official_intermediate_activation=quirk).eval()
        model.load_state_dict(state)
        with torch.no_grad():
            return model(x)

    (trained,) = run((2,), False)
    # Only the last stage requested: both paths compute the trained function.
    assert torch.equal(run((2,), True)[0], trained)
    default, quirk = run((0, 1, 2), False), run((0, 1, 2), True)
    # Default: requesting more levels leaves the final output unchanged; intermediates are raw stage outputs.
    assert torch.equal(default[2], trained)
    assert (default[0] < 0).any()
    # Quirk: intermediates are LeakyReLU-ed and feed the next stage, so the final output changes too.
    assert torch.allclose(quirk[0], F.leaky_relu(default[0], 0.1))
    assert not torch.allclose(quirk[2], trained, atol=1e-4)
    with pytest.raises(ValueError, match="must be 2"):
        WideResNetCIFAR(out_indices=(0, 1), official_intermediate_activation=True)


@pytest.mark.parametrize("quirk", [False, True])
def test_wrn_backward_with_inplace_activations(quirk):
    model = WideResNetCIFAR(out_indices=(0, 1, 2), official_intermediate_activation=quirk)
    sum(o.square().mean() for o in model(torch.randn(2, 3, 32, 32))).backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_simple_conv64_and_gaussian():
    x = torch.randn(3, 1, 64, 64)
    (z,) = SimpleConv64()(x)
    assert z.shape == (3, 10)
    model = SimpleGaussianConv64(latent=6)
    z, mu, logvar = model.train()(x)
    assert z.shape == mu.shape == logvar.shape == (3, 6) and not torch.equal(z, mu)
    z, mu, _ = model.eval()(x)
    assert torch.equal(z, mu)
    assert feature_channels(model) == [6, 6, 6]


def test_tiny_cnn_custom_widths_and_indices():
    model = TinyCNN(in_channels=1, widths=(8, 16), out_indices=(1,))
    (out,) = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 16, 16, 16)
    assert feature_channels(model, (0, 1)) == [8, 16]


def test_make_divisible_follows_mmcls():
    assert [make_divisible(v) for v in (16, 12, 4, 48, 10, 1280 * 0.5)] == [16, 16, 8, 48, 16, 640]


def test_registry_and_bad_arguments():
    assert {"wrn28_2", "resnet18_cifar", "resnet18", "resnet50", "mobilenetv2", "simpleconv64", "tiny_cnn"} <= set(
        BACKBONES
    )
    with pytest.raises(UserError, match="unknown backbone"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="out_indices"):
        MobileNetV2(out_indices=(8,))
    with pytest.raises(ValueError, match="out_indices"):
        TinyCNN(out_indices=(2, 1))
    with pytest.raises(ValueError, match="depth"):
        WideResNetCIFAR(depth=27)
