"""Console scripts: ``iformer-train``, ``iformer-eval``, ``iformer-bench``, ``iformer-info``, ``iformer-repro``.

Under torchrun: ``torchrun --nproc_per_node=N -m iformer.cli train --data ROOT --preset paper``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from iformer import data as iformer_data
from iformer import transforms
from iformer.engine import build_optimizer, evaluate, learning_rate, set_learning_rate, train_one_epoch
from iformer.models import MODEL_CONFIGS, InceptionTransformer, create_model
from iformer.weights import extract_state_dict, load_weights
from shared import checkpoint, cli, distributed
from shared.data import make_loader, set_epoch
from shared.device import grad_scaler, resolve_device, seed_everything
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, format_record, get_logger

#: Per-size values of the official args.yaml (spec section 3); used when no option sets them.
SIZE_RECIPES = {
    "small": {"drop_path": 0.2, "min_lr": 1e-6, "clip_grad": None},
    "base": {"drop_path": 0.4, "min_lr": 1e-5, "clip_grad": 1.0},
    "large": {"drop_path": 0.5, "min_lr": 1e-5, "clip_grad": 1.0},
}
_IMAGENET_RECIPE = {
    "lr": 1e-3,
    "warmup_lr": 1e-6,
    "warmup_epochs": 5,
    "cooldown_epochs": 10,
    "weight_decay": 0.05,
    "mixup": 0.8,
    "cutmix": 1.0,
    "smoothing": 0.1,
    "aa": "rand-m9-mstd0.5-inc1",
    "reprob": 0.25,
    "img_size": 224,
}
TRAIN_PRESETS = {
    # 300 + 10 cooldown epochs, 128 images per GPU on 8 GPUs (global batch 1024), as released.
    "paper": {"model": "iformer_small", "epochs": 300, "batch_size": 128, **_IMAGENET_RECIPE},
    # The same recipe shortened for an ImageFolder subset.
    "small": {"model": "iformer_small", "epochs": 100, "batch_size": 64, **_IMAGENET_RECIPE},
    # tiny_test on the embedded digits at 32x32: seconds on a laptop CPU.
    "demo": {
        "model": "tiny_test",
        "epochs": 8,
        "batch_size": 64,
        "lr": 2e-3,
        "min_lr": 1e-5,
        "warmup_lr": 1e-6,
        "warmup_epochs": 0,
        "cooldown_epochs": 0,
        "weight_decay": 0.05,
        "mixup": 0.0,
        "cutmix": 0.0,
        "smoothing": 0.0,
        "aa": "none",
        "reprob": 0.0,
        "img_size": 32,
        "drop_path": 0.0,
    },
}
DIGITS_CLASSES = 10


def _model_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument("--model", choices=list(MODEL_CONFIGS), default=default, help="architecture")


def _size_family(model: str) -> str | None:
    family = model.removeprefix("iformer_").removesuffix("_384")
    return family if family in SIZE_RECIPES else None


def _build_model(name: str, num_classes: int, img_size: int, drop_path: float = 0.0) -> InceptionTransformer:
    model = create_model(name, num_classes=num_classes, img_size=img_size, drop_path_rate=drop_path)
    try:
        model.check_input_size(img_size, img_size)
    except ValueError as exc:
        raise UserError(f"--img-size {img_size}: {exc}") from None
    return model


def _folder_loaders(args: argparse.Namespace, device: torch.device):
    root = require_path(args.data, "--data folder", kind="dir")
    aa = None if args.aa in (None, "none") else args.aa
    train_set = iformer_data.image_folder(
        iformer_data.find_split(root, "train"),
        transforms.train_transform(args.img_size, auto_augment=aa, re_prob=args.reprob),
    )
    eval_set = iformer_data.image_folder(
        iformer_data.find_split(root, "eval"), transforms.eval_transform(args.img_size, crop_pct=args.crop_pct)
    )
    if train_set.classes != eval_set.classes:
        raise UserError(f"{root}: the train and eval splits have different class folders")
    common = {"seed": args.seed, "workers": args.workers, "device": device}
    train = make_loader(train_set, args.batch_size, shuffle=True, drop_last=True, **common)
    return train, make_loader(eval_set, args.batch_size, **common), len(train_set.classes), None


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="iformer-train",
        description="Train iFormer on an ImageFolder dataset (--data ROOT with train/ and val/) or, without "
        "--data, on the embedded digits. Presets: paper (the official ImageNet recipe), small, demo.",
    )
    _model_option(parser)
    parser.add_argument("--data", type=Path, default=None, help="ImageFolder root with train/ and val/ splits")
    parser.add_argument("--img-size", type=int, default=None, help="input side (a multiple of 16)")
    parser.add_argument("--crop-pct", type=float, default=0.9, help="eval resize = img_size / crop_pct, then crop")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW)")
    parser.add_argument("--min-lr", type=float, default=None, help="final cosine learning rate")
    parser.add_argument("--warmup-lr", type=float, default=None, help="learning rate at the start of warm-up")
    parser.add_argument("--warmup-epochs", type=int, default=None, help="linear warm-up epochs")
    parser.add_argument("--cooldown-epochs", type=int, default=None, help="epochs at min-lr after --epochs")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay")
    parser.add_argument(
        "--no-decay-pos-embed",
        dest="decay_pos_embed",
        action="store_false",
        help="exempt positional tables from weight decay (the release decays them by accident)",
    )
    parser.add_argument("--drop-path", type=float, default=None, help="stochastic depth rate (S/B/L: 0.2/0.4/0.5)")
    parser.add_argument("--clip-grad", type=float, default=None, help="gradient norm clipping (B/L: 1.0)")
    parser.add_argument("--mixup", type=float, default=None, help="mixup alpha (0 disables)")
    parser.add_argument("--cutmix", type=float, default=None, help="cutmix alpha (0 disables)")
    parser.add_argument("--smoothing", type=float, default=None, help="label smoothing")
    parser.add_argument("--aa", default=None, help="RandAugment policy in timm's notation, or none")
    parser.add_argument("--reprob", type=float, default=None, help="random erasing probability")
    parser.add_argument("--weights", type=Path, default=None, help="initial weights (official .pth or a checkpoint)")
    parser.add_argument("--keep-checkpoints", type=int, default=2, help="how many epoch checkpoints to keep")
    parser.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs (and after the last)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    parser.add_common_args()
    parser.set_presets(TRAIN_PRESETS, default="demo")
    return parser


def _fill_size_recipe(args: argparse.Namespace) -> None:
    family = _size_family(args.model)
    for key, value in (SIZE_RECIPES[family] if family else {"drop_path": 0.0, "min_lr": 1e-6}).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def _check_args(args: argparse.Namespace) -> None:
    checks = [
        (args.epochs >= 1, f"--epochs must be >= 1, got {args.epochs}"),
        (args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}"),
        (args.lr > 0, f"--lr must be > 0, got {args.lr}"),
        (0 <= args.drop_path < 1, f"--drop-path must be in [0, 1), got {args.drop_path}"),
        (0 <= args.smoothing < 1, f"--smoothing must be in [0, 1), got {args.smoothing}"),
        (args.mixup >= 0 and args.cutmix >= 0, "--mixup and --cutmix must be >= 0"),
        (args.img_size >= 16, f"--img-size must be >= 16, got {args.img_size}"),
        (args.eval_every >= 1, f"--eval-every must be >= 1, got {args.eval_every}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def train(argv: Sequence[str] | None = None) -> dict:
    """``iformer-train``: returns the final results (also written to ``results.json``)."""
    args = train_parser().parse_args(argv)
    _fill_size_recipe(args)
    _check_args(args)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    out = cli.run_dir(args.out, "iformer", args.resume)
    # Each rank draws its own augmentations and drop-path masks (as timm seeds seed + rank); DDP
    # broadcasts rank 0's initial weights, so the model starts identical everywhere.
    seed_everything(args.seed + distributed.get_rank())
    log = get_logger()
    if args.data is None:
        train_loader, eval_loader, num_classes, prepare = iformer_data.digits_loaders(
            args.img_size, args.batch_size, args.seed, device
        )
    else:
        train_loader, eval_loader, num_classes, prepare = _folder_loaders(args, device)
    model = _build_model(args.model, num_classes, args.img_size, args.drop_path)
    if args.weights is not None and not args.resume:
        load_weights(model, args.weights, new_head=True)
    params = sum(p.numel() for p in model.parameters())
    model = distributed.wrap_model(model, device)
    optimizer = build_optimizer(model, args.lr, args.weight_decay, decay_pos_embed=args.decay_pos_embed)
    scaler = grad_scaler(device, args.amp)
    mixup = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup = transforms.MixupCutmix(num_classes, args.mixup, args.cutmix, label_smoothing=args.smoothing)
    meta = {"arch": args.model, "num_classes": num_classes, "img_size": args.img_size}
    start_epoch, best, history = 0, 0.0, []
    if args.resume:
        state = checkpoint.restore_training_state(
            checkpoint.load_checkpoint(checkpoint.latest(out)), model, optimizer, scaler=scaler
        )
        start_epoch, best = state["epoch"], state["extra"]["best_top1"]
        log.info(f"resumed from {checkpoint.latest(out)} at epoch {start_epoch}")
    else:
        cli.write_config(out, args, parameters=params, num_classes=num_classes)
    metrics = MetricsWriter(out / "metrics.jsonl")
    total_epochs = args.epochs + args.cooldown_epochs
    schedule = {k: getattr(args, k) for k in ("lr", "min_lr", "warmup_lr", "warmup_epochs", "epochs")}
    log.info(
        f"iformer-train: {args.model} ({params:,} parameters), {num_classes} classes, {total_epochs} epochs -> {out}"
    )
    started = time.monotonic()
    result = {}
    for epoch in range(start_epoch, total_epochs):
        set_epoch(train_loader, epoch)
        lr = learning_rate(epoch, **schedule)
        set_learning_rate(optimizer, lr)
        loss = train_one_epoch(
            model,
            train_loader,
            optimizer,
            device,
            mixup=mixup,
            label_smoothing=args.smoothing,
            clip_grad=args.clip_grad,
            amp=args.amp,
            scaler=scaler,
            prepare=prepare,
            desc=f"epoch {epoch + 1}/{total_epochs}",
        )
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": loss}
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == total_epochs:
            result = evaluate(model, eval_loader, device, amp=args.amp, prepare=prepare)
            best = max(best, result["top1"])
            record.update({f"test_{k}": v for k, v in result.items()})
        metrics.write(record)
        if not args.quiet:
            log.info(format_record(record))
        state = checkpoint.training_state(model, optimizer, None, scaler, epoch=epoch + 1, best_top1=best, **meta)
        checkpoint.save_training_checkpoint(out, epoch + 1, state, keep=args.keep_checkpoints)
        history.append(record)
    # The official layout under "state_dict" (what timm's loaders unwrap), with what eval needs to rebuild it.
    final = {"state_dict": distributed.unwrap_model(model).state_dict(), **meta}
    checkpoint.save_checkpoint(out / "model.pt", final)
    results = {
        "model": args.model,
        "num_classes": num_classes,
        "img_size": args.img_size,
        "parameters": params,
        "epochs": total_epochs,
        "test_top1": result.get("top1"),
        "test_top5": result.get("top5"),
        "best_test_top1": best,
        "train_seconds": round(time.monotonic() - started, 1),
        "data": str(args.data) if args.data else "embedded digits (scikit-learn), ImageFolder, 1442 train / 355 test",
    }
    if distributed.is_main_process():
        checkpoint.save_json(out / "results.json", results)
        log.info(f"test top-1 {results['test_top1']:.2f}% (best {best:.2f}%), weights: {out / 'model.pt'}")
    return results


def eval_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="iformer-eval",
        description="Top-1/top-5 of iFormer weights on an ImageFolder eval split (or the embedded digits test split).",
    )
    parser.add_argument(
        "--weights", type=Path, required=True, help="official .pth, iformer-train's model.pt or a checkpoint"
    )
    _model_option(parser)
    parser.add_argument("--data", type=Path, default=None, help="ImageFolder root with a val/ split (default: digits)")
    parser.add_argument("--img-size", type=int, default=None, help="input side (default: the weights' training size)")
    parser.add_argument("--crop-pct", type=float, default=0.9, help="resize to img_size / crop_pct, then centre crop")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size per process")
    parser.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--workers", type=int, default=0, help="data-loading worker processes")
    parser.add_argument("--amp", action="store_true", help="mixed precision")
    parser.add_argument("--seed", type=int, default=0, help="seed (data order only)")
    parser.add_argument("--out", type=Path, default=None, help="also write results.json into this folder")
    return parser


def evaluate_weights(argv: Sequence[str] | None = None) -> dict:
    """``iformer-eval``: returns and prints the metrics."""
    args = eval_parser().parse_args(argv)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    raw = checkpoint.load_checkpoint(require_path(args.weights, "--weights", kind="file"))
    meta = {**raw, **raw["extra"]} if isinstance(raw.get("extra"), dict) else raw
    state = extract_state_dict(raw, prefer_ema=args.ema)
    name = args.model or meta.get("arch") or "iformer_small"
    if "head.weight" not in state:
        raise UserError(f"{args.weights} has no classifier (head.weight): it cannot be evaluated")
    num_classes = state["head.weight"].shape[0]
    args.img_size = args.img_size or meta.get("img_size") or MODEL_CONFIGS[name]["img_size"]
    model = load_weights(_build_model(name, num_classes, args.img_size), state).to(device)
    if args.data is None:
        if num_classes != DIGITS_CLASSES:
            raise UserError(f"the weights have {num_classes} classes; the embedded digits need 10: pass --data ROOT")
        _, loader, _, prepare = iformer_data.digits_loaders(args.img_size, args.batch_size, args.seed, device)
    else:
        root = require_path(args.data, "--data folder", kind="dir")
        dataset = iformer_data.image_folder(
            iformer_data.find_split(root, "eval"), transforms.eval_transform(args.img_size, crop_pct=args.crop_pct)
        )
        if len(dataset.classes) != num_classes:
            raise UserError(f"{root} has {len(dataset.classes)} classes but the weights have {num_classes}")
        loader = make_loader(dataset, args.batch_size, workers=args.workers, device=device)
        prepare = None
    metrics = evaluate(model, loader, device, amp=args.amp, prepare=prepare)
    results = {"model": name, "weights": str(args.weights), "img_size": args.img_size, **metrics}
    if distributed.is_main_process():
        print(json.dumps(results, indent=2))
        if args.out is not None:
            checkpoint.save_json(Path(args.out) / "results.json", results)
    return results


def bench(argv: Sequence[str] | None = None) -> None:
    """``iformer-bench``: throughput against torchvision's ResNet-50 in the same process."""
    from iformer.bench import benchmark, format_bench, result_to_dict

    parser = cli.ArgumentParser(
        prog="iformer-bench",
        description="Parameters, FLOPs and images/s (inference and training step) of an iFormer, interleaved "
        "round by round with torchvision's ResNet-50 in the same process; prints the ratio.",
    )
    _model_option(parser, "iformer_small")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch")
    parser.add_argument("--img-size", type=int, default=224, help="input side")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median, min, max over them)")
    parser.add_argument("--iters", type=int, default=3, help="batches per model per round")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--modes", default="inference,train", help="comma-separated: inference, train")
    parser.add_argument("--no-yardstick", action="store_true", help="skip ResNet-50")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps")
    parser.add_argument("--amp", action="store_true", help="mixed precision")
    parser.add_argument("--out", type=Path, default=None, help="also write results.json and results.md here")
    args = parser.parse_args(argv)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or set(modes) - {"inference", "train"}:
        raise UserError(f"--modes {args.modes!r}: use inference, train or both")
    if min(args.batch_size, args.rounds, args.iters, args.threads or 1) < 1:
        raise UserError("--batch-size, --rounds, --iters and --threads must be >= 1")
    with torch.device("meta"):  # checks --img-size without allocating weights
        _build_model(args.model, 1000, args.img_size)
    result = benchmark(
        args.model,
        batch_size=args.batch_size,
        img_size=args.img_size,
        rounds=args.rounds,
        iters=args.iters,
        threads=args.threads,
        modes=modes,
        yardstick=not args.no_yardstick,
        device=str(resolve_device(args.device)),
        amp=args.amp,
    )
    table = format_bench(result)
    print(table)
    if args.out is not None:
        checkpoint.save_json(args.out / "results.json", result_to_dict(result))
        checkpoint.atomic_write(args.out / "results.md", lambda f: f.write(table + "\n"), binary=False)


