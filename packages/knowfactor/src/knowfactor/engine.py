"""Training and evaluation: the teacher, the KD baseline and Knowledge Factorization, as the release trains them.

Every trainable model's ``forward(x, labels)`` returns a dict of loss terms (summed into the objective)
and ``forward(x)`` the per-task logits; labels are (B, N) class indices, one column a task. SGD with
momentum, mmcv's step or cosine policy per epoch, gradient-norm clipping (the release's ``grad_clip``).

:func:`fit` runs a whole configuration and owns its files (``config.json``, ``metrics.jsonl``, one checkpoint
per epoch, the weights, ``results.json``) and ``--resume``. Weight files: ``teacher.pt`` (mmcls classifier
layout ``backbone.*``, ``head.*``), ``kf.pt`` (the official KF layout: ``student.*``, ``teacher.*``,
``feat_fcs.*``), ``kd.pt``, one ``factors/<task>.pt`` per task (``CKN.*``, ``TSN.*``, ``head.*``: all a
single task needs) and the assembled networks of :func:`assemble_factors`; each holds ``state_dict`` and the
metadata to rebuild its model. :func:`load_network`, :func:`load_factor` and :func:`evaluate_file` read them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from knowfactor.config import Recipe, TrainConfig, get_config, teacher_config
from knowfactor.data import MultiTaskData, load_multitask, select_tasks
from knowfactor.models import (
    AssembledNetwork,
    ClassifierModel,
    FactorNetwork,
    MultiTaskClassifier,
    assemble,
    build_kd,
    build_kd_student,
    build_kf,
    build_student,
    build_teacher,
    factor_network,
)
from shared import checkpoint, distributed
from shared.data import TensorBatchDataset, make_loader, set_epoch
from shared.device import AmpScaler, autocast, seed_everything
from shared.distributed import all_reduce_sum
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, Progress, format_record, get_logger

EVAL_BATCH_SIZE = 256


def build_optimizer(model: nn.Module, lr: float, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's SGD or Adam over every trainable parameter (the student and the projectors; the teacher is
    frozen)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def scheduled_lr(epoch: int, lr: float, epochs: int, milestones: Sequence[int], cosine: bool = False) -> float:
    """mmcv's policies: cosine annealing to 0 over ``epochs``, or ×0.1 at every milestone reached."""
    if cosine:
        return 0.5 * lr * (1 + math.cos(math.pi * epoch / epochs))
    return lr * 0.1 ** sum(epoch >= m for m in milestones)


def train_epoch(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    scaler: AmpScaler,
    device: torch.device,
    *,
    clip: float | None = None,
    amp: bool = False,
    desc: str = "train",
    augment: Callable[[torch.Tensor, torch.Tensor], tuple] | None = None,
) -> dict[str, float]:
    """One epoch; returns the mean of every loss term (and ``loss``, their sum) over all processes.

    ``augment(images, labels)`` gives the network's input and targets of a batch (the dataset's train pipeline,
    :meth:`knowfactor.transforms.Pipeline.train_batch`).
    """
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    sums: dict[str, torch.Tensor] = {}
    count = 0
    progress = Progress(batches, desc=desc)
    for images, labels in progress:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if augment is not None:
            images, labels = augment(images, labels)
        with autocast(device, amp):
            terms = model(images, labels)
        terms = {name: value.float() for name, value in terms.items()}
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        scaler(loss, optimizer, clip_grad=clip, parameters=trainable)
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


def eval_loader(x: torch.Tensor, y: torch.Tensor):
    """The whole split ``(x, y)`` in order, on every process (exact evaluation)."""
    return make_loader(TensorBatchDataset(x, y), EVAL_BATCH_SIZE, shard=False)


def load_data(config: str, path: Path | None = None, tasks: Sequence[str] | None = None) -> MultiTaskData:
    """The dataset of setting ``config`` from ``path`` (its real format), or its embedded default; resized as
    the setting says, restricted to ``tasks`` (default: all)."""
    setting = get_config(config)
    return load_multitask(setting.dataset, path, tasks=tasks, image_size=setting.image_size)


