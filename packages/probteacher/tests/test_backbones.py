import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from probteacher.backbones import BACKBONE_STRIDES, FEATURE_NAMES, box_head, build_backbone
from shared.errors import UserError

VGG_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def test_tiny_is_stride_8_without_batch_norm():
    net = build_backbone("tiny")
    out = net(torch.rand(2, 3, 64, 48))
    assert out.shape == (2, 128, 8, 6) and net.out_channels == 128
    assert BACKBONE_STRIDES["tiny"] == (8,) and FEATURE_NAMES["tiny"] == ("0",)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64, 128, 128]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(p.requires_grad for p in net.parameters())


def test_vgg16_conv5_layout_stride_and_frozen_blocks():
    net = build_backbone("vgg16")
    assert len(net.features) == 30 and net.out_channels == 512
    assert [i for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d)] == VGG_CONVS
    assert isinstance(net.features[29], nn.ReLU)
    assert net(torch.rand(1, 3, 64, 32)).shape == (1, 512, 4, 2)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {f"features.{i}.{k}" for i in (0, 2, 5, 7) for k in ("weight", "bias")}
    assert all(p.requires_grad for p in build_backbone("vgg16", freeze_blocks=0).parameters())


@pytest.mark.parametrize("prefix", ["features.", ""])
def test_vgg16_loads_torchvision_or_caffe_keys(tmp_path, prefix):
    src = build_backbone("vgg16")
    state = {prefix + k: v for k, v in src.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # a full VGG checkpoint also has the classifier: ignored
    path = tmp_path / "vgg16_caffe.pth"
    torch.save(state, path)
    net = build_backbone("vgg16", weights=path)
    for i in VGG_CONVS:
        assert torch.equal(net.features[i].weight, src.features[i].weight)
    assert not net.features[0].weight.requires_grad


def test_weights_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_backbone("vgg16", weights=tmp_path / "missing.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        build_backbone("tiny", weights=corrupt)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UserError, match=r"lack key 'features\.0\.weight'"):
        build_backbone("tiny", weights=wrong)
    state = {"features." + k: v for k, v in build_backbone("tiny").features.state_dict().items()}
    state["features.0.weight"] = torch.zeros(5, 3, 3, 3)
    shape = tmp_path / "shape.pth"
    torch.save(state, shape)
    with pytest.raises(UserError, match="shape mismatch") as err:
        build_backbone("tiny", weights=shape)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="unknown backbone"):
        build_backbone("vgg19")


def test_resnet50_fpn_levels_frozen_bn_and_trainable_layers(tmp_path):
    net = build_backbone("resnet50-fpn")
    out = net(torch.rand(1, 3, 64, 64))
    assert list(out) == list(FEATURE_NAMES["resnet50-fpn"]) and net.out_channels == 256
    assert [v.shape[-1] for v in out.values()] == [64 // s for s in BACKBONE_STRIDES["resnet50-fpn"]]
    assert isinstance(net.body.bn1, FrozenBatchNorm2d)
    trainable = {n.split(".")[1] for n, p in net.named_parameters() if p.requires_grad and n.startswith("body.")}
    assert trainable == {"layer2", "layer3", "layer4"}
    state = dict(net.body.state_dict())
    state["fc.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    loaded = build_backbone("resnet50-fpn", weights=path)
    assert torch.equal(loaded.body.layer4[0].conv1.weight, net.body.layer4[0].conv1.weight)


def test_box_head_is_two_mlp():
    head = box_head("vgg16", 512)
    assert head.fc6.in_features == 512 * 49 and head.fc7.out_features == 1024
    assert box_head("tiny", 128)(torch.rand(3, 128, 7, 7)).shape == (3, 256)
