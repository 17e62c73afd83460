"""Training and evaluation: the official recipe (timm 0.5.4 ``train.py`` as the authors ran it).

AdamW with decoupled weight decay on all but 1-D parameters and biases, a per-epoch cosine
schedule with linear warm-up and a cooldown at the minimum rate, mixup/cutmix with label
smoothing (soft-target cross-entropy), optional gradient clipping, stochastic depth in the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from iformer.transforms import MixupCutmix
from shared.device import autocast
from shared.distributed import all_reduce_sum, unwrap_model
from shared.logging import Progress


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
    device: torch.device,
    *,
    mixup: MixupCutmix | None = None,
    label_smoothing: float = 0.0,
    clip_grad: float | None = None,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
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
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            if clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
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
