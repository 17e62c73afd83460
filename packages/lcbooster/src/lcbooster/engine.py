"""The training loops: CE, DivideMix co-divide training, and LC-Booster's correction pass (spec §3).

Images live in memory as uint8 tensors (on the training device); batches are index tensors drawn by
:func:`shared.data.make_loader`, and the weak/strong views are computed on the device a batch at a
time. Under torchrun every process trains on its shard of each index set; the per-sample losses and
the correction's logits are evaluated on shards and summed across processes, so every process fits
the same GMM and holds the same corrected labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lcbooster.config import TrainConfig
from lcbooster.correction import CorrectionResult, reliable_label_correction
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
from lcbooster.selection import clean_detection_auc, gmm_clean_probability, gmm_input, min_max_normalise
from lcbooster.transforms import Views
from shared import distributed
from shared.data import TensorBatchDataset, make_loader, set_epoch
from shared.device import autocast, grad_scaler
from shared.logging import Progress


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
    """One (``ce``) or two (``dividemix``, ``lcbooster``) networks and all state a run needs to resume."""

    def __init__(
        self,
        config: TrainConfig,
        networks: list[nn.Module],
        data: TrainData,
        device: torch.device,
        *,
        seed: int = 0,
        amp: bool = False,
        eval_batch_size: int = 512,
        progress: bool = True,
    ) -> None:
        self.config, self.device, self.seed, self.amp = config, device, seed, amp
        self.data = data.to(device)
        self.models = [distributed.wrap_model(net, device) for net in networks]
        self.optimizers = [
            torch.optim.SGD(m.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
            for m in self.models
        ]
        self.scalers = [grad_scaler(device, amp) for _ in self.models]
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
        return Progress(loader, desc=desc) if self.progress else loader

    def _step(self, k: int, loss: torch.Tensor) -> None:
        optimizer, scaler = self.optimizers[k], self.scalers[k]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def set_lr(self, epoch: int) -> float:
        lr = scheduled_lr(self.config, epoch)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    # ------------------------------------------------------------------ phases
    def warmup_epoch(self, k: int, epoch: int) -> float:
        """CE on all samples with the current labels (spec §3.2), plus the confidence penalty if configured."""
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
        """w of every sample from net k: CE against ``cur_targets``, min-max, history average, GMM (§3.3)."""
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
        """One co-divide pass of net k on the division (and w) made by the other net (spec §3.4-§3.6)."""
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
                p_x = w_x * y + (1 - w_x) * p_x  # co-refinement
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
            loss = loss_x + weight_u * loss_u + cfg.lambda_p * penalty
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
        """LC-Booster's reliable label correction (§3.7): both nets, averaged logits, hard overwrite at τ."""
        mean_logits = (self._gathered_logits(self.cores[0]) + self._gathered_logits(self.cores[1])).cpu() / 2
        scope = None
        if self.config.relabel_scope == "unlabel" and divisions is not None:
            scope = (~divisions[0] & ~divisions[1]).nonzero().squeeze(1)
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