def load_teacher(
    path: Path, config: str, task_classes: Sequence[int], task_names: Sequence[str] | None = None
) -> MultiTaskClassifier:
    """A trained teacher (``teacher.pt`` or an mmcls classifier checkpoint) that must fit the data's tasks."""
    state = checkpoint.load_checkpoint(require_path(path, "--teacher", kind="file"))
    weights = state.get("state_dict", state)
    heads = sorted(k for k in weights if k.startswith("head.") and k.endswith(".weight"))
    if len(heads) != len(task_classes):
        raise UserError(
            f"--teacher {path} has {len(heads)} task head(s) but the data has {len(task_classes)} task(s): "
            "train the teacher on the same tasks (--method teacher --tasks ...)"
        )
    if "task_names" in state and task_names is not None and list(state["task_names"]) != list(task_names):
        raise UserError(
            f"--teacher {path} was trained on tasks {list(state['task_names'])}, not {list(task_names)}: "
            "train the teacher on the same --tasks"
        )
    teacher = build_teacher(get_config(config), task_classes)
    try:
        teacher.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"--teacher {path} does not fit config {config} ({first})") from None
    return teacher.eval()


def build_training_model(config: TrainConfig, data: MultiTaskData, device: torch.device, out: Path) -> nn.Module:
    """The model ``fit`` trains: the teacher, or KF / KD around a trained teacher.

    KF and KD without ``config.teacher`` (``train_teacher``) first :func:`fit` the :func:`teacher_config` into
    ``out/teacher``, resuming it where a checkpoint is there, unless ``out/teacher/teacher.pt`` exists.
    """
    setting, classes = config.setting, data.task_classes
    if config.method == "teacher":
        return ClassifierModel(build_teacher(setting, classes), setting.label_smoothing)
    path = config.teacher
    if path is None:
        folder = out / "teacher"
        path = folder / "teacher.pt"
        if not path.exists():
            get_logger().info(f"no --teacher: training one first into {folder}")
            folder.mkdir(parents=True, exist_ok=True)
            resume = checkpoint.latest(folder) is not None
            fit(teacher_config(config), folder, device, resume=resume, data=data, quiet=True)
            distributed.barrier()
    teacher = load_teacher(path, config.config, classes, data.task_names).to(device)
    weights = {"temperature": config.temperature, "lambda_kd": config.lambda_kd}
    if config.method == "kd":
        return build_kd(setting, teacher, classes, **weights, label_smoothing=config.kd_label_smoothing)
    weights |= {"lambda_feat": config.lambda_feat, "beta": config.beta}
    return build_kf(setting, teacher, classes, **weights, official_teacher_bn=config.official_teacher_bn)