def info(argv: Sequence[str] | None = None) -> None:
    """``iformer-info``: the per-stage layout of a model (widths, heads, C_h/C_l per block, parameters)."""
    parser = cli.ArgumentParser(prog="iformer-info", description="Per-stage layout and parameter counts of a model.")
    _model_option(parser, "iformer_small")
    parser.add_argument("--keys", action="store_true", help="also list the state_dict keys and shapes")
    args = parser.parse_args(argv)
    from shared.report import markdown_table

    model = create_model(args.model)
    rows = []
    for i, (embed, pos, blocks) in enumerate(model.stages, start=1):
        splits = " ".join(f"{b.attn.high_dim}/{b.attn.low_dim}" for b in blocks)
        count = sum(p.numel() for m in (embed, blocks) for p in m.parameters()) + pos.numel()
        rows.append(
            [
                i,
                pos.shape[-1],
                len(blocks),
                splits,
                "yes" if blocks[0].layer_scale_1 is not None else "no",
                f"{count:,}",
            ]
        )
    print(markdown_table(["stage", "dim", "blocks", "C_h/C_l per block", "layer scale", "parameters"], rows))
    print(f"\n{args.model}: {sum(p.numel() for p in model.parameters()):,} parameters, {len(model.state_dict())} keys")
    if args.keys:
        for key, value in model.state_dict().items():
            print(key, tuple(value.shape))


def repro(argv: Sequence[str] | None = None) -> dict:
    """``iformer-repro`` (imported on use: it pulls in the benchmark helpers)."""
    from iformer.repro import repro as run_repro

    return run_repro(argv)


COMMANDS = {"train": train, "eval": evaluate_weights, "bench": bench, "info": info, "repro": repro}
train_main = cli.console_script(train)
eval_main = cli.console_script(evaluate_weights)
bench_main = cli.console_script(bench)
info_main = cli.console_script(info)
repro_main = cli.console_script(repro)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
