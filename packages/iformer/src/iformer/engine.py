"""Training and evaluation: the official recipe (timm 0.5.4 ``train.py`` as the authors ran it).

AdamW with decoupled weight decay on all but 1-D parameters and biases, a per-epoch cosine
schedule with linear warm-up and a cooldown at the minimum rate, mixup/cutmix with label
smoothing (soft-target cross-entropy), optional gradient clipping, stochastic depth in the model.

:func:`fit` runs a whole configuration and owns its files (``config.json``, ``metrics.jsonl``, one
checkpoint per epoch, ``model.pt``, ``results.json``) and ``--resume``; :func:`evaluate_file` scores saved
weights. The console scripts and the reproduction both call them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from iformer.config import TrainConfig
from iformer.data import Loaders, digits_loaders, find_split, folder_loaders, image_folder
from iformer.models import MODEL_CONFIGS, InceptionTransformer, create_model
from iformer.transforms import MixupCutmix, eval_transform
from iformer.weights import extract_state_dict, load_weights
from shared import checkpoint, distributed
from shared.data import make_loader, set_epoch
from shared.device import AmpScaler, autocast, seed_everything
from shared.distributed import all_reduce_sum, unwrap_model
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, Progress, format_record, get_logger

#: Classes of the embedded digits (the default data).
DIGITS_CLASSES = 10
DIGITS_DESCRIPTION = "embedded digits (scikit-learn), ImageFolder, 1442 train / 355 test"


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, *, decay_pos_embed: bool = True, eps: float = 1e-8
) -> torch.optim.AdamW:
    """AdamW with timm's decay rule: no decay for 1-D parameters and biases.

    The release's ``no_weight_decay`` names ``pos_embed``, which matches none of its parameters
    (``pos_embed1..4``), so the official run decays the positional tables: ``decay_pos_embed=True``
    reproduces that; ``False`` exempts them as intended.
    """
    skip = set() if decay_pos_embed else unwrap_model(model).no_weight_decay()
    decay, no_decay = [], []
    for name, param in unwrap_model(model).named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, eps=eps)


def learning_rate(epoch: int, *, lr: float, min_lr: float, warmup_lr: float, warmup_epochs: int, epochs: int) -> float:
    """timm's CosineLRScheduler (per epoch, no warm-up prefix): linear warm-up, cosine to ``min_lr``
    over ``epochs``, then ``min_lr`` during the cooldown epochs that follow."""
    if epoch < warmup_epochs:
        return warmup_lr + epoch * (lr - warmup_lr) / warmup_epochs
    if epoch >= epochs:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs))


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (mixup/cutmix with smoothing): mean of -sum(t * log p)."""
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def train_one_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    scaler: AmpScaler,
    device: torch.device,
    *,
    mixup: MixupCutmix | None = None,
    label_smoothing: float = 0.0,
    clip_grad: float | None = None,
    amp: bool = False,
    prepare=None,
    desc: str = "train",
) -> float:
    """One pass over ``batches``; returns the mean training loss over all processes.

    ``prepare`` (optional) maps a batch on the device to model inputs (e.g. normalisation or
    augmentation of in-memory tensors).
    """
    model.train()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    progress = Progress(batches, desc=desc)
    for images, labels in progress:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if prepare is not None:
            images = prepare(images)
        with autocast(device, amp):
            if mixup is not None:
                images, targets = mixup(images, labels)
                loss = soft_target_cross_entropy(model(images), targets)
            else:
                loss = F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler(loss, optimizer, clip_grad=clip_grad, parameters=model.parameters())
        total += torch.stack([loss.detach().double() * len(labels), torch.tensor(len(labels), device=device)])
        progress.update(loss=loss.item())
    total = all_reduce_sum(total)
    return float(total[0] / total[1].clamp(min=1))


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device, *, amp: bool = False, prepare=None) -> dict:
    """Top-1 / top-5 accuracy (%) and mean loss, summed over all processes."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # correct@1, correct@5, loss, count
    for images, labels in Progress(batches, desc="eval"):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if prepare is not None:
            images = prepare(images)
        with autocast(device, amp):
            logits = model(images).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top.eq(labels[:, None])
        sums += torch.stack(
            [
                hits[:, 0].sum().double(),
                hits.any(dim=1).sum().double(),
                F.cross_entropy(logits, labels, reduction="sum").double(),
                torch.tensor(len(labels), dtype=torch.float64, device=device),
            ]
        )
    sums = all_reduce_sum(sums)
    count = float(sums[3].clamp(min=1))
    return {"top1": 100 * float(sums[0]) / count, "top5": 100 * float(sums[1]) / count, "loss": float(sums[2]) / count}


def build_model(name: str, num_classes: int, img_size: int, drop_path: float = 0.0, **kwargs) -> InceptionTransformer:
    """``create_model`` with the input size checked: an unsupported size is a UserError naming it."""
    model = create_model(name, num_classes=num_classes, img_size=img_size, drop_path_rate=drop_path, **kwargs)
    try:
        model.check_input_size(img_size, img_size)
    except ValueError as exc:
        raise UserError(f"--img-size {img_size}: {exc}") from None
    return model


def make_loaders(config: TrainConfig, device: torch.device) -> Loaders:
    """The loaders of ``config``: its ImageFolder ``data`` through the paper's transforms, or the embedded digits."""
    if config.data is None:
        return digits_loaders(config.img_size, config.batch_size, config.seed, device)
    return folder_loaders(
        config.data,
        config.img_size,
        config.batch_size,
        auto_augment=config.auto_augment,
        re_prob=config.reprob,
        crop_pct=config.crop_pct,
        seed=config.seed,
        workers=config.workers,
        device=device,
    )


