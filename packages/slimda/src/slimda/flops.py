"""Multiply-accumulates and parameters of any architecture of a model bank, and budgets.

A bank's layer table is traced once, on a ``meta``-device copy of it (the bank itself is never touched): which
group sets every conv's and batch norm's input channels, and, per input size, each conv's output pixels. Counting
an architecture is then a sum over that table: microseconds, so thousands of candidates are cheap.
:func:`macs_table` is what ``slimda-flops`` prints.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from weakref import WeakKeyDictionary

import torch
from torch import nn

from shared.errors import UserError
from slimda.config import default_grid
from slimda.models import Arch, ModelBank, SlimmableBatchNorm2d, SlimmableConv2d, channels

_PROBE_WIDTH = 0.5  # round(c·0.5) < c for every c ≥ 2: a group at this width shrinks every input it sets


@dataclass(frozen=True)
class _Layer:
    """One slimmable conv or batch norm: full channels and the group (None: never slimmed) that slims them."""

    name: str
    in_full: int
    in_group: int | None
    out_full: int
    out_group: int | None
    kernel: int  # kh·kw of a conv (slimmable convs are never grouped), 0 for a batch norm
    bias: bool  # a conv's bias, or a batch norm's affine weight and bias

    def channels(self, arch: Arch) -> tuple[int, int]:
        """(input, output) channels used at ``arch``."""
        return _slim(self.in_full, self.in_group, arch), _slim(self.out_full, self.out_group, arch)

    def params(self, arch: Arch) -> int:
        cin, cout = self.channels(arch)
        if not self.kernel:
            return 2 * cout if self.bias else 0  # batch-norm affine weight and bias
        return cout * cin * self.kernel + (cout if self.bias else 0)


def _slim(full: int, group: int | None, arch: Arch) -> int:
    return full if group is None else channels(full, arch.widths[group])


class _Profile:
    """A bank's layer table and, per input size, the output pixels of every conv."""

    def __init__(self, bank: ModelBank) -> None:
        tensors = itertools.chain(bank.parameters(), bank.buffers())
        memo = {id(t): torch.empty_like(t, device="meta") for t in tensors}
        self.backbone = copy.deepcopy(bank.backbone, memo)
        self.num_groups = bank.num_groups
        self.in_chans = next(bank.slimmable_convs()).in_channels  # the input is never slimmed
        full = self._trace(bank.full_arch(), 32)
        probes = [self._trace(Arch(_probe(g, self.num_groups)), 32) for g in range(self.num_groups)]
        self.layers = []
        for name, (cin, cout) in full.items():
            module = self.backbone.get_submodule(name)
            in_group = next((g for g, probe in enumerate(probes) if probe[name][0] != cin), None)
            if isinstance(module, SlimmableConv2d):
                kernel, out_group = module.kernel_size[0] * module.kernel_size[1], module.group
                bias = module.bias is not None
            else:
                kernel, out_group, bias = 0, in_group, module.affine
            self.layers.append(_Layer(name, cin, in_group, cout, out_group, kernel, bias))
        self._pixels: dict[int, list[int]] = {}

    def pixels(self, input_size: int) -> list[int]:
        """Output H·W of every layer at ``input_size``×``input_size`` input (the same at every width)."""
        if input_size not in self._pixels:
            shapes = self._trace(Arch.uniform(1.0, self.num_groups), input_size, spatial=True)
            self._pixels[input_size] = [shapes[layer.name] for layer in self.layers]
        return self._pixels[input_size]

    def _trace(self, arch: Arch, input_size: int, spatial: bool = False) -> dict[str, tuple[int, int] | int]:
        """Per slimmable layer: (input channels, output channels), or output H·W when ``spatial``."""
        names = {
            m: n for n, m in self.backbone.named_modules() if isinstance(m, SlimmableConv2d | SlimmableBatchNorm2d)
        }
        seen = {}

        def record(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            shape = output.shape
            seen[names[module]] = shape[2] * shape[3] if spatial else (inputs[0].shape[1], shape[1])

        for module in self.backbone.modules():
            if isinstance(module, SlimmableConv2d):
                module.set_width(arch.widths[module.group])
        hooks = [m.register_forward_hook(record) for m in names]
        try:
            with torch.no_grad():
                self.backbone.eval()(torch.empty(1, self.in_chans, input_size, input_size, device="meta"))
        finally:
            for hook in hooks:
                hook.remove()
        return seen


def _probe(group: int, num_groups: int) -> tuple[float, ...]:
    return tuple(_PROBE_WIDTH if g == group else 1.0 for g in range(num_groups))


_PROFILES: WeakKeyDictionary[ModelBank, _Profile] = WeakKeyDictionary()


def _profile(bank: ModelBank) -> _Profile:
    if bank not in _PROFILES:
        _PROFILES[bank] = _Profile(bank)
    return _PROFILES[bank]


def _check(bank: ModelBank, arch: Arch) -> None:
    if len(arch.widths) != bank.num_groups:
        raise UserError(
            f"architecture {arch} has {len(arch.widths)} widths; {bank.backbone_name} has {bank.num_groups} groups"
        )


def layer_channels(bank: ModelBank, arch: Arch) -> dict[str, tuple[int, int]]:
    """(input, output) channels at ``arch`` of every slimmable conv and batch norm, by backbone module name."""
    _check(bank, arch)
    return {layer.name: layer.channels(arch) for layer in _profile(bank).layers}


def count_macs(bank: ModelBank, arch: Arch, input_size: int, include_heads: bool = False) -> int:
    """Multiply-accumulates of the convs of ``arch`` for one ``input_size``² image.

    ``include_heads`` adds the deployed K-way linear head (K·feature_dim); batch norms, ReLUs, pooling and
    residual additions are not counted (the usual convention of MACs tables for ResNets).
    """
    _check(bank, arch)
    profile = _profile(bank)
    total = 0
    for layer, pixels in zip(profile.layers, profile.pixels(input_size), strict=True):
        if layer.kernel:
            cin, cout = layer.channels(arch)
            total += cout * cin * layer.kernel * pixels
    return total + (bank.num_classes * bank.feature_dim(arch) if include_heads else 0)


def count_params(bank: ModelBank, arch: Arch, include_heads: bool = True) -> int:
    """Parameters of the sub-network ``arch`` (the weight slices it uses), with the deployed K-way head."""
    _check(bank, arch)
    total = sum(layer.params(arch) for layer in _profile(bank).layers)
    return total + ((bank.feature_dim(arch) + 1) * bank.num_classes if include_heads else 0)


def _limit(bank: ModelBank, budget: float, input_size: int) -> float:
    """``budget`` × the full architecture's MACs, with a 1e-9 relative tolerance."""
    return budget * count_macs(bank, bank.full_arch(), input_size) * (1 + 1e-9)


def budget_filter(bank: ModelBank, archs: list[Arch], budget: float, input_size: int) -> list[Arch]:
    """The architectures whose conv MACs are at most ``budget`` × those of the full architecture."""
    limit = _limit(bank, budget, input_size)
    return [arch for arch in archs if count_macs(bank, arch, input_size) <= limit]


def parse_budget(text: str | float) -> float:
    """A budget as a fraction of the full model's MACs in (0, 1]: ``"1/16"``, ``"0.25"`` or ``"1"``."""
    try:
        value = float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise UserError(f"budget {text!r} is not a fraction like 1/16 or 0.25") from None
    if not 0.0 < value <= 1.0:
        raise UserError(f"budget {text!r} must be a fraction of the full model's MACs in (0, 1]")
    return value


def parse_budgets(text: str) -> list[float]:
    """Comma-separated budgets (``"1,1/2,1/4"``) as fractions of the full model's MACs."""
    budgets = [parse_budget(b) for b in text.split(",") if b.strip()]
    if not budgets:
        raise UserError(f"budgets {text!r}: give at least one fraction like 1/4")
    return budgets


def format_budget(budget: float) -> str:
    """A budget as it is written on the command line: ``"1/64"`` for a unit fraction, else ``"0.3"``."""
    inverse = 1 / budget
    return f"1/{round(inverse)}" if budget < 1 and abs(inverse - round(inverse)) < 1e-6 else f"{budget:.4g}"


def largest_uniform_width(bank: ModelBank, budget: float, input_size: int, tol: float = 1e-4) -> float:
    """The largest uniform width multiplier (continuous, channels rounded as the bank does) within ``budget``.

    Found by bisection to within ``tol`` below the true bound.
    """
    limit = _limit(bank, budget, input_size)
    if count_macs(bank, bank.full_arch(), input_size) <= limit:
        return 1.0
    low, high = 0.0, 1.0
    while high - low > tol:
        mid = (low + high) / 2
        if count_macs(bank, Arch.uniform(mid, bank.num_groups), input_size) <= limit:
            low = mid
        else:
            high = mid
    if low == 0.0:
        raise UserError(f"no uniform width fits a budget of {budget:g} of the full model's MACs")
    return low


def macs_table(
    model: str = "resnet50",
    archs: Sequence[str] | None = None,
    input_size: int | None = None,
    num_classes: int = 31,
    include_heads: bool = False,
) -> dict:
    """MACs, fraction of the full model's (``full_macs``), parameters and pooled-feature width of architectures of
    a ``model`` bank.

    ``archs`` default to every uniform width of the bank's grid, largest first; ``input_size`` to 224 (16 for
    SlimCNN). No weights are needed: the bank is built on the meta device.
    """
    with torch.device("meta"):
        bank = ModelBank(model, num_classes)
    size = input_size or (16 if model == "slimcnn" else 224)
    if archs:
        chosen = [bank.parse_arch(a) for a in archs]
    else:
        chosen = [Arch.uniform(w, bank.num_groups) for w in sorted(default_grid(model), reverse=True)]
    full = count_macs(bank, bank.full_arch(), size, include_heads=include_heads)
    records = []
    for arch in chosen:
        macs = count_macs(bank, arch, size, include_heads=include_heads)
        records.append(
            {
                "arch": str(arch),
                "macs": macs,
                "fraction": macs / full,
                "params": count_params(bank, arch),
                "feature_dim": bank.feature_dim(arch),
            }
        )
    return {"model": model, "input_size": size, "full_macs": full, "archs": records}
