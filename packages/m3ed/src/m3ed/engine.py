"""Training and evaluation over dialogues: the official MDI recipe (``codes/mdi/run_htrm.py`` and
``trainer.py`` of github.com/JinmingZhao/MEmoConv).

Cross-entropy over real utterances (padding labels are -1 and ignored), AdamW, a per-step cosine
schedule without warm-up, gradient clipping at norm 5, and model selection on the validation
weighted F1: the reported test score is the one of the best-validation epoch, as in the paper. The
multi-label task (``TrainConfig.task == "multi"``; the paper annotates it, the official code has no model)
trains the same 7 logits with sigmoid BCE on multi-hot targets (:func:`multilabel_loss`), predicts the
emotions whose sigmoid exceeds 0.5 (:func:`multilabel_predictions`) and selects on the validation micro F1.

:func:`fit` runs a whole configuration and owns its files (``config.json``, ``metrics.jsonl``, one
checkpoint per epoch, ``model.pt``, ``results.json``) and ``--resume``; :func:`evaluate_run` scores a run
folder's selected model and :func:`tabulate_runs` aggregates many. The console scripts and the
reproduction both call them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from m3ed.config import TrainConfig
from m3ed.data import Batch, DialogueDataset, collate_dialogues, multi_hot_targets, open_release, parse_modalities
from m3ed.metrics import aggregate_runs, benchmark_table, classification_report, multilabel_report
from m3ed.models import MODEL_NAMES, build_model
from m3ed.release import EMOTIONS, M3EDRelease
from shared import checkpoint, distributed
from shared.data import make_loader, set_epoch
from shared.device import AmpScaler, autocast, seed_everything
from shared.distributed import all_reduce_sum
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, Progress, format_record, get_logger


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
    """Cross-entropy over the real utterances of a (n, B) batch, ``-sum_i w_yi log p(y_i) / sum_i w_yi``.

    The paper states the objective in words only (no equation); this is the official code's
    ``nn.CrossEntropyLoss(ignore_index=-1)`` (``codes/mdi/run_htrm.py``): padding (-1) is ignored and
    ``weight`` (optional) weighs each utterance by its class, as the DialogueRNN baseline does.
    """
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), weight=weight, ignore_index=-1)


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sigmoid BCE-with-logits over the real utterances of a (n, B, 7) batch, averaged over their 7 x count terms.

    No official multi-label code exists: ``targets`` are the multi-hot final_mul_emo rows; padding is
    the positions whose ``labels`` are -1, ignored as in :func:`utterance_loss`.
    """
    real = labels >= 0
    return F.binary_cross_entropy_with_logits(logits[real], targets[real])


def multilabel_predictions(logits: torch.Tensor, at_least_one: bool = False) -> torch.Tensor:
    """0/1 predictions: the emotions whose sigmoid exceeds 0.5 (logit > 0); ``at_least_one`` adds the top
    emotion to a row that has none, as every utterance has at least one emotion."""
    predicted = logits > 0
    if at_least_one:
        none = ~predicted.any(-1, keepdim=True)
        predicted |= none & F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()
    return predicted.long()


#: The selection measure of each task: weighted F1 (the paper's) or, for the multi-label task, micro F1.
SELECTION = {"single": "weighted_f1", "multi": "micro_f1"}
#: The test scores ``results.json`` gives (in percent) for each task.
TEST_SCORES = {
    "single": ("weighted_f1", "accuracy"),
    "multi": ("micro_f1", "macro_f1", "hamming_loss", "subset_accuracy"),
}


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: AmpScaler,
    device: torch.device,
    *,
    clip: float | None = 5.0,
    weight: torch.Tensor | None = None,
    amp: bool = False,
    desc: str = "train",
) -> float:
    """One epoch (one scheduler step per batch); returns the mean loss per real utterance over all processes.

    Batches with multi-label ``targets`` train with :func:`multilabel_loss`, the others with :func:`utterance_loss`.
    """
    model.train()
    total = torch.zeros(2, dtype=torch.float64)
    progress = Progress(batches, desc=desc)
    for batch in progress:
        batch = batch.to(device)
        with autocast(device, amp):
            logits = model(batch.features, batch.speakers, batch.pad_mask)
        if batch.targets is None:
            loss = utterance_loss(logits.float(), batch.labels, weight)
        else:
            loss = multilabel_loss(logits.float(), batch.targets, batch.labels)
        optimizer.zero_grad(set_to_none=True)
        scaler(loss, optimizer, clip_grad=clip or None, parameters=model.parameters())
        scheduler.step()
        count = int((batch.labels >= 0).sum())
        total += torch.tensor([loss.item() * count, count], dtype=torch.float64)
        progress.update(loss=loss.item())
    total = all_reduce_sum(total)
    return float(total[0] / total[1].clamp(min=1))