def fit(
    config: TrainConfig,
    out: Path,
    device: torch.device,
    *,
    resume: bool = False,
    loaders: Loaders | None = None,
    info: dict | None = None,
    quiet: bool = False,
) -> dict:
    """Train ``config`` into ``out`` and return the results (also written to ``results.json``).

    ``resume`` continues from the latest checkpoint in ``out`` with the result of an uninterrupted run.
    ``loaders`` (default: :func:`make_loaders`) lets several runs share data read once; ``info`` is
    recorded in ``config.json`` beside the configuration (e.g. the preset's name).
    """
    # Each rank draws its own augmentations and drop-path masks (as timm seeds seed + rank); DDP
    # broadcasts rank 0's initial weights, so the model starts identical everywhere.
    seed_everything(config.seed + distributed.get_rank())
    log = get_logger()
    loaders = loaders or make_loaders(config, device)
    model = build_model(config.model, loaders.num_classes, config.img_size, config.drop_path, **config.model_kwargs)
    if config.weights is not None and not resume:
        load_weights(model, config.weights, new_head=True)
    params = sum(p.numel() for p in model.parameters())
    model = distributed.wrap_model(model, device)
    optimizer = build_optimizer(model, config.lr, config.weight_decay, decay_pos_embed=config.decay_pos_embed)
    scaler = AmpScaler(device, config.amp)
    mixup = None
    if config.mixup > 0 or config.cutmix > 0:
        mixup = MixupCutmix(loaders.num_classes, config.mixup, config.cutmix, label_smoothing=config.smoothing)
    meta = {"arch": config.model, "num_classes": loaders.num_classes, "img_size": config.img_size}
    meta |= {"model_kwargs": config.model_kwargs} if config.model_kwargs else {}
    start_epoch, best = 0, 0.0
    if resume:
        latest = checkpoint.resume_checkpoint(out)
        state = checkpoint.restore_training_state(checkpoint.load_checkpoint(latest), model, optimizer, scaler=scaler)
        start_epoch, best = state["epoch"], state["extra"]["best_top1"]
        log.info(f"resumed from {latest} at epoch {start_epoch}")
    elif distributed.is_main_process():
        record = {**dataclasses.asdict(config), **(info or {}), "parameters": params}
        checkpoint.save_json(out / "config.json", record | {"num_classes": loaders.num_classes})
    metrics = MetricsWriter(out / "metrics.jsonl")
    total_epochs = config.total_epochs
    schedule = {k: getattr(config, k) for k in ("lr", "min_lr", "warmup_lr", "warmup_epochs", "epochs")}
    if not quiet:
        log.info(
            f"iformer: {config.model} ({params:,} parameters), {loaders.num_classes} classes, "
            f"{total_epochs} epochs -> {out}"
        )
    started = time.monotonic()
    result = {}
    for epoch in range(start_epoch, total_epochs):
        set_epoch(loaders.train, epoch)
        lr = learning_rate(epoch, **schedule)
        set_learning_rate(optimizer, lr)
        loss = train_one_epoch(
            model,
            loaders.train,
            optimizer,
            scaler,
            device,
            mixup=mixup,
            label_smoothing=config.smoothing,
            clip_grad=config.clip_grad,
            amp=config.amp,
            prepare=loaders.prepare,
            desc=f"epoch {epoch + 1}/{total_epochs}",
        )
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": loss}
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == total_epochs:
            result = evaluate(model, loaders.eval, device, amp=config.amp, prepare=loaders.prepare)
            best = max(best, result["top1"])
            record.update({f"test_{k}": v for k, v in result.items()})
        metrics.write(record)
        if not quiet:
            log.info(format_record(record))
        state = checkpoint.training_state(model, optimizer, None, scaler, epoch=epoch + 1, best_top1=best, **meta)
        checkpoint.save_training_checkpoint(out, epoch + 1, state, keep=config.keep_checkpoints)
    if not result:  # resumed after the last epoch's checkpoint: score the weights it holds
        result = evaluate(model, loaders.eval, device, amp=config.amp, prepare=loaders.prepare)
    # The official layout under "state_dict" (what timm's loaders unwrap), with what eval needs to rebuild it.
    checkpoint.save_checkpoint(out / "model.pt", {"state_dict": unwrap_model(model).state_dict(), **meta})
    results = {
        "model": config.model,
        "num_classes": loaders.num_classes,
        "img_size": config.img_size,
        "parameters": params,
        "epochs": total_epochs,
        "test_top1": result["top1"],
        "test_top5": result["top5"],
        "best_test_top1": best,
        "train_seconds": round(time.monotonic() - started, 1),
        "data": str(config.data) if config.data else DIGITS_DESCRIPTION,
    }
    if distributed.is_main_process():
        checkpoint.save_json(out / "results.json", results)
    return results


