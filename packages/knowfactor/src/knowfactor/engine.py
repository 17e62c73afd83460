"""Training and evaluation loops shared by the teacher, KD and KF runs, and the linear probes.

Every trainable model's ``forward(x, labels)`` returns a dict of loss terms (summed into the objective)
and ``forward(x)`` the per-task logits; labels are (B, N) class indices, one column a task.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from shared.device import autocast, grad_scaler
from shared.distributed import all_reduce_sum
from shared.logging import Progress


def build_optimizer(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4) -> torch.optim.SGD:
    """SGD over every trainable parameter (the student and the projectors; the teacher is frozen)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def scheduled_lr(epoch: int, lr: float, epochs: int, milestones: Sequence[int], cosine: bool = False) -> float:
    """mmcv's policies: cosine annealing to 0 over ``epochs``, or ×0.1 at every milestone reached."""
    if cosine:
        return 0.5 * lr * (1 + math.cos(math.pi * epoch / epochs))
    return lr * 0.1 ** sum(epoch >= m for m in milestones)


def train_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    clip: float | None = None,
    amp: bool = False,
    desc: str = "train",
) -> dict[str, float]:
    """One epoch; returns the mean of every loss term (and ``loss``, their sum) over all processes."""
    model.train()
    scaler = grad_scaler(device, amp)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    progress = Progress(batches, desc=desc)
    for images, labels in progress:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, amp):
            terms = model(images, labels)
        terms = {name: value.float() for name, value in terms.items()}
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
        scaler.step(optimizer)
        scaler.update()
        for name, value in {**terms, "loss": loss}.items():
            sums[name] = sums.get(name, 0.0) + value.detach().double().cpu() * len(images)
        count += len(images)
        progress.update(loss=loss.item())
    names = sorted(sums)
    totals = all_reduce_sum(torch.stack([sums[n] for n in names] + [torch.tensor(float(count), dtype=torch.float64)]))
    return {name: float(totals[i] / totals[-1].clamp(min=1)) for i, name in enumerate(names)}


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Per-task predictions and labels, each (N_samples, N_tasks)."""
    model.eval()
    predictions, truths = [], []
    for images, labels in batches:
        logits = model(images.to(device))
        predictions.append(torch.stack([s.argmax(1) for s in logits], dim=1).cpu().numpy())
        truths.append(labels.numpy())
    return np.concatenate(predictions), np.concatenate(truths)


def task_accuracy(model: nn.Module, batches: Iterable, device: torch.device) -> list[float]:
    """Accuracy (%) on every task."""
    predictions, truths = predict(model, batches, device)
    return [100.0 * float(a) for a in (predictions == truths).mean(axis=0)]


@torch.no_grad()
def embed(encode, batches: Iterable, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Features ``encode(x)`` and labels of every sample, as arrays."""
    features, truths = [], []
    for images, labels in batches:
        features.append(encode(images.to(device)).cpu().numpy())
        truths.append(labels.numpy())
    return np.concatenate(features), np.concatenate(truths)


def linear_probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    """Test accuracy (%) of a linear probe (closed-form ridge classifier) on standardised frozen features."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))
    probe.fit(*train)
    return 100.0 * float(probe.score(*test))
