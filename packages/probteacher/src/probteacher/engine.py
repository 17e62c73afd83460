"""Training and evaluation of Probabilistic Teacher (Chen et al., ICML 2022): :func:`fit`, :func:`evaluate`,
:func:`evaluate_file`.

One loop, as the official ``PTrainer`` (``pt/engine/trainer.py``):

- burn-in (iterations < ``burn_in``; every iteration with ``method="source-only"``): each source image gives a weak
  view (horizontal flip) and a strong view of the same geometry (colour jitter, grey, blur, solarize); both are
  scale-down pasted; the student's supervised loss (RPN + ROI classification and Gaussian NLL) on the strong and
  weak views together;
- at ``burn_in`` the student is copied into the teacher; from then on, every iteration and *before* the student
  step, the teacher becomes an EMA of the student (whole state_dict, anchors included); the teacher's detections
  on the weak target views become soft pseudo-labels (logits + variances, no threshold), attached to the strong
  target views; strong source and strong target views are scale-down pasted; the loss is
  ``source_weight * supervised(strong + weak source) + target_weight * unsupervised(strong target)``, the
  unsupervised losses being the soft cross-entropy / Gaussian KL weighted by the Entropy Focal Loss, and the only
  one that moves the learnable anchors (the RPN localisation term);
- every step: total gradient norm clipped at ``grad_clip`` (10), SGD with momentum and a linear warm-up (the
  release's only lr step sits at its last iteration, so the lr is constant after the warm-up). Anchors get
  ``anchor_weight_decay`` (0 unless ``compat="official"``: the release decays them with the other weights,
  shrinking them while their gradient is zero).

``hard_threshold`` replaces the soft pseudo-labels by the teacher's boxes with class probability >= threshold,
trained with the supervised loss (the self-training ablation).

:func:`fit` owns a run's files: ``config.json``, ``metrics.jsonl`` (per log step: the 4 supervised and 4
unsupervised losses, the total, pseudo boxes per image, the anchors' (w, h) and mean area, lr, it/s),
``eval.jsonl`` (iteration, split, model, AP), ``checkpoint-<iteration>.pt`` (student, teacher, optimizer,
scheduler, AMP scaler, RNG, loader positions, log window: ``resume`` continues exactly), ``final.pt`` (student
and teacher weights and the configuration that rebuilds them) and ``results.json``.
Under torchrun the student is wrapped in DDP and each process reads its shard of every batch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset

from probteacher import toy
from probteacher.anchors import LearnableAnchorGenerator
from probteacher.config import METRICS, TrainConfig, from_plain, to_plain
from probteacher.data import InfiniteBatches, collate, load_dataset
from probteacher.ema import copy_into, ema_update, make_teacher
from probteacher.evaluation import coco_map, evaluate_detections
from probteacher.models import build_detector
from probteacher.pseudo import teacher_pseudo_labels
from probteacher.transforms import scale_down_paste, strong_view, weak_view
from shared import checkpoint, distributed
from shared.data import cache_dir
from shared.device import AmpScaler, autocast, seed_everything
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, format_record, get_logger
from shared.report import plain_json

LOSS_KEYS = ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg")
SPLITS = ("source", "target", "target_test", "source_test")


# ---------------------------------------------------------------------------------------------------- data
def toy_key(config: TrainConfig) -> str:
    """The cache folder name of the synthetic pair ``config`` asks for (generator version and parameters)."""
    return toy.toy_dataset_key(**_toy_arguments(config))


def _toy_arguments(config: TrainConfig) -> dict[str, Any]:
    return {
        "n_source_train": config.toy_source_train,
        "n_target_train": config.toy_target_train,
        "n_test": config.toy_test,
        "size": config.toy_size,
        "objects": config.toy_objects,
        "fog_level": config.toy_fog_level,
        "scale_shift": config.task_info.scale_shift,
        "seed": config.toy_seed,
    }


def resolve_data(config: TrainConfig, *, quiet: bool = False) -> dict[str, str | None]:
    """The dataset specs of the run; for a toy task the pair is generated once into the cache (by the main
    process, into a temporary folder renamed into place: an interrupted generation leaves nothing behind)."""
    if not config.task_info.toy:
        return {name: getattr(config, name) for name in SPLITS}
    root = cache_dir("probteacher", toy_key(config))
    if distributed.is_main_process():
        if not quiet and not (root / "meta.json").is_file():
            get_logger().info(f"generating the {config.task} pair once into {root}")
        root = toy.cached_toy_fog(**_toy_arguments(config))
    distributed.barrier()
    return {
        "source": f"voc:{root / 'source'}:train",
        "target": f"voc:{root / 'target'}:train",
        "target_test": f"voc:{root / 'target'}:test",
        "source_test": f"voc:{root / 'source'}:test",
    }


def load_split(spec: str, class_names: Sequence[str], what: str) -> Dataset:
    """The dataset of ``spec``; a split without images is a one-line UserError naming ``what``."""
    dataset = load_dataset(spec, class_names)
    if len(dataset) == 0:
        raise UserError(f"the {what} split {spec} has no images: list some in its split file")
    return dataset


def _with_boxes(dataset: Dataset, spec: str) -> Dataset:
    """The images that hold at least one box (the official loader drops the others from the labelled source)."""
    keep = [i for i, record in enumerate(dataset.records) if len(record.boxes)]
    if not keep:
        raise UserError(f"the source split {spec} holds no boxes: a labelled source needs annotations")
    return dataset if len(keep) == len(dataset) else Subset(dataset, keep)


def _generator(seed: int, iteration: int, rank: int) -> torch.Generator:
    """The augmentation generator of one iteration of one process (a function of its arguments: exact resume)."""
    state = np.random.SeedSequence([seed, iteration, rank]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _box_target(target: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {"boxes": target["boxes"].to(device), "labels": target["labels"].to(device)}


def source_views(
    images: list[torch.Tensor],
    targets: list[dict[str, Any]],
    g: torch.Generator,
    device: torch.device,
    *,
    paste_weak: bool,
    paste_strong: bool,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Strong views then weak views of a source batch (the official supervised batch ``q + k``)."""
    strong, strong_t, weak, weak_t = [], [], [], []
    for image, target in zip(images, targets, strict=True):
        w, wt = weak_view(image.to(device), _box_target(target, device), g)
        s, st = strong_view(w, g), wt
        if paste_strong:
            s, st = scale_down_paste(s, st, g)
        if paste_weak:
            w, wt = scale_down_paste(w, wt, g)
        strong.append(s), strong_t.append(st), weak.append(w), weak_t.append(wt)
    return strong + weak, strong_t + weak_t


