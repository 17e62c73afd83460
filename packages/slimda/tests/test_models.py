"""Slimmable layers, the bank's backbones and heads, torchvision weights by name, BN recalibration."""

import pytest
import torch
import torchvision
from torch import nn

from shared.errors import UserError
from slimda.bn import recalibrate_bn
from slimda.models import (
    Arch,
    ModelBank,
    SlimmableBatchNorm2d,
    SlimmableConv2d,
    SlimmableLinear,
    channels,
    load_torchvision_weights,
)


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5, 0.25, 0.11])
def test_slimmable_conv_is_a_plain_conv_on_the_weight_prefix(width):
    torch.manual_seed(0)
    conv = SlimmableConv2d(16, 32, 3, stride=2, padding=1, bias=True)
    conv.set_width(width)
    cin = channels(16, width)
    x = torch.randn(2, cin, 9, 9)
    out = conv(x)
    assert out.shape[1] == channels(32, width)
    plain = nn.Conv2d(cin, out.shape[1], 3, stride=2, padding=1, bias=True)
    with torch.no_grad():
        plain.weight.copy_(conv.weight[: out.shape[1], :cin])
        plain.bias.copy_(conv.bias[: out.shape[1]])
    torch.testing.assert_close(out, plain(x))


def test_full_width_layers_equal_plain_layers():
    torch.manual_seed(0)
    conv, linear, bn = SlimmableConv2d(4, 8, 3, padding=1), SlimmableLinear(8, 5), SlimmableBatchNorm2d(8)
    plain_conv, plain_linear, plain_bn = nn.Conv2d(4, 8, 3, padding=1), nn.Linear(8, 5), nn.BatchNorm2d(8)
    plain_conv.load_state_dict(conv.state_dict())
    plain_linear.load_state_dict(linear.state_dict())
    x = torch.randn(3, 4, 6, 6)
    torch.testing.assert_close(conv(x), plain_conv(x))
    h = conv(x)
    torch.testing.assert_close(bn(h), plain_bn(h))  # train mode: batch statistics and the same running update
    torch.testing.assert_close(bn.running_mean, plain_bn.running_mean)
    torch.testing.assert_close(bn.running_var, plain_bn.running_var)
    torch.testing.assert_close(linear(h.mean((2, 3))), plain_linear(h.mean((2, 3))))


def test_slimmable_bn_updates_only_the_prefix_of_its_running_stats():
    bn = SlimmableBatchNorm2d(8)
    bn(torch.randn(4, 3, 5, 5) * 3 + 2)
    assert not torch.allclose(bn.running_mean[:3], torch.zeros(3))
    torch.testing.assert_close(bn.running_mean[3:], torch.zeros(5))
    torch.testing.assert_close(bn.running_var[3:], torch.ones(5))


def test_slimmable_linear_reads_the_input_prefix():
    torch.manual_seed(0)
    linear = SlimmableLinear(10, 4)
    x = torch.randn(2, 6)
    torch.testing.assert_close(linear(x), x @ linear.weight[:, :6].T + linear.bias)


@pytest.mark.parametrize(
    ("backbone", "groups", "size", "feature"),
    [("resnet50", 5, 64, 2048), ("resnet18", 4, 64, 512), ("slimcnn", 4, 16, 256)],
)
def test_every_architecture_gives_the_feature_width_of_its_last_group(backbone, groups, size, feature):
    torch.manual_seed(0)
    bank = ModelBank(backbone, 7).eval()
    assert bank.num_groups == groups
    for text in ("1", "0.25", "-".join(["0.5", "1", "0.25", "0.75", "0.125"][:groups])):
        arch = bank.parse_arch(text)
        bank.set_arch(arch)
        x = torch.randn(2, 3, size, size)
        features = bank.backbone(x)
        assert features.shape == (2, channels(feature, arch.widths[-1])) == (2, bank.feature_dim(arch))
        out = bank(x)
        assert out.cs.shape == out.ct.shape == out.ca.shape == out.folded.shape == (2, 7)
        torch.testing.assert_close(out.folded.sum(1), torch.ones(2))


