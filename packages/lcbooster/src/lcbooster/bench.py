"""What ``lcbooster-bench`` times: one co-divide epoch on CIFAR-10-sized input, and the batched augmentations.

:func:`benchmark`: one DivideMix (or LC-Booster) co-divide epoch with PreAct ResNet-18 = per-sample loss of all
N images by both nets (eval), two GMM fits, then two training passes of |L| / 64 iterations (each: 3 no-grad
forwards and a forward/backward of 4 x 64 mixed images in DivideMix's views). It times the GMM on N losses, the
evaluation throughput and the training throughput on random CIFAR-sized images (what is measured does not
depend on the pixel values), and extrapolates one epoch; ``full=True`` runs a whole epoch instead.

:func:`benchmark_transforms`: the batched RandAugmentMC and AutoAugment of :mod:`lcbooster.transforms` against
the per-sample reference they reproduce (:func:`rand_augment_mc_per_sample`, :func:`auto_augment_cifar_per_sample`:
one torchvision.transforms.v2 call per image and op, as the official PIL pipelines apply them).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.transforms.v2 import functional as TF

from lcbooster.config import build_config
from lcbooster.data import CIFAR10_MEAN, CIFAR10_STD
from lcbooster.engine import CoTrainer, TrainData
from lcbooster.models import build_model
from lcbooster.selection import gmm_clean_probability
from lcbooster.transforms import (
    _RAND_AUGMENT_SIGNED,
    AUTOAUGMENT_CIFAR10,
    RAND_AUGMENT_POOL,
    Views,
    auto_augment_cifar,
    autoaugment_magnitude,
    fixmatch_magnitude,
    rand_augment_mc,
)
from shared.device import seed_everything
from shared.errors import UserError
from shared.report import markdown_table


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _synchronizer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def benchmark(
    device: torch.device,
    *,
    method: str = "dividemix",
    samples: int = 50_000,
    labeled_fraction: float = 0.5,
    eval_samples: int = 2048,
    iterations: int = 8,
    amp: bool = False,
    full: bool = False,
) -> dict:
    """Seconds of the GMM fit, evaluation and training throughput, and the (extrapolated or measured) epoch."""
    if samples < 128 or not 0 < labeled_fraction <= 1 or iterations < 1 or eval_samples < 1:
        raise UserError("--samples >= 128, --labeled-fraction in (0, 1], --iterations and --eval-samples >= 1")
    seed_everything(0)
    config = build_config("cifar10", "sym50", method, "paper", amp=amp)
    images = torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (samples,))
    strong = "rand" if method == "lcbooster" else "none"
    views = Views.for_cifar(CIFAR10_MEAN, CIFAR10_STD, strong=strong, pad_mode=config.pad_mode)
    data = TrainData(images, labels, images[:256], labels[:256], 10, views)
    nets = [build_model("preact_resnet18", 10, 3) for _ in range(2)]
    trainer = CoTrainer(config, nets, data, device, eval_batch_size=256, progress=False)
    epoch = config.warmup_epochs + 1
    sync = _synchronizer(device)
    result: dict = {"device": str(device), "threads": torch.get_num_threads(), "method": method}
    result["gmm_seconds"] = min(_timed(lambda: gmm_clean_probability(torch.rand(samples))) for _ in range(3))
    if full:
        sync()
        seconds = _timed(lambda: (trainer.run_epoch(epoch), sync()))
        return result | {"epoch_seconds": seconds, "samples_per_second": samples / seconds}
    subset = torch.arange(min(eval_samples, samples))
    trainer._logits(trainer.cores[0], trainer.data.images, subset[:256])  # warm-up
    sync()
    eval_s = _timed(lambda: (trainer._logits(trainer.cores[0], trainer.data.images, subset), sync()))
    batch = config.batch_size
    labeled = torch.zeros(samples, dtype=torch.bool)
    labeled[torch.randperm(samples)[: batch * iterations]] = True
    probability = torch.rand(samples)
    warm = torch.zeros_like(labeled)
    warm[: batch * 2] = True
    trainer.train_epoch(0, epoch, warm, probability)
    sync()
    train_s = _timed(lambda: (trainer.train_epoch(0, epoch, labeled, probability), sync()))
    eval_rate = len(subset) / eval_s
    train_rate = batch * iterations / train_s
    epoch_s = 2 * samples / eval_rate + 2 * result["gmm_seconds"] + 2 * labeled_fraction * samples / train_rate
    return result | {
        "eval_images_per_second": eval_rate,
        "train_labeled_samples_per_second": train_rate,
        "estimated_epoch_seconds": epoch_s,
        "estimated_samples_per_second": samples / epoch_s,
    }


def torchvision_op(image: torch.Tensor, name: str, value: float = 0.0, fill: float = 0) -> torch.Tensor:
    """Op ``name`` of RandAugmentMC / AutoAugment on one uint8 image (C, H, W) by its torchvision.transforms.v2
    function, at its final ``value``: the per-image reference of :func:`lcbooster.transforms.apply_op`."""
    if name in ("ShearX", "ShearY"):  # PIL's shear (1, v, 0, 0, 1, 0): shear by atan(v) about the top-left corner
        degrees = math.degrees(math.atan(value))
        shear = [degrees, 0.0] if name == "ShearX" else [0.0, degrees]
        return TF.affine(image, 0.0, [0, 0], 1.0, shear, center=[0, 0], fill=fill)
    if name in ("TranslateX", "TranslateY"):
        offset = [value, 0] if name == "TranslateX" else [0, value]
        return TF.affine(image, 0.0, offset, 1.0, [0.0, 0.0], fill=fill)
    ops = {
        "Identity": lambda: image,
        "AutoContrast": lambda: TF.autocontrast(image),
        "Brightness": lambda: TF.adjust_brightness(image, value),
        "Color": lambda: TF.adjust_saturation(image, value),
        "Contrast": lambda: TF.adjust_contrast(image, value),
        "Equalize": lambda: TF.equalize(image),
        "Invert": lambda: TF.invert(image),
        "Posterize": lambda: TF.posterize(image, int(value)),
        "Rotate": lambda: TF.rotate(image, value, fill=fill),
        "Sharpness": lambda: TF.adjust_sharpness(image, value),
        "Solarize": lambda: TF.solarize(image, value),
    }
    if name not in ops:
        raise ValueError(f"unknown op {name!r}")
    return ops[name]()


def _draw(high: int, generator: torch.Generator | None, low: int = 0) -> int:
    return int(torch.randint(low, high, (1,), generator=generator))


def _chance(p: float, generator: torch.Generator | None) -> bool:
    return float(torch.rand(1, generator=generator)) < p


def rand_augment_mc_per_sample(
    x: torch.Tensor, n: int = 2, m: int = 10, *, fill: float = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """RandAugmentMC(n, m) without Cutout, one image and op at a time (the per-sample form of
    :func:`lcbooster.transforms.rand_augment_mc`, with the same draws per sample and step)."""
    height, width = x.shape[-2:]
    out = []
    for image in x:
        for _ in range(n):
            name, level = RAND_AUGMENT_POOL[_draw(len(RAND_AUGMENT_POOL), generator)], _draw(m, generator, 1)
            if _chance(0.5, generator):
                value = fixmatch_magnitude(name, level, height, width)
                sign = -1 if name in _RAND_AUGMENT_SIGNED and _chance(0.5, generator) else 1
                image = torchvision_op(image, name, sign * value, fill)
        out.append(image)
    return torch.stack(out)


def auto_augment_cifar_per_sample(
    x: torch.Tensor, *, fill: float = 128, generator: torch.Generator | None = None
) -> torch.Tensor:
    """AutoAugment with the CIFAR-10 policy, one image and op at a time (the per-sample form of
    :func:`lcbooster.transforms.auto_augment_cifar`)."""
    height, width = x.shape[-2:]
    out = []
    for image in x:
        for name, probability, level in AUTOAUGMENT_CIFAR10[_draw(len(AUTOAUGMENT_CIFAR10), generator)]:
            if _chance(probability, generator):
                sign = -1 if _chance(0.5, generator) else 1
                image = torchvision_op(image, name, autoaugment_magnitude(name, level, sign, height, width), fill)
        out.append(image)
    return torch.stack(out)


#: augmentation -> (batched, per-sample reference), both without Cutout.
AUGMENTATIONS = {
    "RandAugmentMC(2, 10)": (
        lambda x: rand_augment_mc(x, 2, 10, cutout_size=0),
        lambda x: rand_augment_mc_per_sample(x, 2, 10),
    ),
    "AutoAugment CIFAR-10": (auto_augment_cifar, auto_augment_cifar_per_sample),
}


def benchmark_transforms(
    device: torch.device, *, batch_size: int = 128, image_size: int = 32, channels: int = 3, rounds: int = 5
) -> dict:
    """Milliseconds per batch of each augmentation, batched and per sample, interleaved round by round (median)."""
    if min(batch_size, rounds) < 1 or image_size < 8 or channels not in (1, 3):
        raise UserError("--batch-size and --rounds must be >= 1, --image-size >= 8, --channels 1 or 3")
    images = torch.randint(0, 256, (batch_size, channels, image_size, image_size), dtype=torch.uint8, device=device)
    sync = _synchronizer(device)
    rows = []
    for name, (batched, per_sample) in AUGMENTATIONS.items():
        batched(images), per_sample(images), sync()  # warm-up: kernels, tables, allocator
        times: dict[str, list[float]] = {"batched": [], "per_sample": []}
        for _ in range(rounds):
            times["batched"].append(_timed(lambda fn=batched: (fn(images), sync())))
            times["per_sample"].append(_timed(lambda fn=per_sample: (fn(images), sync())))
        batched_s, per_sample_s = (statistics.median(times[key]) for key in ("batched", "per_sample"))
        rows.append(
            {
                "augmentation": name,
                "batched_ms": 1000 * batched_s,
                "per_sample_ms": 1000 * per_sample_s,
                "batched_images_per_second": batch_size / batched_s,
                "per_sample_images_per_second": batch_size / per_sample_s,
                "speedup": per_sample_s / batched_s,
            }
        )
    shape = f"{batch_size}x{channels}x{image_size}x{image_size}"
    return {"device": str(device), "threads": torch.get_num_threads(), "batch": shape, "rounds": rounds, "rows": rows}


def format_result(result: dict) -> str:
    """A markdown table of :func:`benchmark` or :func:`benchmark_transforms`."""
    if "rows" not in result:
        rows = [[key, f"{value:.3f}" if isinstance(value, float) else value] for key, value in result.items()]
        return markdown_table(["quantity", "value"], rows)
    table = markdown_table(
        ["augmentation", "batched (ms / batch)", "per sample (ms / batch)", "speed-up"],
        [
            [r["augmentation"], f"{r['batched_ms']:.1f}", f"{r['per_sample_ms']:.1f}", f"{r['speedup']:.1f}x"]
            for r in result["rows"]
        ],
    )
    return (
        f"{table}\n\nbatch {result['batch']} uint8 on {result['device']} ({result['threads']} threads), "
        f"median of {result['rounds']} interleaved rounds"
    )