def target_views(
    images: list[torch.Tensor], targets: list[dict[str, Any]], g: torch.Generator, device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weak (flip) and strong views of a target batch; the target labels are never used."""
    weak, strong = [], []
    for image, target in zip(images, targets, strict=True):
        w, _ = weak_view(image.to(device), _box_target(target, device), g)
        weak.append(w), strong.append(strong_view(w, g))
    return weak, strong


# ---------------------------------------------------------------------------------------------------- model
class StudentStep(nn.Module):
    """The student's losses of one iteration in one forward (so DDP sees a single forward per backward):
    supervised on the source views, and on the strong target views either unsupervised (soft pseudo-labels) or,
    for the hard-threshold ablation, supervised."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(
        self,
        source_images: list[torch.Tensor],
        source_targets: list[dict[str, torch.Tensor]],
        target_images: list[torch.Tensor] | None = None,
        target_labels: list[dict[str, torch.Tensor]] | None = None,
        target_mode: str = "unsupervised",
    ) -> dict[str, torch.Tensor]:
        losses = self.student(source_images, source_targets, mode="supervised")
        out = {f"{k}_sup": losses[k] for k in LOSS_KEYS}
        if target_images is not None:
            losses = self.student(target_images, target_labels, mode=target_mode)
            out |= {f"{k}_unsup": losses[k] for k in LOSS_KEYS}
        return out


