"""Parameters, FLOPs and throughput of an iFormer beside torchvision's ResNet-50 (Table 1 of the paper).

Throughput is measured in one process with the two models interleaved round by round (ours, then
ResNet-50, in every round), so a noisy machine slows both alike; each round gives images/s for each
model and their ratio, reported as median [min-max] over the rounds.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import resnet50

from iformer.models import create_model
from shared.checkpoint import atomic_write, save_json
from shared.device import AmpScaler, autocast, resolve_device
from shared.logging import get_logger
from shared.report import markdown_table

__all__ = [
    "MODES",
    "YARDSTICK",
    "BenchResult",
    "TimingRow",
    "benchmark",
    "count_flops",
    "count_params",
    "format_bench",
    "result_to_dict",
    "save_bench",
    "spread",
]

MODES = ("inference", "train")
YARDSTICK = "resnet50"


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not), as the paper counts them."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, img_size: int, in_chans: int = 3, backend: str = "auto") -> tuple[int, str]:
    """Multiply-accumulates (MACs) of one ``in_chans`` x ``img_size`` x ``img_size`` image in eval mode.

    Returns (MACs, backend used). ``"fvcore"``: FlopCountAnalysis, one per multiply-add, also counting
    norms and upsampling: the convention of the paper's "FLOPs". ``"torch"``: torch's FlopCounterMode
    total / 2 (matrix products and convolutions only). ``"auto"``: fvcore when installed, else torch.
    Both count scaled-dot-product attention as its two matrix products, which neither does by itself
    on CPU. iformer_small at 224: torch 4,825,828,736 (as the official model); fvcore 4,847,950,080,
    526,848 (0.01%) under the official 4,848,476,928 because the nearest upsampling after pooled
    attention is a broadcast view here, which fvcore does not see.
    """
    if backend == "auto":
        backend = "fvcore" if _fvcore_available() else "torch"
    if backend not in ("fvcore", "torch"):
        raise ValueError(f"unknown FLOP backend {backend!r}: use auto, fvcore or torch")
    param = next(model.parameters())
    image = torch.zeros(1, in_chans, img_size, img_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            macs = _fvcore_macs(model, image) if backend == "fvcore" else _torch_macs(model, image)
    finally:
        model.train(was_training)
    return macs, backend


def _attention_macs(query_shape: Sequence[int], value_shape: Sequence[int]) -> int:
    """q kᵀ and (softmax) v: queries * keys * (head_dim + value_dim) MACs per head (no causal mask)."""
    *lead, queries, dim = query_shape
    keys, value_dim = value_shape[-2:]
    return math.prod(lead) * queries * keys * (dim + value_dim)


def _torch_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * _attention_macs(query_shape, value_shape)


def _torch_macs(model: nn.Module, image: torch.Tensor) -> int:
    # torch counts the CUDA attention kernels but not the CPU one
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _torch_sdpa_flops}
    )
    with counter:
        model(image)
    return counter.get_total_flops() // 2


def _fvcore_available() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import fvcore.nn  # noqa: F401
    except ImportError:
        return False
    return True


def _fvcore_sdpa(inputs, outputs) -> int:
    from fvcore.nn.jit_handles import get_shape

    return _attention_macs(get_shape(inputs[0]), get_shape(inputs[2]))


def _fvcore_macs(model: nn.Module, image: torch.Tensor) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings and unsupported elementwise ops (gelu, add, pooling)
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, image).set_op_handle("aten::scaled_dot_product_attention", _fvcore_sdpa)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return int(analysis.total())


@dataclass
class TimingRow:
    """Images/s of each round of one mode: ours, the yardstick (empty without one) and ours / yardstick."""

    mode: str
    ours: list[float]
    yardstick: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)


@dataclass
class BenchResult:
    """What :func:`benchmark` measured; ``yardstick*`` are None when run without ResNet-50."""

    model: str
    batch_size: int
    img_size: int
    params: int
    macs: int
    flops_backend: str
    device: str
    threads: int
    amp: bool
    rounds: int
    iters: int
    rows: list[TimingRow]
    yardstick: str | None = None
    yardstick_params: int | None = None
    yardstick_macs: int | None = None


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def benchmark(
    model_name: str = "iformer_small",
    *,
    batch_size: int = 8,
    img_size: int = 224,
    rounds: int = 5,
    iters: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    modes: Sequence[str] = MODES,
    yardstick: bool = True,
    device: str = "cpu",
    amp: bool = False,
) -> BenchResult:
    """Params, MACs and images/s (inference and/or a training step) of ``model_name``, beside ResNet-50.

    For each mode, after ``warmup`` steps of each model, every round times ``iters`` steps of ours and
    then ``iters`` steps of ResNet-50 (random init, 1000 classes). Inference runs in eval mode under
    ``torch.inference_mode``; a training step is forward, cross-entropy on random labels, backward and
    an AdamW step. ``threads`` sets ``torch.set_num_threads`` for the run.
    """
    if unknown := set(modes) - set(MODES):
        raise ValueError(f"unknown benchmark modes {sorted(unknown)}: use {', '.join(MODES)}")
    if rounds < 1 or iters < 1 or warmup < 0:
        raise ValueError("rounds and iters must be at least 1, warmup at least 0")
    dev = resolve_device(device)
    log = get_logger()
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        models = [(model_name, create_model(model_name, img_size=img_size, num_classes=1000))]
        if yardstick:
            models.append((YARDSTICK, resnet50()))
        counts = [(count_params(model), *count_flops(model, img_size)) for _, model in models]
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(batch_size, 3, img_size, img_size, generator=generator).to(dev)
        labels = torch.randint(0, 1000, (batch_size,), generator=generator).to(dev)
        for _, model in models:
            model.to(dev)
        rows = []
        for mode in modes:
            steps = [_make_step(model, mode, images, labels, dev, amp) for _, model in models]
            for step in steps:
                for _ in range(warmup):
                    step()
            per_round: list[list[float]] = [[] for _ in steps]
            for index in range(rounds):
                for step, speeds in zip(steps, per_round, strict=True):
                    speeds.append(_images_per_second(step, iters, batch_size, dev))
                speeds = [f"{name} {s[-1]:.2f} img/s" for (name, _), s in zip(models, per_round, strict=True)]
                log.info(f"{mode} round {index + 1}/{rounds}: {', '.join(speeds)}")
            row = TimingRow(mode, per_round[0])
            if yardstick:
                row.yardstick = per_round[1]
                row.ratio = [a / b for a, b in zip(row.ours, row.yardstick, strict=True)]
            rows.append(row)
        return BenchResult(
            model=model_name,
            batch_size=batch_size,
            img_size=img_size,
            params=counts[0][0],
            macs=counts[0][1],
            flops_backend=counts[0][2],
            device=str(dev),
            threads=torch.get_num_threads(),
            amp=amp,
            rounds=rounds,
            iters=iters,
            rows=rows,
            yardstick=YARDSTICK if yardstick else None,
            yardstick_params=counts[1][0] if yardstick else None,
            yardstick_macs=counts[1][1] if yardstick else None,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _make_step(
    model: nn.Module, mode: str, images: torch.Tensor, labels: torch.Tensor, device: torch.device, amp: bool
) -> Callable[[], None]:
    """One inference or training step of ``model`` (the optimizer is made here, outside the timing)."""
    if mode == "inference":
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), autocast(device, amp):
                model(images)

        return infer
    model.train()
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = AmpScaler(device, amp)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = F.cross_entropy(model(images), labels)
        scaler(loss, optimizer)

    return train


def _images_per_second(step: Callable[[], None], iters: int, batch_size: int, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _synchronize(device)
    return batch_size * iters / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_bench(result: BenchResult) -> str:
    """A markdown table: params, GMACs and images/s per mode as median [min-max], and the ratio to ResNet-50."""

    def cell(values: Sequence[float], digits: int | None = None) -> str:
        s = spread(values)
        precision = digits if digits is not None else (1 if s["median"] >= 10 else 2)
        return f"{s['median']:.{precision}f} [{s['min']:.{precision}f}-{s['max']:.{precision}f}]"

    headers = ["model", "params", "GMACs", *(f"{row.mode} img/s" for row in result.rows)]
    table = [[result.model, f"{result.params:,}", f"{result.macs / 1e9:.3f}", *(cell(r.ours) for r in result.rows)]]
    if result.yardstick:
        table.append(
            [
                result.yardstick,
                f"{result.yardstick_params:,}",
                f"{result.yardstick_macs / 1e9:.3f}",
                *(cell(r.yardstick) for r in result.rows),
            ]
        )
        table.append([f"ratio {result.model} / {result.yardstick}", "", "", *(cell(r.ratio, 2) for r in result.rows)])
    precision = "AMP" if result.amp else "fp32"
    title = (
        f"batch {result.batch_size}, {result.img_size}x{result.img_size}, {precision}, {result.device}, "
        f"{result.threads} threads; {result.rounds} interleaved rounds of {result.iters} steps, median [min-max]; "
        f"MACs by {result.flops_backend}"
    )
    return f"{title}\n\n{markdown_table(headers, table)}"


def result_to_dict(result: BenchResult) -> dict:
    """The result as JSON-ready data, with median/min/max beside the per-round values."""
    data = asdict(result)
    for row in data["rows"]:
        row["summary"] = {key: spread(row[key]) for key in ("ours", "yardstick", "ratio") if row[key]}
    return data


def save_bench(out: Path, result: BenchResult) -> None:
    """``results.json`` (every round) and ``results.md`` (the table) of a benchmark in ``out``."""
    save_json(Path(out) / "results.json", result_to_dict(result))
    atomic_write(Path(out) / "results.md", lambda f: f.write(format_bench(result) + "\n"), binary=False)