def test_sub_width_resnet_equals_a_plain_resnet_built_on_the_prefixes():
    """The whole sub-network, not only one layer: a resnet18 at width 0.5 is torchvision's resnet18 at half
    channels with the prefix weights (every stage at 0.5, so torchvision's fixed widths can be halved)."""
    torch.manual_seed(0)
    bank = ModelBank("resnet18", 3).eval()
    bank.set_arch(bank.parse_arch("0.5"))
    smaller = _halved_resnet18()
    smaller.fc = nn.Identity()
    full = bank.backbone.state_dict()
    state = {
        key: full[key][tuple(slice(0, n) for n in value.shape)] if value.dim() else full[key]
        for key, value in smaller.state_dict().items()
    }
    smaller.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(bank.backbone(x), smaller.eval()(x), atol=1e-5, rtol=1e-4)


def _halved_resnet18() -> nn.Module:
    """torchvision's resnet18 with every channel count halved (stem 32, stages 32/64/128/256)."""
    model = torchvision.models.resnet18()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d):
                setattr(
                    module,
                    name,
                    nn.Conv2d(
                        3 if child.in_channels == 3 else child.in_channels // 2,
                        child.out_channels // 2,
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        bias=False,
                    ),
                )
            elif isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.BatchNorm2d(child.num_features // 2))
    return model


def test_torchvision_weights_load_by_name_and_full_width_matches_torchvision(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    bank = ModelBank("resnet50", 31)
    load_torchvision_weights(bank, path)
    reference.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(bank.eval().backbone(x), reference.eval()(x))


def test_wrong_weights_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), bad)
    with pytest.raises(UserError, match="does not match torchvision resnet50 key names"):
        load_torchvision_weights(ModelBank("resnet50", 5), bad)
    with pytest.raises(UserError, match="slimcnn"):
        load_torchvision_weights(ModelBank("slimcnn", 5), bad)


def test_arch_parsing_and_validation():
    assert str(Arch.parse("0.5", 5)) == "0.5"
    assert Arch.parse("0.5-1-0.25-0.25-0.125", 5).widths == (0.5, 1.0, 0.25, 0.25, 0.125)
    for text, match in (("0.5-0.5", "has 2 widths"), ("abc", "not a width"), ("1.5", r"\(0, 1\]")):
        with pytest.raises(UserError, match=match):
            Arch.parse(text, 5)


def test_bn_recalibration_changes_running_stats_only_and_is_deterministic():
    torch.manual_seed(0)
    bank = ModelBank("slimcnn", 4)
    weights = {k: v.clone() for k, v in bank.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(8, 3, 16, 16) * 2 + 1 for _ in range(3)]
    arch = bank.parse_arch("0.5-0.75-0.25-1")
    recalibrate_bn(bank, arch, batches)
    assert not bank.training
    first = bank.state_dict()["backbone.features.0.1.running_mean"].clone()
    assert not torch.allclose(first[:16], torch.zeros(16))
    for key, value in weights.items():
        torch.testing.assert_close(bank.state_dict()[key], value)
    x = torch.randn(4, 3, 16, 16)
    out = bank(x).ct
    bank.train()
    bank(torch.randn(8, 3, 16, 16) * 5)  # disturb the statistics
    recalibrate_bn(bank, arch, batches)
    torch.testing.assert_close(bank(x).ct, out)
    # cumulative average over the batches = the mean of the per-batch means of the first layer's output
    torch.testing.assert_close(bank.state_dict()["backbone.features.0.1.running_mean"], first)


def test_train_pipeline_crops_and_flips_each_image_from_the_generator():
    from slimda.augment import Pipeline

    images = torch.randint(0, 256, (6, 3, 10, 10), dtype=torch.uint8)
    pipeline = Pipeline(crop=7, flip=True)
    out = pipeline.train(images, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 7, 7)
    full = pipeline.normalise(images)
    for i in range(6):
        windows = [full[i, :, t : t + 7, c : c + 7] for t in range(4) for c in range(4)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(out[i], w) for w in windows)
    torch.testing.assert_close(out, pipeline.train(images, torch.Generator().manual_seed(0)))
    centre = pipeline.test(images)
    torch.testing.assert_close(centre, full[:, :, 1:8, 1:8])
