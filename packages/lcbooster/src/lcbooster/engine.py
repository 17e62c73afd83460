"""Training: CE, DivideMix co-divide training and LC-Booster's reliable label correction, and :func:`fit`.

DivideMix is Li, Socher, Hoi, "DivideMix: Learning with Noisy Labels as Semi-supervised Learning" (ICLR 2020);
equation numbers below are its. LC-Booster is Wang et al., "Reliable Label Correction is a Good Booster When
Learning with Extremely Noisy Labels" (2022); where the paper gives no formula, the official code is followed.

Images live in memory as uint8 tensors (on the training device); batches are index tensors drawn by
:func:`shared.data.make_loader`, and the weak/strong views are computed on the device a batch at a
time. Under torchrun every process trains on its shard of each index set; the per-sample losses and
the correction's logits are evaluated on shards and summed across processes, so every process fits
the same GMM and holds the same corrected labels.

:func:`fit` runs a whole configuration and owns its files: ``config.json``, ``noisy_labels.npy`` (the labels it
trains on, LC-Booster's (2, N) format), ``metrics.jsonl`` (one record per epoch), ``checkpoint-<epoch>.pt``
(both networks, optimizers, AMP scalers, the corrected labels, the GMM loss histories and the RNG: ``resume``
continues exactly, also across the correction epoch), ``final.pt`` (the networks and what rebuilds them) and
``results.json``. :func:`load_final` and :func:`evaluate_file` read what it saved.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lcbooster import noise as lnoise
from lcbooster.config import EMBEDDED, TrainConfig
from lcbooster.correction import CorrectionResult, reliable_label_correction
from lcbooster.data import ImageData, load_images
from lcbooster.losses import (
    linear_rampup,
    mixup,
    mixup_lambda,
    negative_entropy,
    sharpen,
    soft_cross_entropy,
    uniform_prior_penalty,
    unlabeled_mse,
)
from lcbooster.models import build_model
from lcbooster.selection import clean_detection_auc, gmm_clean_probability, gmm_input, min_max_normalise
from lcbooster.transforms import Views
from shared import checkpoint, distributed
from shared.data import TensorBatchDataset, make_loader, set_epoch
from shared.device import AmpScaler, autocast, seed_everything
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, Progress, format_record, get_logger, read_metrics


@dataclass
class TrainData:
    """A noisy training set and a clean test set, images as uint8 (N, C, H, W)."""

    images: torch.Tensor
    noisy_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    views: Views
    clean_labels: torch.Tensor | None = None  # ground truth: logging only (label precision, AUC)

    def to(self, device: torch.device) -> TrainData:
        move = {name: getattr(self, name).to(device) for name in ("images", "test_images")}
        return TrainData(**{**self.__dict__, **move})


def scheduled_lr(config: TrainConfig, epoch: int) -> float:
    """LR of 1-based ``epoch``: optional linear warm-up from 0.1 x lr, then x gamma after each milestone."""
    lr = config.lr
    if epoch <= config.lr_warmup_epochs:
        lr *= 1.0 - (1.0 - (epoch - 1) / config.lr_warmup_epochs) * 0.9
    return lr * config.lr_gamma ** sum(epoch > m for m in config.lr_milestones)


def _shard(count: int) -> torch.Tensor:
    """This process's share of ``range(count)`` (all of it in a single process): exact, no padding."""
    return torch.arange(distributed.get_rank(), count, distributed.get_world_size())


