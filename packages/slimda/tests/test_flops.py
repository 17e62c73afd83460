"""MACs and parameter counts: an analytic table, torchvision, direct counts, budgets, slimda-flops' table."""

import random

import pytest
import torch
import torchvision
from torch import nn

from shared.errors import UserError
from slimda.flops import (
    budget_filter,
    count_macs,
    count_params,
    format_budget,
    largest_uniform_width,
    macs_table,
    parse_budget,
    parse_budgets,
)
from slimda.models import Arch, ModelBank, SlimmableBatchNorm2d, SlimmableConv2d

GRID = (0.11, 0.125, 0.1875, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)


@pytest.fixture(scope="module")
def resnet50() -> ModelBank:
    return ModelBank("resnet50", 31)


def random_archs(bank: ModelBank, n: int, seed: int = 0) -> list[Arch]:
    rng = random.Random(seed)
    return [Arch(tuple(rng.choice(GRID) for _ in range(bank.num_groups))) for _ in range(n)]


# torchvision ResNet-50 v1.5, 224×224, conv layers only, computed analytically; (width, pooled feature, GMACs)
MACS_TABLE = [
    (1.0, 2048, 4.087),
    (0.875, 1792, 3.142),
    (0.75, 1536, 2.321),
    (0.625, 1280, 1.624),
    (0.5, 1024, 1.051),
    (0.375, 768, 0.602),
    (0.25, 512, 0.278),
    (0.1875, 384, 0.162),
    (0.125, 256, 0.077),
]


@pytest.mark.parametrize(("width", "feature", "gmacs"), MACS_TABLE)
def test_macs_table_of_uniform_widths(resnet50, width, feature, gmacs):
    arch = Arch.uniform(width, 5)
    assert round(count_macs(resnet50, arch, 224) / 1e9, 3) == gmacs
    assert resnet50.feature_dim(arch) == feature


@pytest.mark.parametrize(("k", "expected"), [(2, 0.702), (4, 0.492), (8, 0.345), (16, 0.240), (32, 0.164), (64, 0.113)])
def test_largest_uniform_width_ladder(resnet50, k, expected):
    width = largest_uniform_width(resnet50, 1 / k, 224)
    assert round(width, 3) == expected
    full = count_macs(resnet50, resnet50.full_arch(), 224)
    assert count_macs(resnet50, Arch.uniform(width, 5), 224) <= full / k
    assert count_macs(resnet50, Arch.uniform(width + 2e-4, 5), 224) > full / k  # the largest, to within tol


def test_largest_uniform_width_ends(resnet50):
    assert largest_uniform_width(resnet50, 1.0, 224) == 1.0
    with pytest.raises(UserError, match="no uniform width"):
        largest_uniform_width(resnet50, 1e-4, 224)  # the 1-channel network still costs ~1/1800


