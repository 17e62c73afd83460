"""Console scripts: ``knowfactor-train``, ``knowfactor-eval``, ``knowfactor-assemble``, ``knowfactor-repro``.

Files written here: ``teacher.pt`` (mmcls classifier layout ``backbone.*``, ``head.*``), ``kf.pt`` (the
official KF layout: ``student.*``, ``teacher.*``, ``feat_fcs.*``), ``kd.pt``, and one
``factors/<task>.pt`` per task (``CKN.*``, ``TSN.*``, ``head.*``: all a single task needs). Each holds
``state_dict`` and the metadata to rebuild its model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from knowfactor import data as kdata
from knowfactor.configs import (
    CONFIGS,
    build_kd,
    build_kd_student,
    build_kf,
    build_student,
    build_teacher,
    get_config,
)
from knowfactor.engine import build_optimizer, scheduled_lr, task_accuracy, train_epoch
from knowfactor.models import (
    AssembledNetwork,
    ClassifierModel,
    FactorNetwork,
    MultiTaskClassifier,
    assemble,
    factor_network,
)
from shared import checkpoint, cli, distributed
from shared.data import TensorBatchDataset, make_loader, set_epoch
from shared.device import resolve_device, seed_everything
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, format_record, get_logger

METHODS = ("kf", "kd", "teacher")
PRESETS = {
    "paper": {"config": "cifar10_wrn28_2_to_r18"},
    "small": {"config": "cifar10_wrn28_2_to_r18", "epochs": 30},
    "demo": {"config": "dsprites_tiny"},
}


def load_data(config_name: str, path: Path | None, tasks: str | None = None) -> kdata.MultiTaskData:
    """The config's dataset from ``path`` (the real format), or its embedded default; resized as configured."""
    config = get_config(config_name)
    name = config.dataset
    if name in ("cifar10", "imagenet", "shapes3d") and path is None:
        raise UserError(f"config {config_name} needs --data (the {name} files); nothing is downloaded")
    if name == "dsprites":
        data = kdata.load_dsprites(require_path(path, "--data")) if path else kdata.dsprites_embedded()
    elif name == "mnist":
        data = kdata.mnist_one_vs_rest(size=28)
    elif name == "digits":
        data = kdata.digits_multitask(size=32)
    elif name == "cifar10":
        data = kdata.load_cifar10(require_path(path, "--data", kind="dir"))
    elif name == "shapes3d":
        data = kdata.load_shapes3d(require_path(path, "--data", kind="file"))
    else:
        data = kdata.load_image_folder(require_path(path, "--data", kind="dir"), 224)
    if tasks:
        data = kdata.select_tasks(data, [t.strip() for t in tasks.split(",") if t.strip()])
    if config.image_size and data.x_train.shape[-1] != config.image_size:
        size = (config.image_size, config.image_size)
        data = dataclasses.replace(
            data,
            x_train=F.interpolate(data.x_train, size=size, mode="area"),
            x_test=F.interpolate(data.x_test, size=size, mode="area"),
        )
    return data