def fit(
    config: TrainConfig,
    out: Path,
    device: torch.device,
    *,
    resume: bool = False,
    data: MultiTaskData | None = None,
    info: dict | None = None,
    quiet: bool = False,
) -> dict:
    """Train ``config`` into ``out`` and return the results (also written to ``results.json``).

    ``resume`` continues from the latest checkpoint in ``out`` with the result of an uninterrupted run.
    ``data`` (default: :func:`load_data` of the configuration) lets several runs share data read once; it is
    restricted to ``config.tasks``. ``info`` is recorded in ``config.json`` beside the configuration.
    """
    out = Path(out)
    log = get_logger()
    recipe = config.setting.recipe
    if data is None:
        data = load_data(config.config, config.data, config.tasks)
    elif config.tasks is not None:
        data = select_tasks(data, list(config.tasks))
    if len(data.x_train) < config.batch_size:
        raise UserError(f"--batch-size {config.batch_size} exceeds the {len(data.x_train)} training images")
    seed_everything(config.seed)
    model = build_training_model(config, data, device, out)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model = distributed.wrap_model(model, device)
    core = distributed.unwrap_model(model)
    optimizer = build_optimizer(model, config.lr, recipe)
    scaler = AmpScaler(device, config.amp)
    # full batches only: the projectors' BatchNorm and the batch-Gaussian bottleneck need >= 2 samples
    train_set = TensorBatchDataset(data.x_train, data.y_train)
    loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed, drop_last=True)
    test_loader = eval_loader(data.x_test, data.y_test)
    milestones = [round(m * config.epochs / recipe.epochs) for m in recipe.milestones]
    start = 0
    if resume:
        latest = checkpoint.resume_checkpoint(out)
        state = checkpoint.restore_training_state(checkpoint.load_checkpoint(latest), core, optimizer, scaler=scaler)
        start = state["epoch"]
    elif distributed.is_main_process():
        record = {**dataclasses.asdict(config), **(info or {}), "trainable_parameters": trainable}
        record["pipeline"] = data.pipeline.record()
        checkpoint.save_json(out / "config.json", record | {"task_names": data.task_names})
    metrics = MetricsWriter(out / "metrics.jsonl")
    metrics.rewind("epoch", start)  # records past the checkpoint: written before an interruption
    log.info(f"knowfactor: {config.method} on {data.name} ({config.config}), {config.epochs} epochs -> {out}")
    started = time.monotonic()
    for epoch in range(start, config.epochs):
        set_epoch(loader, epoch)
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(epoch, config.lr, config.epochs, milestones, recipe.cosine)
        losses = train_epoch(
            model,
            loader,
            optimizer,
            scaler,
            device,
            clip=config.grad_clip,
            amp=config.amp,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            augment=functools.partial(data.pipeline.train_batch, task_classes=data.task_classes),
        )
        record = {"epoch": epoch + 1, **losses}
        metrics.write(record)
        if not quiet:
            log.info(format_record(record))
        state = checkpoint.training_state(core, optimizer, None, scaler, epoch=epoch + 1)
        checkpoint.save_training_checkpoint(out, epoch + 1, state)
    accuracy = task_accuracy(core, test_loader, device)
    results = {
        "method": config.method,
        "config": config.config,
        "tasks": dict(zip(data.task_names, accuracy, strict=True)),
        "trainable_parameters": trainable,
        "train_seconds": round(time.monotonic() - started, 1),
    }
    if distributed.is_main_process():
        _save_weights(out, config, core, data)
        checkpoint.save_json(out / "results.json", results)
    return results


def _save_weights(out: Path, config: TrainConfig, core: nn.Module, data: MultiTaskData) -> None:
    """The trained networks of ``core`` in the files described in the module docstring."""
    meta = {
        "config": config.config,
        "data": None if config.data is None else str(config.data.resolve()),
        "task_names": list(data.task_names),
        "task_classes": list(data.task_classes),
    }
    if config.method == "teacher":
        checkpoint.save_checkpoint(out / "teacher.pt", {"state_dict": core.classifier.state_dict(), **meta})
    elif config.method == "kd":
        checkpoint.save_checkpoint(out / "kd.pt", {"state_dict": core.student.state_dict(), "kind": "kd", **meta})
    else:
        checkpoint.save_checkpoint(out / "kf.pt", {"state_dict": core.state_dict(), "kind": "kf", **meta})
        for index, task in enumerate(data.task_names):
            factor = factor_network(core.student, index)
            single = {**meta, "kind": "factor", "task": task, "task_index": index}
            checkpoint.save_checkpoint(out / "factors" / f"{task}.pt", {"state_dict": factor.state_dict(), **single})


# --- the saved files ------------------------------------------------------------------------------------------------


def _read_weights(path: Path, what: str) -> dict:
    saved = checkpoint.load_checkpoint(require_path(path, what, kind="file"))
    if "config" not in saved:
        raise UserError(f"{path} was not written by knowfactor (no config): evaluate files it writes")
    return saved