def evaluate_file(
    weights: str | os.PathLike,
    device: torch.device,
    *,
    model: str | None = None,
    data: Path | None = None,
    img_size: int | None = None,
    crop_pct: float = 0.9,
    batch_size: int = 64,
    ema: bool = False,
    workers: int = 0,
    amp: bool = False,
    seed: int = 0,
) -> dict:
    """Top-1/top-5 of saved weights (official ``.pth``, ``model.pt`` or a training checkpoint) on an
    ImageFolder's eval split, or on the embedded digits' test split when ``data`` is None."""
    raw = checkpoint.load_checkpoint(require_path(weights, "--weights", kind="file"))
    meta = {**raw, **raw["extra"]} if isinstance(raw.get("extra"), dict) else raw
    state = extract_state_dict(raw, prefer_ema=ema)
    name = model or meta.get("arch") or "iformer_small"
    if "head.weight" not in state:
        raise UserError(f"{weights} has no classifier (head.weight): it cannot be evaluated")
    num_classes = state["head.weight"].shape[0]
    img_size = img_size or meta.get("img_size") or MODEL_CONFIGS[name]["img_size"]
    network = build_model(name, num_classes, img_size, **(meta.get("model_kwargs") or {}))
    network = load_weights(network, state).to(device)
    if data is None:
        if num_classes != DIGITS_CLASSES:
            raise UserError(f"the weights have {num_classes} classes; the embedded digits need 10: pass --data ROOT")
        _, loader, _, prepare = digits_loaders(img_size, batch_size, seed, device)
    else:
        root = require_path(data, "--data folder", kind="dir")
        dataset = image_folder(find_split(root, "eval"), eval_transform(img_size, crop_pct=crop_pct))
        if len(dataset.classes) != num_classes:
            raise UserError(f"{root} has {len(dataset.classes)} classes but the weights have {num_classes}")
        loader = make_loader(dataset, batch_size, workers=workers, device=device)
        prepare = None
    metrics = evaluate(network, loader, device, amp=amp, prepare=prepare)
    return {"model": name, "weights": str(weights), "img_size": img_size, **metrics}