def torchvision_conv_macs(model: nn.Module, input_size: int) -> int:
    """Independent count: weight numel × output pixels of every nn.Conv2d in one forward."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += module.weight.numel() * output.shape[2] * output.shape[3]

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, input_size, input_size))
    return total


@pytest.mark.parametrize(("name", "gmacs"), [("resnet18", 1.814), ("resnet50", 4.087)])
def test_full_width_matches_torchvision(name, gmacs, resnet50):
    bank = resnet50 if name == "resnet50" else ModelBank(name, 31)
    reference = getattr(torchvision.models, name)(num_classes=1000)
    macs = count_macs(bank, bank.full_arch(), 224)
    assert macs == torchvision_conv_macs(reference, 224)
    assert round(macs / 1e9, 3) == gmacs
    backbone = sum(p.numel() for n, p in reference.named_parameters() if not n.startswith("fc."))
    assert count_params(bank, bank.full_arch(), include_heads=False) == backbone


def direct_count(bank: ModelBank, arch: Arch, input_size: int) -> tuple[int, int]:
    """(conv MACs, backbone parameters) of ``arch`` from a real forward: the weight slices actually used."""
    macs = params = 0

    def conv_hook(module, inputs, output):
        nonlocal macs, params
        used = module.weight[: output.shape[1], : inputs[0].shape[1]].numel()
        macs += used * output.shape[2] * output.shape[3]
        params += used

    def bn_hook(module, inputs, output):
        nonlocal params
        params += 2 * inputs[0].shape[1]

    hooks = [
        m.register_forward_hook(conv_hook if isinstance(m, SlimmableConv2d) else bn_hook)
        for m in bank.modules()
        if isinstance(m, SlimmableConv2d | SlimmableBatchNorm2d)
    ]
    previous = bank.arch
    with torch.no_grad():
        bank.set_arch(arch).eval()(torch.zeros(1, 3, input_size, input_size))
    bank.set_arch(previous)
    for hook in hooks:
        hook.remove()
    return macs, params


@pytest.mark.parametrize(("name", "input_size"), [("resnet18", 64), ("resnet50", 64), ("slimcnn", 16)])
def test_stagewise_counts_equal_a_direct_count(name, input_size, resnet50):
    bank = resnet50 if name == "resnet50" else ModelBank(name, 7)
    other = Arch.uniform(0.5, bank.num_groups)
    bank.set_arch(other)
    for arch in random_archs(bank, 6):
        macs, params = count_macs(bank, arch, input_size), count_params(bank, arch, include_heads=False)
        assert bank.arch == other  # the bank is untouched: same arch, weights still on the CPU
        assert all(p.device.type == "cpu" for p in bank.parameters())
        assert (macs, params) == direct_count(bank, arch, input_size)
        feature, k = bank.feature_dim(arch), bank.num_classes
        assert count_params(bank, arch) == params + k * (feature + 1)
        assert count_macs(bank, arch, input_size, include_heads=True) == macs + k * feature
    bank.set_arch(bank.full_arch())


def test_budget_filter(resnet50):
    uniform = [Arch.uniform(w, 5) for w in GRID]
    kept = budget_filter(resnet50, uniform, 0.25, 224)
    assert [a.widths[0] for a in kept] == [0.11, 0.125, 0.1875, 0.25, 0.375]  # 0.5 costs 1.051 G > 1.022 G
    archs = random_archs(resnet50, 50, seed=2)
    full = count_macs(resnet50, resnet50.full_arch(), 224)
    exact = count_macs(resnet50, archs[0], 224) / full  # an arch exactly at its budget is kept
    assert archs[0] in budget_filter(resnet50, archs, exact, 224)
    assert set(budget_filter(resnet50, archs, exact, 224)) == {
        a for a in archs if count_macs(resnet50, a, 224) <= count_macs(resnet50, archs[0], 224)
    }


@pytest.mark.parametrize(
    ("text", "value"), [("1/16", 0.0625), ("0.25", 0.25), ("1/64", 1 / 64), ("1", 1.0), (0.5, 0.5)]
)
def test_parse_budget(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize(
    ("budget", "text"), [(1.0, "1"), (1 / 64, "1/64"), (0.5, "1/2"), (0.3, "0.3"), (2 / 3, "0.6667")]
)
def test_format_budget_writes_what_parse_budget_reads(budget, text):
    assert format_budget(budget) == text
    assert parse_budget(text) == pytest.approx(budget, rel=1e-4)


@pytest.mark.parametrize("text", ["abc", "", "0", "-1/2", "3/2", "1/0", "2", "nan"])
def test_parse_budget_refuses_nonsense(text):
    with pytest.raises(UserError, match="budget"):
        parse_budget(text)


def test_wrong_number_of_widths_is_refused(resnet50):
    with pytest.raises(UserError, match="5 groups"):
        count_macs(resnet50, Arch.uniform(0.5, 4), 224)


def test_macs_table_counts_every_uniform_width_on_the_meta_device(resnet50):
    table = macs_table("resnet50")
    assert [r["arch"] for r in table["archs"]] == [f"{w:g}" for w in sorted(GRID, reverse=True)]
    assert table["input_size"] == 224 and table["full_macs"] == count_macs(resnet50, resnet50.full_arch(), 224)
    half = table["archs"][4]
    assert half["arch"] == "0.5" and half["macs"] == count_macs(resnet50, Arch.uniform(0.5, 5), 224)
    assert half["params"] == count_params(resnet50, Arch.uniform(0.5, 5)) and half["feature_dim"] == 1024
    chosen = macs_table("slimcnn", ["0.5-1-1-0.25"], num_classes=10, include_heads=True)
    assert chosen["input_size"] == 16 and len(chosen["archs"]) == 1 and chosen["archs"][0]["feature_dim"] == 64
    assert parse_budgets("1, 1/2,0.25") == [1.0, 0.5, 0.25]
    with pytest.raises(UserError, match="at least one"):
        parse_budgets(" , ")