def _network(saved: dict) -> nn.Module:
    """The network of a loaded weight file, in eval mode: a teacher or KD student (:class:`MultiTaskClassifier`),
    the KF student (:class:`KFStudent`, from ``kf.pt``), a :class:`FactorNetwork` or an :class:`AssembledNetwork`."""
    setting = get_config(saved["config"])
    kind = saved.get("kind", "teacher")
    state = saved["state_dict"]
    if kind == "factor":
        network = factor_network(build_student(setting, [saved["task_classes"][saved["task_index"]]]), 0)
    elif kind == "assembled":
        student = build_student(setting, saved["task_classes"])
        factors = [factor_network(student, i) for i in range(student.num_tasks)]
        network = AssembledNetwork(factors[0].CKN, [f.TSN for f in factors], [f.head for f in factors])
    elif kind == "kf":
        network = build_student(setting, saved["task_classes"])
        state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    else:
        network = (build_kd_student if kind == "kd" else build_teacher)(setting, saved["task_classes"])
    network.load_state_dict(state)
    return network.eval()


def load_network(path: Path) -> tuple[nn.Module, dict]:
    """The network of a file written by :func:`fit` or :func:`assemble_factors` (eval mode) and the file's contents.

    ``kf.pt`` gives the factorized student (CKN, TSNs and heads), without the teacher and the projectors.
    """
    saved = _read_weights(path, "--weights")
    return _network(saved), saved


def load_factor(path: Path) -> tuple[FactorNetwork, dict]:
    """A factor network file written by ``fit`` (``factors/<task>.pt``: nothing else needed)."""
    saved = _read_weights(path, "factor network")
    if saved.get("kind") != "factor":
        raise UserError(f"{path} is not a factor network file (kind {saved.get('kind')!r}): use factors/<task>.pt")
    return _network(saved), saved


def assemble_factors(paths: Sequence[Path], out: Path) -> dict:
    """Plug the factor networks of ``paths`` (one factorization) into one multi-task network, saved as ``out``.

    No fine-tuning: one CKN forward, one TSN and head per task. Returns the file's metadata.
    """
    loaded = [load_factor(path) for path in paths]
    network = assemble([factor for factor, _ in loaded])
    tasks = [meta["task"] for _, meta in loaded]
    if len(set(tasks)) != len(tasks):
        raise UserError(f"the factor networks repeat a task: {tasks}")
    meta = {
        "config": loaded[0][1]["config"],
        "data": loaded[0][1].get("data"),
        "kind": "assembled",
        "tasks": tasks,
        "task_indices": [m["task_index"] for _, m in loaded],
        "task_classes": [m["task_classes"][m["task_index"]] for _, m in loaded],
    }
    checkpoint.save_checkpoint(out, {"state_dict": network.state_dict(), **meta})
    return meta


class _SingleTask(nn.Module):
    """A single-task network seen as a one-task multi-task model (a list of one logit tensor)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.network(x)]


def evaluate_file(path: Path, device: torch.device, *, data: Path | None = None) -> dict:
    """Per-task test accuracy (%) of a file of :func:`fit` or :func:`assemble_factors`, on ``data`` (default: the
    data of the run that wrote it, recorded in the file as in its ``config.json``); for ``kf.pt`` also each factor
    network alone (``factors``)."""
    network, saved = load_network(path)
    network.to(device)
    kind = saved.get("kind", "teacher")
    names = saved.get("tasks") or ([saved["task"]] if kind == "factor" else saved["task_names"])
    if data is None:
        if "data" not in saved:
            raise UserError(f"{path} does not record the data it was trained on: give --data")
        data = None if saved["data"] is None else Path(saved["data"])
        if data is not None and not data.exists():
            raise UserError(f"{data}, the data of the run that wrote {path}, is not there: give --data")
    split = select_tasks(load_data(saved["config"], data), names)
    loader = eval_loader(split.x_test, split.y_test)
    results: dict = {"weights": str(path), "kind": kind}
    model = network
    if kind == "factor":
        model = _SingleTask(network)
    elif kind == "kf":
        factors = [factor_network(network, i) for i in range(network.num_tasks)]
        model = assemble(factors)
        results["factors"] = {
            task: task_accuracy(_SingleTask(factor), _column(loader, i), device)[0]
            for i, (task, factor) in enumerate(zip(names, factors, strict=True))
        }
    results["tasks"] = dict(zip(names, task_accuracy(model, loader, device), strict=True))
    return results


def _column(loader, index: int) -> list:
    return [(x, y[:, index : index + 1]) for x, y in loader]