class CoTrainer:
    """One (``ce``) or two (``dividemix``, ``lcbooster``) networks and all state a run needs to resume.

    ``config.seed`` seeds the data order and the GMM fits, ``config.amp`` turns on mixed precision.
    """

    def __init__(
        self,
        config: TrainConfig,
        networks: list[nn.Module],
        data: TrainData,
        device: torch.device,
        *,
        eval_batch_size: int = 512,
        progress: bool = True,
    ) -> None:
        self.config, self.device, self.seed, self.amp = config, device, config.seed, config.amp
        self.data = data.to(device)
        self.models = [distributed.wrap_model(net, device) for net in networks]
        self.optimizers = [
            torch.optim.SGD(m.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
            for m in self.models
        ]
        self.scalers = [AmpScaler(device, config.amp) for _ in self.models]
        self.targets = data.noisy_labels.clone()  # cur_targets: changed only by the correction pass
        self.history: list[list[torch.Tensor]] = [[] for _ in self.models]
        self.test_history: list[float] = []
        self.eval_batch_size = eval_batch_size
        self.progress = progress

    # ------------------------------------------------------------------ helpers
    @property
    def cores(self) -> list[nn.Module]:
        return [distributed.unwrap_model(m) for m in self.models]

    def _loader(self, tensors: tuple[torch.Tensor, ...], batch: int, salt: int, epoch: int, drop_last: bool):
        world = distributed.get_world_size()
        drop = drop_last and len(tensors[0]) >= batch * world  # tiny sets: keep at least one batch
        loader = make_loader(TensorBatchDataset(*tensors), batch, shuffle=True, seed=self.seed + salt, drop_last=drop)
        set_epoch(loader, epoch)
        return loader

    def _cycle(self, tensors, batch: int, salt: int, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """The unlabelled loader, restarted with a new shuffle whenever it is exhausted."""
        rounds = 0
        while True:
            yield from self._loader(tensors, batch, salt, epoch * 1000 + rounds, self.config.drop_last)
            rounds += 1

    @torch.no_grad()
    def _logits(self, model: nn.Module, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits of ``images[indices]`` under the test view, in chunks."""
        model.eval()
        out = []
        for chunk in indices.split(self.eval_batch_size):
            with autocast(self.device, self.amp):
                out.append(model(self.data.views.test(images[chunk.to(images.device)])).float())
        return torch.cat(out) if out else torch.zeros(0, self.data.num_classes, device=self.device)

    def _gathered_logits(self, model: nn.Module) -> torch.Tensor:
        """Logits of every training image, each process computing its shard (summed across processes)."""
        count = len(self.data.images)
        shard = _shard(count)
        full = torch.zeros(count, self.data.num_classes, device=self.device)
        full[shard.to(self.device)] = self._logits(model, self.data.images, shard)
        return distributed.all_reduce_sum(full)

    def _progress(self, loader, desc: str):
        return Progress(loader, desc=desc, enabled=self.progress)

    def _step(self, k: int, loss: torch.Tensor) -> None:
        self.optimizers[k].zero_grad(set_to_none=True)
        self.scalers[k](loss, self.optimizers[k])

    def set_lr(self, epoch: int) -> float:
        lr = scheduled_lr(self.config, epoch)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    # ------------------------------------------------------------------ phases
    def warmup_epoch(self, k: int, epoch: int) -> float:
        """CE on all samples with the current labels (DivideMix's warm-up), plus -H of Eq. (2) if configured."""
        model, views = self.models[k], self.data.views
        model.train()
        count = len(self.targets)
        loader = self._loader((torch.arange(count),), self.config.warmup_batch_size, 17 * k, epoch, False)
        total, steps = torch.zeros((), device=self.device), 0
        for (index,) in self._progress(loader, f"warm-up net{k + 1}"):
            index = index.to(self.device)
            with autocast(self.device, self.amp):
                logits = model(views.weak(self.data.images[index]))
                loss = F.cross_entropy(logits.float(), self.targets[index.cpu()].to(self.device))
                if self.config.confidence_penalty:
                    loss = loss + negative_entropy(logits.float())
            self._step(k, loss)
            total += loss.detach()
            steps += 1
        return float(total) / max(steps, 1)

    def clean_probability(self, k: int, epoch: int) -> torch.Tensor:
        """w of every sample from net k: the per-sample CE of Eq. (1) against ``cur_targets`` (LC-Booster's corrected
        labels; DivideMix: the noisy ones), min-max, history average, then the GMM of DivideMix's Sec. 3.1."""
        logits = self._gathered_logits(self.cores[k])
        losses = F.cross_entropy(logits, self.targets.to(self.device), reduction="none").cpu()
        self.history[k].append(min_max_normalise(losses))
        self.history[k] = self.history[k][-self.config.gmm_avg_last :]
        column = gmm_input(
            self.history[k], self.config.noise_ratio, self.config.gmm_avg_last, self.config.gmm_avg_min_ratio
        )
        return gmm_clean_probability(column, seed=self.seed * 100_003 + epoch * 2 + k)

    def _views(self, x: torch.Tensor, u: torch.Tensor):
        """(labelled views to guess on, to train on), (unlabelled views to guess on, to train on)."""
        views, kind = self.data.views, self.config.views
        if kind == "dividemix":
            xs, us = [views.weak(x), views.weak(x)], [views.weak(u), views.weak(u)]
            return xs, xs, us, us
        if kind == "ww_ws":
            xs, uw = [views.weak(x), views.weak(x)], views.weak(u)
            return xs, xs, [uw], [uw, views.strong(u)]
        xw, uw = [views.weak(x), views.weak(x)], [views.weak(u), views.weak(u)]
        return xw, [views.strong(x), views.strong(x)], uw, [views.strong(u), views.strong(u)]

    def train_epoch(self, k: int, epoch: int, labeled: torch.Tensor, clean_prob: torch.Tensor) -> dict:
        """One co-divide pass of net k on the division (and w) made by the other net (DivideMix's Algorithm 1).

        Co-refinement (Eq. (3)) and sharpening (Eq. (4)) of the labelled targets, co-guessing of the unlabelled
        ones, MixMatch (Eqs. (5)-(8)) and the loss of Eq. (12). LC-Booster's views: ``config.views``.
        """
        cfg = self.config
        model, core, other = self.models[k], self.cores[k], self.cores[1 - k]
        other.eval()  # the partner only guesses: frozen, BatchNorm on running statistics
        labeled_idx = labeled.nonzero().squeeze(1)
        unlabeled_idx = (~labeled).nonzero().squeeze(1)
        if len(labeled_idx) == 0:
            return {"loss_x": float("nan"), "loss_u": float("nan"), "iterations": 0}
        loader = self._loader((labeled_idx, clean_prob[labeled_idx]), cfg.batch_size, 31 * k, epoch, cfg.drop_last)
        unlabeled = (
            self._cycle((unlabeled_idx,), cfg.batch_size * cfg.unlabeled_ratio, 31 * k + 7, epoch)
            if len(unlabeled_idx)
            else None
        )
        iterations = len(loader)
        labeled_only_mix = cfg.lambda_u == 0 and cfg.method == "lcbooster" and cfg.mixup_labeled_only_when_no_lu
        sums = torch.zeros(3, device=self.device)
        for step, (index_x, w_x) in enumerate(self._progress(loader, f"co-train net{k + 1}")):
            index_x, w_x = index_x.to(self.device), w_x.to(self.device).view(-1, 1)
            x = self.data.images[index_x]
            y = F.one_hot(self.targets[index_x.cpu()], self.data.num_classes).float().to(self.device)
            u = self.data.images[next(unlabeled)[0].to(self.device)] if unlabeled is not None else x[:0]
            guess_x, train_x, guess_u, train_u = self._views(x, u)
            with torch.no_grad(), autocast(self.device, self.amp):
                core.train(cfg.faithful_bn_in_guess)
                p_x = torch.stack([torch.softmax(core(v).float(), 1) for v in guess_x]).mean(0)
                p_x = w_x * y + (1 - w_x) * p_x  # co-refinement, Eq. (3)
                targets_x = sharpen(p_x, cfg.temperature)
                if len(u):
                    p_u = [torch.softmax(net(v).float(), 1) for net in (core, other) for v in guess_u]
                    targets_u = sharpen(torch.stack(p_u).mean(0), cfg.temperature)  # co-guessing
            model.train()
            rows_x = len(train_x) * len(x)
            inputs = torch.cat(train_x + (train_u if len(u) else []))
            targets = torch.cat([targets_x] * len(train_x) + ([targets_u] * len(train_u) if len(u) else []))
            lam = mixup_lambda(cfg.alpha)
            mixed_input, mixed_target = mixup(inputs, targets, lam, torch.randperm(len(inputs), device=self.device))
            if labeled_only_mix:  # λu = 0 in LC-Booster: SmoothCE on the mixed labelled rows only
                mixed_input, mixed_target = mixed_input[:rows_x], mixed_target[:rows_x]
            with autocast(self.device, self.amp):
                logits = model(mixed_input).float()
            loss_x = soft_cross_entropy(logits[:rows_x], mixed_target[:rows_x])
            loss_u = unlabeled_mse(logits[rows_x:], mixed_target[rows_x:]) if len(logits) > rows_x else loss_x * 0
            weight_u = linear_rampup(epoch - 1 + step / iterations, cfg.warmup_epochs, cfg.lambda_u, cfg.rampup_epochs)
            penalty = uniform_prior_penalty(logits)
            loss = loss_x + weight_u * loss_u + cfg.lambda_p * penalty  # Eq. (12)
            self._step(k, loss)
            sums += torch.stack([loss_x.detach(), loss_u.detach(), penalty.detach()])
        means = (sums / max(iterations, 1)).tolist()
        return {
            "loss_x": means[0],
            "loss_u": means[1],
            "penalty": means[2],
            "iterations": iterations,
            "lambda_u": weight_u,
        }

    def correct_labels(self, divisions: list[torch.Tensor] | None = None) -> CorrectionResult:
        """LC-Booster's reliable label correction: both nets, averaged logits, hard overwrite at τ (``relabel``)."""
        mean_logits = (self._gathered_logits(self.cores[0]) + self._gathered_logits(self.cores[1])).cpu() / 2
        scope = None
        if self.config.relabel_scope == "unlabel" and divisions is not None:  # unlabelled in either division,
            scope = (~(divisions[0] & divisions[1])).nonzero().squeeze(1)  # as the official ~(mask1 & mask2)
        result = reliable_label_correction(
            mean_logits, self.targets, self.config.relabel_threshold, scope, self.data.clean_labels
        )
        self.targets = result.targets
        if self.config.reset_history_on_relabel:
            self.history = [[] for _ in self.models]
        return result

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Test accuracy (%) of the ensemble (mean of the nets' logits) and of each net, on all processes."""
        shard = _shard(len(self.data.test_labels))
        logits = [self._logits(core, self.data.test_images, shard) for core in self.cores]
        labels = self.data.test_labels[shard].to(self.device)
        correct = [(lg.argmax(1) == labels).sum() for lg in [sum(logits) / len(logits), *logits]]
        counts = distributed.all_reduce_sum(torch.stack(correct).double().cpu())
        total = len(self.data.test_labels)
        result = {"test_acc": 100.0 * float(counts[0]) / total}
        if len(logits) > 1:
            result |= {f"test_acc_net{i + 1}": 100.0 * float(c) / total for i, c in enumerate(counts[1:])}
        return result

    # ------------------------------------------------------------------ one epoch
    def run_epoch(self, epoch: int) -> dict:
        """Everything of 1-based ``epoch``; returns its metrics record."""
        cfg = self.config
        record: dict = {"epoch": epoch, "lr": self.set_lr(epoch)}
        if cfg.method == "ce" or epoch <= cfg.warmup_epochs:
            record["phase"] = "ce" if cfg.method == "ce" else "warmup"
            record["loss"] = sum(self.warmup_epoch(k, epoch) for k in range(len(self.models))) / len(self.models)
        else:
            record["phase"] = "cotrain"
            probs = [self.clean_probability(k, epoch) for k in (0, 1)]
            divisions = [p > cfg.p_threshold for p in probs]
            record |= self._division_stats(probs, divisions)
            for k in (0, 1):  # net k learns from the other net's division
                stats = self.train_epoch(k, epoch, divisions[1 - k], probs[1 - k])
                record |= {f"{name}_{k + 1}": value for name, value in stats.items()}
            if cfg.method == "lcbooster" and epoch in cfg.relabel_epochs:
                record |= self.correct_labels(divisions).summary()
        if self.data.clean_labels is not None:
            record["label_accuracy"] = float((self.targets == self.data.clean_labels).float().mean())
        record |= self.evaluate()
        self.test_history.append(record["test_acc"])
        record["best"] = max(self.test_history)
        record["last5"] = sum(self.test_history[-5:]) / len(self.test_history[-5:])
        return record

    def _division_stats(self, probs: list[torch.Tensor], divisions: list[torch.Tensor]) -> dict:
        stats = {}
        clean = None if self.data.clean_labels is None else self.targets == self.data.clean_labels
        for k, (prob, labeled) in enumerate(zip(probs, divisions, strict=True), start=1):
            stats[f"n_labeled_{k}"] = int(labeled.sum())
            if clean is not None:
                stats[f"labeled_precision_{k}"] = float(clean[labeled].float().mean()) if labeled.any() else None
                stats[f"auc_{k}"] = clean_detection_auc(prob, clean)
        return stats

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """Optimizers, scalers, labels, loss histories, test history (models are saved by the caller)."""
        return {
            "optimizers": [o.state_dict() for o in self.optimizers],
            "scalers": [s.state_dict() for s in self.scalers],
            "targets": self.targets.clone(),
            "history": [list(h) for h in self.history],
            "test_history": list(self.test_history),
        }

    def load_state(self, state: dict) -> None:
        for obj, saved in zip(self.optimizers + self.scalers, state["optimizers"] + state["scalers"], strict=True):
            obj.load_state_dict(saved)
        self.targets = state["targets"].clone()
        self.history = [list(h) for h in state["history"]]
        self.test_history = list(state["test_history"])


def make_views(config: TrainConfig, images: ImageData) -> Views:
    """The weak/strong/test views of ``config`` (digits: no flip, translate + cutout + jitter)."""
    if config.dataset in EMBEDDED or not images.flip:
        views = Views.for_digits(images.mean, images.std, images.x_train.shape[-1])
        return views if config.strong_aug == "digits" else dataclasses.replace(views, strong_aug="none", cutout=None)
    strong = config.strong_aug if config.strong_aug in ("rand", "auto") else "none"
    return Views.for_cifar(images.mean, images.std, strong=strong, pad_mode=config.pad_mode)


def noisy_labels(config: TrainConfig, images: ImageData, out: Path, *, resume: bool = False) -> torch.Tensor:
    """The run's noisy labels: its saved ``noisy_labels.npy`` on resume, else ``config.noise_file`` or a draw
    (seeded by ``noise_seed``, else ``seed``), saved there."""
    saved = out / "noisy_labels.npy"
    count, classes = len(images.y_train), images.num_classes
    if resume and saved.exists():
        return torch.as_tensor(lnoise.load_noisy_labels(saved, count, classes), dtype=torch.long)
    if config.noise_file is not None:
        noise_file = require_path(config.noise_file, "--noise-file", kind="file")
        labels = lnoise.load_noisy_labels(noise_file, count, classes)
    else:
        seed = config.seed if config.noise_seed is None else config.noise_seed
        labels = lnoise.draw_noise(images.y_train.numpy(), config.noise_mode, config.noise_ratio, classes, seed)
    if distributed.is_main_process():
        lnoise.save_noisy_labels(saved, labels)
    return torch.as_tensor(labels, dtype=torch.long)


def fit(
    config: TrainConfig,
    out: str | os.PathLike,
    device: torch.device,
    *,
    resume: bool = False,
    images: ImageData | None = None,
    info: dict | None = None,
    quiet: bool = False,
    progress: bool = True,
) -> dict:
    """Train ``config`` into ``out`` and return the results (also written to ``results.json``).

    ``resume`` continues from the latest checkpoint in ``out`` with the result of an uninterrupted run.
    ``images`` (default: :func:`lcbooster.data.load_images` of ``config.dataset`` and ``config.data``) lets
    several runs share data read once; ``info`` is recorded in ``config.json`` beside the configuration.
    ``quiet`` drops the per-epoch log lines, ``progress=False`` the progress bars.
    """
    out = Path(out)
    latest = checkpoint.resume_checkpoint(out) if resume else None
    if distributed.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    log = get_logger()
    images = images if images is not None else load_images(config.dataset, config.data)
    labels = noisy_labels(config, images, out, resume=resume)
    data = TrainData(
        images=images.x_train,
        noisy_labels=labels,
        test_images=images.x_test,
        test_labels=images.y_test,
        num_classes=images.num_classes,
        views=make_views(config, images),
        clean_labels=images.y_train,
    )
    seed_everything(config.seed)
    in_chans = images.x_train.shape[1]
    count = 1 if config.method == "ce" else 2
    networks = [build_model(config.model, images.num_classes, in_chans, config.weights) for _ in range(count)]
    trainer = CoTrainer(config, networks, data, device, progress=progress and not quiet)
    pair = nn.ModuleList(trainer.cores)
    metrics = MetricsWriter(out / "metrics.jsonl")
    start = 0
    if resume:
        state = checkpoint.restore_training_state(checkpoint.load_checkpoint(latest), pair)
        trainer.load_state(state["extra"])
        start = state["epoch"]
        metrics.rewind("epoch", start)
        log.info(f"resumed from {latest} at epoch {start}")
    else:
        noise_accuracy = lnoise.label_accuracy(labels.numpy(), images.y_train.numpy())
        if distributed.is_main_process():
            record = {"train_config": _plain(config), **(info or {}), "num_classes": images.num_classes}
            record |= {"in_chans": in_chans, "noisy_label_accuracy": noise_accuracy}
            checkpoint.save_json(out / "config.json", record)
        if not quiet:
            log.info(f"noisy labels: {config.noise}, label accuracy {noise_accuracy:.4f} ({len(labels)} samples)")
    if not quiet:
        log.info(f"lcbooster: {config.method} on {images.name} {config.noise}, {config.epochs} epochs -> {out}")
    started = time.monotonic()
    for epoch in range(start + 1, config.epochs + 1):
        record = trainer.run_epoch(epoch)
        metrics.write(record)
        if not quiet:
            log.info(format_record(record))
        state = checkpoint.training_state(pair, epoch=epoch, **trainer.state())
        checkpoint.save_training_checkpoint(out, epoch, state)
    distributed.barrier()  # every process reads the metrics that the main process finished writing
    results = summarise(config, out, time.monotonic() - started)
    if distributed.is_main_process():
        final = {"models": [c.state_dict() for c in trainer.cores], "config": _plain(config)}
        final |= {"num_classes": images.num_classes, "in_chans": in_chans, "dataset": config.dataset}
        checkpoint.save_checkpoint(out / "final.pt", final)
        checkpoint.save_json(out / "results.json", results)
    return results


def _plain(config: TrainConfig) -> dict:
    """The configuration as plain values (paths as strings): what ``weights_only`` loading accepts."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}


def summarise(config: TrainConfig, out: Path, seconds: float) -> dict:
    """Last / best / last-5 test accuracy, and around the correction (epoch c): the label accuracy, the correct labels
    per class, and the labelled set (size, precision) of the division at c and at c + ``gmm_avg_last``, once the
    averaged loss history holds only post-correction losses."""
    records = read_metrics(out / "metrics.jsonl")
    last = records[-1]
    results = {
        "method": config.method,
        "dataset": config.dataset,
        "noise": config.noise,
        "last": last["test_acc"],
        "best": last["best"],
        "last5": last["last5"],
        "label_accuracy_final": last.get("label_accuracy"),
        "train_seconds": round(seconds, 1),
    }
    corrected = [r for r in records if "relabel_overwritten" in r]
    if corrected:
        at = corrected[0]
        # the division of epoch c + 5 is the first made from post-correction losses only (5-epoch average)
        settled = next((r for r in records if r["epoch"] == at["epoch"] + config.gmm_avg_last), None)
        results["correction"] = {
            "epoch": at["epoch"],
            "settled_epoch": settled["epoch"] if settled else None,
            "overwritten": at["relabel_overwritten"],
            "changed": at["relabel_changed"],
            "relabel_accuracy": at["relabel_accuracy"],
            "label_accuracy_before": at["label_accuracy_before"],
            "label_accuracy_after": at["label_accuracy_after"],
            "correct_per_class_before": at.get("correct_per_class_before"),
            "correct_per_class_after": at.get("correct_per_class_after"),
            "n_labeled_before": _mean_pair(at, "n_labeled"),
            "labeled_precision_before": _mean_pair(at, "labeled_precision"),
            "n_labeled_after": _mean_pair(settled, "n_labeled") if settled else None,
            "labeled_precision_after": _mean_pair(settled, "labeled_precision") if settled else None,
        }
    return results


def _mean_pair(record: dict, key: str) -> float | None:
    values = [record.get(f"{key}_1"), record.get(f"{key}_2")]
    return None if None in values else sum(values) / 2


def load_final(path: str | os.PathLike) -> tuple[list[nn.Module], dict]:
    """The networks of a ``final.pt``, or of a ``checkpoint-<epoch>.pt`` read with its run's ``config.json``."""
    path = require_path(path, "--weights", kind="file")
    saved = checkpoint.load_checkpoint(path)
    if "models" in saved:
        states, meta = saved["models"], saved
    elif "model" in saved and (path.parent / "config.json").is_file():
        meta = json.loads((path.parent / "config.json").read_text())
        meta["config"] = meta["train_config"]
        states = [{k.split(".", 1)[1]: v for k, v in saved["model"].items() if k.startswith(f"{i}.")} for i in (0, 1)]
        states = [state for state in states if state]
    else:
        raise UserError(f"{path} is not a file written by lcbooster-train (final.pt or checkpoint-<epoch>.pt)")
    networks = []
    for state in states:
        net = build_model(meta["config"]["model"], meta["num_classes"], meta["in_chans"])
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise UserError(f"{path} does not fit model {meta['config']['model']} ({first})") from None
        networks.append(net.eval())
    return networks, meta


def evaluate_file(weights: str | os.PathLike, device: torch.device, *, data: str | os.PathLike | None = None) -> dict:
    """Test accuracy (%) of a run's saved networks: the ensemble (mean of the logits) and each network.

    ``data`` is the dataset root for CIFAR runs; an embedded run reads its embedded test split.
    """
    networks, meta = load_final(weights)
    config = dataclasses.replace(TrainConfig(**meta["config"]), amp=False)
    images = load_images(config.dataset, data)
    if images.num_classes != meta["num_classes"]:
        raise UserError(f"{weights} has {meta['num_classes']} classes, the data {images.num_classes}")
    test = TrainData(
        images.x_train[:0],
        images.y_train[:0],
        images.x_test,
        torch.as_tensor(images.y_test),
        images.num_classes,
        make_views(config, images),
    )
    trainer = CoTrainer(config, networks, test, device, progress=False)
    return {"weights": str(weights), **trainer.evaluate()}