@torch.no_grad()
def predict(
    model: nn.Module, batches: Iterable[Batch], device: torch.device, at_least_one: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions of every real utterance, in batch order: class ids, or for batches with
    multi-label targets (N, 7) 0/1 rows (:func:`multilabel_predictions`)."""
    model.eval()
    truths, predictions = [], []
    for batch in batches:
        batch = batch.to(device)
        logits = model(batch.features, batch.speakers, batch.pad_mask)
        real = batch.labels >= 0
        if batch.targets is None:
            truths.append(batch.labels[real].cpu().numpy())
            predictions.append(logits.argmax(-1)[real].cpu().numpy())
        else:
            truths.append(batch.targets[real].long().cpu().numpy())
            predictions.append(multilabel_predictions(logits[real], at_least_one).cpu().numpy())
    return np.concatenate(truths), np.concatenate(predictions)


def evaluate(
    model: nn.Module, batches: Iterable[Batch], device: torch.device, num_classes: int = 7, at_least_one: bool = False
) -> dict:
    """Weighted F1 (the paper's metric), macro F1, accuracy, UAR, per-class F1 and confusion; for multi-label
    batches micro / macro F1, per-class F1, Hamming loss and subset accuracy (:func:`multilabel_report`)."""
    truth, prediction = predict(model, batches, device, at_least_one)
    if truth.ndim == 2:
        return multilabel_report(truth, prediction, num_classes)
    return classification_report(truth, prediction, num_classes)


class Loaders(NamedTuple):
    """The loaders of one run: train (sharded and reshuffled every epoch), val and test (whole, in order)."""

    train: DataLoader
    val: DataLoader
    test: DataLoader


def make_loaders(release: M3EDRelease, config: TrainConfig, device: torch.device) -> Loaders:
    """The three splits of ``release`` in ``config``'s modalities, batch size and task, ordered by ``config.seed``."""
    targets = multi_hot_targets(release) if config.task == "multi" else None

    def dataset(split: str) -> DialogueDataset:
        ids = release.dialogues_in(split)
        if not ids:
            raise UserError(f"{release.root}: the {split} split has no dialogues")
        return DialogueDataset(release.features, ids, config.modality_names, targets)

    common = {"collate_fn": collate_dialogues, "workers": config.workers, "device": device, "seed": config.seed}
    return Loaders(
        make_loader(dataset("train"), config.batch_size, shuffle=True, **common),
        make_loader(dataset("val"), config.batch_size, shard=False, **common),
        make_loader(dataset("test"), config.batch_size, shard=False, **common),
    )


def fit(
    config: TrainConfig,
    out: Path,
    device: torch.device,
    *,
    resume: bool = False,
    release: M3EDRelease | None = None,
    info: dict | None = None,
    quiet: bool = False,
) -> dict:
    """Train ``config`` into ``out`` and return the results (also written to ``results.json``).

    The test scores are those of the epoch with the best validation weighted F1 (micro F1 for the multi-label
    task), whose weights are ``model.pt``. ``resume`` continues from the latest checkpoint in ``out`` with the
    result of an uninterrupted run. ``release`` (default: :func:`m3ed.data.open_release` of ``config.data``)
    lets several runs share one read of the release; ``info`` is recorded in ``config.json`` (e.g. the
    preset's name).
    """
    log = get_logger()
    out = Path(out)
    release = release or open_release(config.data, config.features, config.annotations)
    loaders = make_loaders(release, config, device)
    modalities = config.modality_names
    dims = {m: release.features.dims[m] for m in modalities}
    overrides = config.model_overrides
    seed_everything(config.seed)
    model = build_model(config.model, modalities, dims, preset=config.scale, **overrides)
    params = sum(p.numel() for p in model.parameters())
    model = distributed.wrap_model(model, device)
    optimizer = build_optimizer(model, config.lr)
    scheduler = cosine_schedule(optimizer, config.epochs * len(loaders.train))
    scaler = AmpScaler(device, config.amp)
    weight = None
    if config.class_weights:
        train_labels = (y for d in release.dialogues_in("train") for y in release.features.labels[d])
        weight = class_weights(train_labels).to(device)
    # what m3ed-eval needs to rebuild the model, saved with its weights
    meta = {"model": config.model, "modalities": config.modalities, "preset": config.scale, "task": config.task}
    meta["at_least_one"] = config.at_least_one
    meta.update({"input_dims": dims, "overrides": overrides})
    start, best = 0, {"val": None, "test": None, "epoch": 0, "state": None}
    if resume:
        latest = checkpoint.resume_checkpoint(out)
        state = checkpoint.restore_training_state(
            checkpoint.load_checkpoint(latest), model, optimizer, scheduler, scaler
        )
        start, best = state["epoch"], state["extra"]["best"]
        log.info(f"resumed from {latest} at epoch {start}")
    elif distributed.is_main_process():
        record = {**dataclasses.asdict(config), **(info or {}), "parameters": params, "data_root": str(release.root)}
        checkpoint.save_json(out / "config.json", {**record, **meta})
    metrics = MetricsWriter(out / "metrics.jsonl")
    if not quiet:
        log.info(
            f"m3ed: {config.model} on {config.modalities} ({params:,} parameters), {config.epochs} epochs -> {out}"
        )
    started, key = time.monotonic(), SELECTION[config.task]
    for epoch in range(start, config.epochs):
        set_epoch(loaders.train, epoch)
        loss = train_epoch(
            model,
            loaders.train,
            optimizer,
            scheduler,
            scaler,
            device,
            clip=config.clip,
            weight=weight,
            amp=config.amp,
            desc=f"epoch {epoch + 1}/{config.epochs}",
        )
        val, test = (evaluate(model, loader, device, at_least_one=config.at_least_one) for loader in loaders[1:])
        if best["val"] is None or val[key] > best["val"][key]:
            weights = {k: v.detach().clone() for k, v in distributed.unwrap_model(model).state_dict().items()}
            best = {"val": val, "test": test, "epoch": epoch + 1, "state": weights}
        second = "accuracy" if config.task == "single" else "macro_f1"
        record = {"epoch": epoch + 1, "train_loss": loss, f"val_{key}": val[key]}
        record.update({f"test_{key}": test[key], f"test_{second}": test[second]})
        metrics.write(record)
        if not quiet:
            log.info(format_record(record))
        state = checkpoint.training_state(model, optimizer, scheduler, scaler, epoch=epoch + 1, best=best)
        checkpoint.save_training_checkpoint(out, epoch + 1, state)
    checkpoint.save_checkpoint(out / "model.pt", {"state_dict": best["state"], **meta})
    results = {
        **meta,
        "parameters": params,
        "best_epoch": best["epoch"],
        f"val_{key}": 100 * best["val"][key],
        **{f"test_{k}": 100 * best["test"][k] for k in TEST_SCORES[config.task]},
        "test_per_class_f1": dict(zip(EMOTIONS, best["test"]["per_class_f1"], strict=True)),
        "train_seconds": round(time.monotonic() - started, 1),
        "data": str(release.root),
    }
    if distributed.is_main_process():
        checkpoint.save_json(out / "results.json", results)
    return results


def evaluate_run(
    run: str | Path, device: torch.device, *, split: str = "test", data: Path | None = None, batch_size: int = 32
) -> dict:
    """Scores of a run folder's selected model (``model.pt``) on ``split`` of its release (or of ``data``), for
    the run's task and prediction rule."""
    run = require_path(run, "--run folder", kind="dir")
    saved = checkpoint.load_checkpoint(require_path(run / "model.pt", "trained model"))
    config = json.loads(require_path(run / "config.json", "run config").read_text())
    data = data or (Path(config["data"]) if config.get("data") else None)
    release = open_release(data, config.get("features"), config.get("annotations", "check"))
    modalities = parse_modalities(saved["modalities"])
    model = build_model(saved["model"], modalities, saved["input_dims"], preset=saved["preset"], **saved["overrides"])
    model.load_state_dict(saved["state_dict"])
    task, at_least_one = saved.get("task", "single"), saved.get("at_least_one", False)
    targets = multi_hot_targets(release) if task == "multi" else None
    dataset = DialogueDataset(release.features, release.dialogues_in(split), modalities, targets)
    loader = make_loader(dataset, batch_size, collate_fn=collate_dialogues, device=device, shard=False)
    scores = evaluate(model.to(device), loader, device, at_least_one=at_least_one)
    return {"run": str(run), "split": split, "task": task, **scores}


def tabulate_runs(runs: Sequence[str | Path]) -> str:
    """The paper's benchmark table (models x modality combinations, val and test weighted F1) of many runs,
    aggregated as the official ``codes/get_results.py`` does (:func:`m3ed.metrics.aggregate_runs`); runs of
    the multi-label task make their own table of micro F1 (never mixed into the single-label benchmark)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    tasks = set()
    for run in runs:
        result = json.loads(require_path(Path(run) / "results.json", "results.json").read_text())
        tasks.add(result.get("task", "single"))
        combination = "+".join(letter.upper() for letter in result["modalities"])
        groups.setdefault((MODEL_NAMES[result["model"]], combination), []).append(result)
    if len(tasks) > 1:
        raise UserError("--table mixes single- and multi-label runs; tabulate each task's runs separately")
    key = SELECTION[next(iter(tasks), "single")]
    return benchmark_table(
        {group: aggregate_runs(results, f"val_{key}", f"test_{key}") for group, results in groups.items()}
    )
