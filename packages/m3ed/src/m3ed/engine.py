"""Training and evaluation over dialogues (the official MDI recipe, spec section 4.3).

Cross-entropy over real utterances (padding labels are -1 and ignored), AdamW, a per-step cosine
schedule without warm-up, gradient clipping at norm 5, and model selection on the validation
weighted F1: the reported test score is the one of the best-validation epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from m3ed.data import Batch
from m3ed.metrics import classification_report
from shared.device import autocast, grad_scaler
from shared.distributed import all_reduce_sum
from shared.logging import Progress


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW as the official code sets it up (transformers' AdamW: eps 1e-6, no weight decay)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, eps=1e-6, weight_decay=weight_decay)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay from the base rate to 0 over ``total_steps``, no warm-up (per optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    )


def class_weights(labels: Iterable[int], num_classes: int = 7) -> torch.Tensor:
    """Inverse-frequency weights from the training labels (DialogueRNN/GCN baselines; off for MDI)."""
    counts = np.bincount(np.asarray(list(labels), dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def utterance_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the real utterances of a (n, B) batch; padding (-1) is ignored."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), weight=weight, ignore_index=-1)


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler,
    device: torch.device,
    *,
    clip: float | None = 5.0,
    weight: torch.Tensor | None = None,
    amp: bool = False,
    desc: str = "train",
) -> float:
    """One epoch; returns the mean loss per real utterance over all processes."""
    model.train()
    scaler = grad_scaler(device, amp)
    total = torch.zeros(2, dtype=torch.float64)
    progress = Progress(batches, desc=desc)
    for batch in progress:
        batch = batch.to(device)
        with autocast(device, amp):
            logits = model(batch.features, batch.speakers, batch.pad_mask)
        loss = utterance_loss(logits.float(), batch.labels, weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        count = int((batch.labels >= 0).sum())
        total += torch.tensor([loss.item() * count, count], dtype=torch.float64)
        progress.update(loss=loss.item())
    total = all_reduce_sum(total)
    return float(total[0] / total[1].clamp(min=1))


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Batch], device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions of every real utterance, in batch order."""
    model.eval()
    truths, predictions = [], []
    for batch in batches:
        batch = batch.to(device)
        logits = model(batch.features, batch.speakers, batch.pad_mask)
        real = batch.labels >= 0
        truths.append(batch.labels[real].cpu().numpy())
        predictions.append(logits.argmax(-1)[real].cpu().numpy())
    return np.concatenate(truths), np.concatenate(predictions)


def evaluate(model: nn.Module, batches: Iterable[Batch], device: torch.device, num_classes: int = 7) -> dict:
    """Weighted F1 (the paper's metric), macro F1, accuracy, UAR, per-class F1 and confusion."""
    truth, prediction = predict(model, batches, device)
    return classification_report(truth, prediction, num_classes)