def _meta(config: str, data: kdata.MultiTaskData, **extra) -> dict:
    return {"config": config, "task_names": list(data.task_names), "task_classes": list(data.task_classes), **extra}


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


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="knowfactor-train",
        description="Train a teacher (--method teacher), factorize it into factor networks (--method kf) or "
        "distil a plain KD student (--method kd). Without --data: the embedded data of the config.",
    )
    parser.add_argument("--method", choices=METHODS, default="kf", help="what to train")
    parser.add_argument("--config", choices=list(CONFIGS), default=None, help="architecture and loss setting")
    parser.add_argument("--data", type=Path, default=None, help="dataset file/folder in its real format")
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: all of the dataset)")
    parser.add_argument("--teacher", type=Path, default=None, help="trained teacher checkpoint (kf and kd)")
    parser.add_argument("--beta", type=float, default=None, help="InfoMin weight (bottleneck on task features)")
    parser.add_argument("--lambda-feat", type=float, default=None, help="InfoMax weight")
    parser.add_argument("--lambda-kd", type=float, default=None, help="KD weight")
    parser.add_argument("--temperature", type=float, default=None, help="KD temperature")
    parser.add_argument("--lr", type=float, default=None, help="SGD learning rate (default: the config's)")
    parser.add_argument(
        "--official-teacher-bn", action="store_true", help="teacher BatchNorms in train mode, as in the release"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    parser.add_common_args()
    parser.set_presets(PRESETS, default="demo")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    names = {"beta": "beta", "lambda_feat": "lambda_feat", "lambda_kd": "lambda_kd", "temperature": "temperature"}
    return {key: getattr(args, arg) for arg, key in names.items() if getattr(args, arg) is not None}


def _build(args, config, data, device, out, log):
    """The model to train for ``args.method`` (training a demo teacher first when none is given)."""
    classes = data.task_classes
    if args.method == "teacher":
        return ClassifierModel(build_teacher(config, classes))
    if args.teacher is None:
        if args.preset != "demo":
            raise UserError(f"--method {args.method} needs --teacher PATH (train one with --method teacher)")
        log.info("no --teacher: training one first (demo preset)")
        teacher_args = ["--method", "teacher", "--config", args.config, "--seed", str(args.seed), "--quiet"]
        teacher_args += ["--out", str(out / "teacher"), "--device", args.device]
        teacher_args += (["--data", str(args.data)] if args.data else []) + (
            ["--tasks", args.tasks] if args.tasks else []
        )
        teacher_args += ["--resume"] if checkpoint.latest(out / "teacher") is not None else []
        if not (out / "teacher" / "teacher.pt").exists():
            train(teacher_args)
        args.teacher = out / "teacher" / "teacher.pt"
    teacher = load_teacher(args.teacher, args.config, classes, data.task_names).to(device)
    if args.method == "kd":
        return build_kd(config, teacher, classes)
    overrides = _overrides(args)
    if args.official_teacher_bn:
        overrides["official_teacher_bn"] = True
    return build_kf(config, teacher, classes, **overrides)


def train(argv: Sequence[str] | None = None) -> dict:
    """``knowfactor-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    config = get_config(args.config)
    recipe = config.recipe
    args.epochs = recipe.epochs if args.epochs is None else args.epochs
    args.batch_size = recipe.batch_size if args.batch_size is None else args.batch_size
    args.lr = recipe.lr if args.lr is None else args.lr
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise UserError("--epochs and --batch-size must be >= 1 and --lr > 0")
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    out = cli.run_dir(args.out, "knowfactor", args.resume)
    log = get_logger()
    data = load_data(args.config, args.data, args.tasks)
    if len(data.x_train) < args.batch_size:
        raise UserError(f"--batch-size {args.batch_size} exceeds the {len(data.x_train)} training images")
    seed_everything(args.seed)
    model = _build(args, config, data, device, out, log)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model = distributed.wrap_model(model, device)
    core = distributed.unwrap_model(model)
    optimizer = build_optimizer(model, args.lr, recipe.momentum, recipe.weight_decay)
    # full batches only: the projectors' BatchNorm and the batch-Gaussian bottleneck need >= 2 samples
    train_set = TensorBatchDataset(data.x_train, data.y_train)
    loader = make_loader(train_set, args.batch_size, shuffle=True, seed=args.seed, drop_last=True)
    test_loader = make_loader(TensorBatchDataset(data.x_test, data.y_test), 256, shard=False)
    milestones = [round(m * args.epochs / recipe.epochs) for m in recipe.milestones]
    start = 0
    if args.resume:
        state = checkpoint.restore_training_state(checkpoint.load_checkpoint(checkpoint.latest(out)), core, optimizer)
        start = state["epoch"]
    else:
        cli.write_config(out, args, trainable_parameters=trainable, task_names=data.task_names)
    metrics = MetricsWriter(out / "metrics.jsonl")
    log.info(f"knowfactor-train: {args.method} on {data.name} ({args.config}), {args.epochs} epochs -> {out}")
    started = time.monotonic()
    for epoch in range(start, args.epochs):
        set_epoch(loader, epoch)
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(epoch, args.lr, args.epochs, milestones, recipe.cosine)
        losses = train_epoch(
            model, loader, optimizer, device, clip=recipe.clip, amp=args.amp, desc=f"epoch {epoch + 1}/{args.epochs}"
        )
        record = {"epoch": epoch + 1, **losses}
        metrics.write(record)
        if not args.quiet:
            log.info(format_record(record))
        checkpoint.save_training_checkpoint(out, epoch + 1, checkpoint.training_state(core, optimizer, epoch=epoch + 1))
    accuracy = task_accuracy(core, test_loader, device)
    results = {
        "method": args.method,
        "config": args.config,
        "tasks": dict(zip(data.task_names, accuracy, strict=True)),
        "trainable_parameters": trainable,
        "train_seconds": round(time.monotonic() - started, 1),
    }
    if distributed.is_main_process():
        _save_models(out, args, core, data)
        checkpoint.save_json(out / "results.json", results)
        shown = ", ".join(f"{t} {a:.2f}%" for t, a in results["tasks"].items())
        log.info(f"test accuracy: {shown}")
    return results


def _save_models(out: Path, args, core, data) -> None:
    meta = _meta(args.config, data)
    if args.method == "teacher":
        checkpoint.save_checkpoint(out / "teacher.pt", {"state_dict": core.classifier.state_dict(), **meta})
    elif args.method == "kd":
        checkpoint.save_checkpoint(out / "kd.pt", {"state_dict": core.student.state_dict(), "kind": "kd", **meta})
    else:
        checkpoint.save_checkpoint(out / "kf.pt", {"state_dict": core.state_dict(), "kind": "kf", **meta})
        for index, task in enumerate(data.task_names):
            factor = factor_network(core.student, index)
            single = {**meta, "kind": "factor", "task": task, "task_index": index}
            checkpoint.save_checkpoint(out / "factors" / f"{task}.pt", {"state_dict": factor.state_dict(), **single})


def load_factor(path: Path) -> tuple[FactorNetwork, dict]:
    """A factor network file written by ``knowfactor-train --method kf`` (nothing else needed)."""
    saved = checkpoint.load_checkpoint(require_path(path, "factor network", kind="file"))
    if saved.get("kind") != "factor":
        raise UserError(f"{path} is not a factor network file (kind {saved.get('kind')!r}): use factors/<task>.pt")
    config = get_config(saved["config"])
    student = build_student(config, [saved["task_classes"][saved["task_index"]]])
    factor = factor_network(student, 0)
    factor.load_state_dict(saved["state_dict"])
    return factor.eval(), saved


def assemble_files(argv: Sequence[str] | None = None) -> dict:
    """``knowfactor-assemble``: plug factor networks together into one multi-task network, no fine-tuning."""
    parser = cli.ArgumentParser(
        prog="knowfactor-assemble",
        description="Combine any subset of factor networks of one factorization into a multi-task network: "
        "one CKN forward, one TSN and head per task.",
    )
    parser.add_argument("--factors", type=Path, nargs="+", required=True, help="factors/<task>.pt files")
    parser.add_argument("--out", type=Path, required=True, help="file to write (e.g. multi.pt)")
    args = parser.parse_args(argv)
    loaded = [load_factor(path) for path in args.factors]
    network = assemble([factor for factor, _ in loaded])
    tasks = [meta["task"] for _, meta in loaded]
    if len(set(tasks)) != len(tasks):
        raise UserError(f"the factor networks repeat a task: {tasks}")
    first = loaded[0][1]
    meta = {
        "config": first["config"],
        "kind": "assembled",
        "tasks": tasks,
        "task_indices": [m["task_index"] for _, m in loaded],
    }
    meta["task_classes"] = [m["task_classes"][m["task_index"]] for _, m in loaded]
    checkpoint.save_checkpoint(args.out, {"state_dict": network.state_dict(), **meta})
    print(f"assembled {len(tasks)} factor networks ({', '.join(tasks)}) into {args.out}")
    return meta


def evaluate_file(argv: Sequence[str] | None = None) -> dict:
    """``knowfactor-eval``: per-task test accuracy of a teacher, KD student, factor network or assembled net."""
    parser = cli.ArgumentParser(
        prog="knowfactor-eval",
        description="Per-task test accuracy of a file written by knowfactor-train or knowfactor-assemble; for "
        "kf.pt each factor network and their assembly.",
    )
    parser.add_argument(
        "--weights", type=Path, required=True, help="teacher.pt, kd.pt, kf.pt, factors/<t>.pt or multi.pt"
    )
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the config's embedded data)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    saved = checkpoint.load_checkpoint(require_path(args.weights, "--weights", kind="file"))
    if "config" not in saved:
        raise UserError(f"{args.weights} was not written by knowfactor (no config): evaluate files it writes")
    config = get_config(saved["config"])
    kind = saved.get("kind", "teacher")
    device = resolve_device(args.device)
    names = saved.get("tasks") or ([saved["task"]] if kind == "factor" else saved["task_names"])
    data = kdata.select_tasks(load_data(saved["config"], args.data), names)
    loader = make_loader(TensorBatchDataset(data.x_test, data.y_test), 256, shard=False)
    results: dict = {"weights": str(args.weights), "kind": kind}
    if kind == "factor":
        factor, _ = load_factor(args.weights)
        model = _SingleTask(factor)
    elif kind == "assembled":
        factors = [factor_network(build_student(config, saved["task_classes"]), i) for i in range(len(names))]
        model = AssembledNetwork(factors[0].CKN, [f.TSN for f in factors], [f.head for f in factors])
        model.load_state_dict(saved["state_dict"])
    elif kind == "kf":
        student = build_student(config, saved["task_classes"])
        student.load_state_dict(
            {k.removeprefix("student."): v for k, v in saved["state_dict"].items() if k.startswith("student.")}
        )
        model = assemble([factor_network(student, i) for i in range(student.num_tasks)])
        results["factors"] = {
            task: task_accuracy(_SingleTask(factor_network(student, i)).to(device), _column(loader, i), device)[0]
            for i, task in enumerate(names)
        }
    else:
        build = build_kd_student if kind == "kd" else build_teacher
        model = build(config, saved["task_classes"])
        model.load_state_dict(saved["state_dict"])
    results["tasks"] = dict(zip(names, task_accuracy(model.to(device), loader, device), strict=True))
    print(json.dumps(results, indent=2))
    return results


class _SingleTask(torch.nn.Module):
    """A single-task network seen as a one-task multi-task model (a list of one logit tensor)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.network(x)]


def _column(loader, index: int):
    return [(x, y[:, index : index + 1]) for x, y in loader]


def repro(argv: Sequence[str] | None = None) -> dict:
    """``knowfactor-repro``."""
    from knowfactor.repro import repro as run_repro

    return run_repro(argv)


COMMANDS = {"train": train, "eval": evaluate_file, "assemble": assemble_files, "repro": repro}
train_main = cli.console_script(train)
eval_main = cli.console_script(evaluate_file)
assemble_main = cli.console_script(assemble_files)
repro_main = cli.console_script(repro)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