def adaptation_losses(
    model: nn.Module,
    teacher: nn.Module,
    config: TrainConfig,
    source_images: list[torch.Tensor],
    source_targets: list[dict[str, torch.Tensor]],
    target_images: list[torch.Tensor],
    target_records: list[dict[str, Any]],
    *,
    g: torch.Generator,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The losses of one adaptation iteration (the official ``PTrainer.run_step``): the teacher's pseudo-labels on
    the weak target views, pasted with the strong views, then the student (``model``, a :class:`StudentStep`)
    supervised on the source views and unsupervised on the strong target views.

    Returns the 8 losses, ``source_weight * sum(sup) + target_weight * sum(unsup)`` and the pseudo-labels.
    """
    weak, strong = target_views(target_images, target_records, g, device)
    with autocast(device, config.amp):
        pseudo = teacher_pseudo_labels(teacher, weak, hard_threshold=config.hard_threshold)
    pseudo = [{k: v.float() if v.is_floating_point() else v for k, v in p.items()} for p in pseudo]
    if config.scale_down_paste:
        pasted = [scale_down_paste(s, p, g) for s, p in zip(strong, pseudo, strict=True)]
        strong, pseudo = [s for s, _ in pasted], [p for _, p in pasted]
    mode = "supervised" if config.hard_threshold is not None else "unsupervised"
    with autocast(device, config.amp):
        losses = model(source_images, source_targets, strong, pseudo, mode)
    sup = sum(v for k, v in losses.items() if k.endswith("_sup"))
    unsup = sum(v for k, v in losses.items() if k.endswith("_unsup"))
    return losses, config.source_weight * sup + config.target_weight * unsup, pseudo


def anchor_generators(model: nn.Module) -> list[LearnableAnchorGenerator]:
    return [m for m in model.modules() if isinstance(m, LearnableAnchorGenerator)]


def anchor_wh(model: nn.Module) -> list[list[list[float]]]:
    """The (w, h) of every anchor, per feature level."""
    return [wh.detach().cpu().tolist() for gen in anchor_generators(model) for wh in gen.anchor_wh]


def mean_anchor_area(model: nn.Module) -> float:
    areas = [wh.detach().prod(dim=1) for gen in anchor_generators(model) for wh in gen.anchor_wh]
    return float(torch.cat(areas).mean()) if areas else float("nan")


def _anchor_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for gen in anchor_generators(model) for p in gen.anchor_wh]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the release) or AdamW over the trainable parameters; the anchors in their own group
    with ``anchor_lr`` and ``anchor_weight_decay``. AdamW runs fused (one kernel per parameter) on CPU and CUDA:
    8x faster than torch's per-tensor default on the tiny detector's CPU step (9.0 against 1.1 ms, 2 threads)."""
    anchors = _anchor_parameters(model)
    ids = {id(p) for p in anchors}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": rest, "weight_decay": config.weight_decay}]
    if anchors:
        anchor_lr = config.lr if config.anchor_lr is None else config.anchor_lr
        groups.append({"params": anchors, "weight_decay": config.anchor_weight_decay, "lr": anchor_lr})
    if config.optimizer == "adamw":
        fused = all(p.device.type in ("cpu", "cuda") for group in groups for p in group["params"])
        return torch.optim.AdamW(groups, lr=config.lr, fused=fused or None)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def warmup_factor(config: TrainConfig, iteration: int) -> float:
    """detectron2's linear warm-up: ``f + (1 - f) * i / warmup_iters`` before ``warmup_iters``, then 1."""
    if iteration >= config.warmup_iters:
        return 1.0
    alpha = iteration / config.warmup_iters
    return config.warmup_factor * (1 - alpha) + alpha


def build_models(config: TrainConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """The student (seeded from ``config.seed``) and its frozen teacher copy, on ``device``."""
    seed_everything(config.seed)
    try:
        student = build_detector(config.detector_config())
    except (ValueError, TypeError) as exc:
        raise UserError(f"impossible detector configuration: {exc}") from None
    student = student.to(device)
    teacher = make_teacher(student).eval()
    return student, teacher


# ---------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, device: torch.device, *, batch_size: int = 8, amp: bool = False
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Detections (boxes, scores, labels) and ground truths of every image of ``dataset``, in dataset order.

    Under torchrun each process predicts every ``world``-th image and the lists are gathered on all processes.
    """
    was_training = model.training
    model.eval()
    rank, world = distributed.get_rank(), distributed.get_world_size()
    indices = list(range(rank, len(dataset), world))
    mine = []
    for start in range(0, len(indices), batch_size):
        images, targets = collate([dataset[i] for i in indices[start : start + batch_size]])
        with autocast(device, amp):
            outputs = model([im.to(device) for im in images], mode="inference")
        for index, out, target in zip(indices[start : start + batch_size], outputs, targets, strict=True):
            det = {
                k: out[k].float().cpu().numpy() if k != "labels" else out[k].cpu().numpy()
                for k in ("boxes", "scores", "labels")
            }
            gt = {"boxes": target["boxes"].numpy(), "labels": target["labels"].numpy()}
            if "difficult" in target:
                gt["difficult"] = target["difficult"].numpy()
            mine.append((index, det, gt))
    model.train(was_training)
    if distributed.is_distributed():
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, mine)
        mine = [item for part in gathered for item in part]
    mine.sort(key=lambda item: item[0])
    return [d for _, d, _ in mine], [g for _, _, g in mine]


def score(detections, ground_truths, class_names: Sequence[str], metric: str = "voc12") -> dict[str, Any]:
    """``voc12``: all-point VOC AP50 (the release's evaluator); ``voc07``: 11-point; ``coco``: AP@[.5:.95]."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if metric == "coco":
        return coco_map(detections, ground_truths, class_names)
    return evaluate_detections(detections, ground_truths, class_names, use_07=metric == "voc07")


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    *,
    class_names: Sequence[str] | None = None,
    batch_size: int = 8,
    metric: str = "voc12",
    amp: bool = False,
) -> dict[str, Any]:
    """AP of ``model``'s detections on ``dataset`` (VOC AP50 all-point by default: ``AP50`` and ``per_class``)."""
    names = class_names if class_names is not None else dataset.class_names
    detections, ground_truths = predict(model, dataset, device, batch_size=batch_size, amp=amp)
    return score(detections, ground_truths, names, metric)


# ---------------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class _Window:
    """Sums and counts of the logged values since the last log line (a value may be absent in burn-in)."""

    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: v / self.counts[k] for k, v in self.sums.items()}


def _meta(config: TrainConfig) -> dict[str, Any]:
    return {
        "config": to_plain(config),
        "detector": plain_json(config.detector_config()),
        "classes": list(config.class_names),
    }


def fit(
    config: TrainConfig,
    out: str | os.PathLike,
    device: torch.device,
    *,
    resume: bool = False,
    quiet: bool = False,
    stop_after: int | None = None,
    start_from: str | os.PathLike | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``config`` into ``out`` and return the results (also ``results.json``).

    ``resume`` continues from the newest checkpoint in ``out`` with the result of an uninterrupted run.
    ``stop_after`` ends after that many iterations with a checkpoint (no final evaluation; returns the
    progress), as an interrupted run would. ``start_from`` starts from another run's checkpoint taken during
    burn-in (at most ``burn_in`` iterations, so the two runs share it): the reproduction trains one burn-in per
    seed and branches source-only and every PT variant from it. ``info`` is recorded in ``config.json``.
    """
    out = Path(out)
    log = get_logger()
    if config.iterations < 1:
        raise UserError(f"--iterations must be at least 1 (a run without a training step), got {config.iterations}")
    latest = checkpoint.resume_checkpoint(out) if resume else None
    branched = latest is None and start_from is not None
    if branched:
        latest = require_path(start_from, "checkpoint to start from", kind="file")
    if distributed.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    rank, world = distributed.get_rank(), distributed.get_world_size()
    for name, size in (("source", config.batch_source), ("target", config.batch_target)):
        if size % world:
            raise UserError(f"the {name} batch {size} (images per step) must be a multiple of the {world} processes")
    adapt = config.method == "pt"
    names = config.class_names
    specs = resolve_data(config, quiet=quiet)
    source = _with_boxes(load_split(specs["source"], names, "source"), specs["source"])
    target = load_split(specs["target"], names, "target") if adapt else None
    tests = {name: load_split(specs[name], names, name) for name in ("target_test", "source_test") if specs[name]}
    student, teacher = build_models(config, device)
    model = distributed.wrap_model(
        StudentStep(student), device, **({"find_unused_parameters": True} if distributed.is_distributed() else {})
    )
    optimizer = build_optimizer(student, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: warmup_factor(config, i))
    scaler = AmpScaler(device, config.amp)
    decayed = config.anchor_weight_decay > 0
    anchor_params = [p for p in _anchor_parameters(student) if p.requires_grad] if decayed else []
    metrics, evals = MetricsWriter(out / "metrics.jsonl"), MetricsWriter(out / "eval.jsonl")
    start, window = 0, _Window()
    counters = {"seconds": 0.0, "burn_in_seconds": 0.0, "burn_in_steps": 0, "adapt_seconds": 0.0, "adapt_steps": 0}
    counters |= {"pseudo_boxes": 0, "pseudo_images": 0}
    positions = {"source": 0, "target": 0}
    initial_anchors = anchor_wh(student)
    if latest is not None:
        saved = checkpoint.load_checkpoint(latest, map_location=device)
        state = checkpoint.restore_training_state(saved, student, optimizer, scheduler, scaler)
        extra = state["extra"]
        teacher.load_state_dict(extra["teacher"])
        start, positions, counters = state["step"], dict(extra["positions"]), dict(extra["counters"])
        if branched and start > (config.burn_in if config.method == "pt" else config.iterations):
            raise UserError(f"{latest} is past the burn-in ({start} iterations): branch from a burn-in checkpoint")
        window = _Window(dict(extra["window"]), dict(extra["window_counts"]))
        initial_anchors = extra["initial_anchors"]
        if distributed.is_main_process() and not branched:
            metrics.rewind("iteration", start)
            evals.rewind("iteration", start)
        if not quiet:
            log.info(f"{'branched' if branched else 'resumed'} from {latest} at iteration {start}")
    if distributed.is_main_process() and (latest is None or branched):
        origin = {"started_from": str(latest)} if branched else {}
        checkpoint.save_json(out / "config.json", {**_meta(config), "data": specs, **origin, **(info or {})})
    end = config.iterations if stop_after is None else min(config.iterations, max(start, stop_after))
    if not quiet:
        sizes = ", ".join(f"{n} {len(d)}" for n, d in (("source", source), ("target", target), *tests.items()) if d)
        log.info(
            f"probteacher: {config.method} on {config.task} ({config.detector}), images: {sizes}; "
            f"{config.iterations} iterations (burn-in {config.burn_in}) of {config.batch_source}+"
            f"{config.batch_target} images, {world} process(es) -> {out}"
        )
    sources = InfiniteBatches(
        source, config.batch_source // world, config.seed, rank, world, positions["source"], config.workers
    )
    targets = (
        InfiniteBatches(
            target, config.batch_target // world, config.seed + 1, rank, world, positions["target"], config.workers
        )
        if adapt
        else None
    )
    model.train()
    started = time.monotonic()
    tick, tick_it = started, start

    def save_checkpoint(it: int) -> None:
        extra = {
            **_meta(config),
            "teacher": teacher.state_dict(),
            "positions": {"source": sources.batches_drawn, "target": targets.batches_drawn if targets else 0},
            "counters": counters,
            "window": dict(window.sums),
            "window_counts": dict(window.counts),
            "initial_anchors": initial_anchors,
        }
        state = checkpoint.training_state(student, optimizer, scheduler, scaler, step=it, epoch=0, **extra)
        if distributed.is_main_process():
            checkpoint.save_training_checkpoint(out, it, state, keep=config.keep_checkpoints)

    def run_eval(it: int) -> dict[str, dict[str, Any]]:
        models = {"student": student}
        if adapt and it > config.burn_in:
            models["teacher"] = teacher
        result: dict[str, dict[str, Any]] = {}
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for split, dataset in tests.items():
                for which, net in models.items():
                    result.setdefault(split, {})[which] = evaluate(
                        net,
                        dataset,
                        device,
                        class_names=names,
                        batch_size=config.eval_batch_size,
                        metric=config.eval_metric,
                        amp=config.amp,
                    )
                    evals.write({"iteration": it, "split": split, "model": which, **result[split][which]})
        if not quiet:
            parts = [f"{s} {w} {m.get('AP50', float('nan')):.3f}" for s, r in result.items() for w, m in r.items()]
            log.info(f"eval @ {it} ({config.eval_metric} AP50): " + ", ".join(parts))
        return result

    iteration = start
    while iteration < end:
        step_start = time.monotonic()
        burn = not adapt or iteration < config.burn_in
        g = _generator(config.seed, iteration, rank)
        images, labels = source_views(
            *next(sources), g, device, paste_weak=burn and config.scale_down_paste, paste_strong=config.scale_down_paste
        )
        values: dict[str, float] = {}
        if burn:
            with autocast(device, config.amp):
                losses = model(images, labels)
            total = config.source_weight * sum(losses.values())
        else:
            if iteration == config.burn_in:
                copy_into(teacher, student)
            else:
                ema_update(teacher, student, config.ema_keep_rate)
            losses, total, pseudo = adaptation_losses(
                model, teacher, config, images, labels, *next(targets), g=g, device=device
            )
            boxes = sum(len(p["boxes"]) for p in pseudo)
            counters["pseudo_boxes"] += boxes
            counters["pseudo_images"] += len(pseudo)
            values["pseudo_boxes_per_image"] = boxes / len(pseudo)
        if not torch.isfinite(total):
            raise UserError(
                f"the loss is {float(total)} at iteration {iteration + 1}: lower --lr (or turn off --amp) and rerun"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.backward(total.float())
        for p in anchor_params:  # the release decays anchors whose gradient is zero, not absent
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        scaler.step(optimizer, clip_grad=config.grad_clip)
        scheduler.step()
        iteration += 1
        elapsed = time.monotonic() - step_start
        phase = "burn_in" if burn else "adapt"
        counters[f"{phase}_seconds"] += elapsed
        counters[f"{phase}_steps"] += 1
        values |= {k: float(v.detach()) for k, v in losses.items()}
        values["total"] = float(total.detach())
        window.add(values)
        if iteration % config.log_every == 0 or iteration == config.iterations:
            now = time.monotonic()
            rate = (iteration - tick_it) / max(now - tick, 1e-9)
            record = {"iteration": iteration, **window.means(), "anchor_area": mean_anchor_area(student)}
            record |= {"lr": optimizer.param_groups[0]["lr"], "it_s": rate}
            metrics.write({**record, "anchor_wh": anchor_wh(student)})
            if not quiet:
                eta = (config.iterations - iteration) / max(rate, 1e-9)
                log.info(f"{format_record(record)} eta={eta:.0f}s")
            window, tick, tick_it = _Window(), now, iteration
        if iteration % config.checkpoint_every == 0 or iteration == end:
            counters["seconds"] += time.monotonic() - started
            started = time.monotonic()
            save_checkpoint(iteration)
        if config.eval_every and iteration % config.eval_every == 0 and iteration < config.iterations:
            run_eval(iteration)
    if iteration < config.iterations:
        distributed.barrier()
        return {"iterations": iteration, "stopped": True}
    counters["seconds"] += time.monotonic() - started
    final = run_eval(iteration)
    results = {
        "method": config.method,
        "task": config.task,
        "detector": config.detector,
        "iterations": iteration,
        "burn_in": config.burn_in if adapt else iteration,
        "seconds": round(counters["seconds"], 1),
        "seconds_per_iteration": {
            phase: round(counters[f"{key}_seconds"] / counters[f"{key}_steps"], 4)
            for phase, key in (("burn_in", "burn_in"), ("adaptation", "adapt"))
            if counters[f"{key}_steps"]
        },
        **final,
        "pseudo_boxes_per_image": counters["pseudo_boxes"] / counters["pseudo_images"]
        if counters["pseudo_images"]
        else None,
        "anchor_wh": {"initial": initial_anchors, "student": anchor_wh(student)},
        "anchor_area": {
            "initial": _area(initial_anchors),
            "student": mean_anchor_area(student),
            "teacher": mean_anchor_area(teacher) if adapt else None,
        },
    }
    if distributed.is_main_process():
        weights = {"student": student.state_dict(), "teacher": teacher.state_dict() if adapt else None}
        checkpoint.save_checkpoint(out / "final.pt", {**weights, **_meta(config)})
        checkpoint.save_json(out / "results.json", results)
    distributed.barrier()
    return results


def _area(wh: list[list[list[float]]]) -> float:
    """:func:`mean_anchor_area` of saved (w, h) lists (same float32 arithmetic)."""
    areas = [torch.tensor(level).prod(dim=1) for level in wh]
    return float(torch.cat(areas).mean()) if areas else math.nan


# ---------------------------------------------------------------------------------------------------- loading
def load_detector(path: str | os.PathLike, which: str = "teacher") -> tuple[nn.Module, TrainConfig]:
    """The ``which`` ("teacher" or "student") detector of a ``final.pt`` or ``checkpoint-<iteration>.pt``
    written by :func:`fit`, in eval mode, and the run's configuration."""
    if which not in ("teacher", "student"):
        raise UserError(f"--which must be teacher or student, got {which!r}")
    path = require_path(path, "--weights", kind="file")
    saved = checkpoint.load_checkpoint(path)
    meta = saved.get("extra", saved) if isinstance(saved, dict) else {}
    if not isinstance(meta, dict) or "config" not in meta:
        raise UserError(f"{path} is not a file written by probteacher-train (final.pt or checkpoint-<iteration>.pt)")
    weights = (saved["model"] if which == "student" else meta["teacher"]) if "extra" in saved else saved[which]
    config = from_plain(meta["config"])
    if weights is None:
        raise UserError(f"{path} holds no teacher (a {config.method} run): use --which student")
    config = dataclasses.replace(config, weights=None)
    seed_everything(config.seed)
    detector = build_detector(config.detector_config())
    try:
        detector.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"{path} does not fit its own configuration ({first})") from None
    return detector.eval(), config


def evaluate_file(
    weights: str | os.PathLike,
    *,
    which: str = "teacher",
    data: str | None = None,
    classes: Sequence[str] | None = None,
    metric: str = "voc12",
    device: torch.device | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """AP of a saved student or teacher on ``data`` ("voc:ROOT:SPLIT" or "coco:JSON:IMAGES"; None: the run's
    target test split) with the run's classes unless ``classes`` is given (they must number as many)."""
    device = device or torch.device("cpu")
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    detector, config = load_detector(weights, which)
    names = tuple(classes) if classes else config.class_names
    if len(names) != len(config.class_names):
        raise UserError(
            f"--classes names {len(names)} classes but {weights} detects {len(config.class_names)} "
            f"({', '.join(config.class_names)})"
        )
    spec = data if data is not None else resolve_data(config, quiet=True)["target_test"]
    dataset = load_split(spec, names, "evaluation")
    result = evaluate(
        detector.to(device),
        dataset,
        device,
        class_names=names,
        batch_size=batch_size or config.eval_batch_size,
        metric=metric,
    )
    return {"weights": str(weights), "which": which, "data": spec, "images": len(dataset), "metric": metric, **result}
