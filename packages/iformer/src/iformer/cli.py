"""Console scripts: ``iformer-train``, ``iformer-eval``, ``iformer-bench``, ``iformer-info``, ``iformer-repro``.

Argument parsing and printing only: the work is :func:`iformer.engine.fit`, :func:`iformer.engine.evaluate_file`,
:func:`iformer.bench.benchmark` and :func:`iformer.repro.run`. Under torchrun:
``torchrun --nproc_per_node=N -m iformer.cli train --data ROOT --preset paper``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from iformer import bench, repro
from iformer.config import PRESETS, build_config
from iformer.engine import build_model, evaluate_file, fit
from iformer.models import MODEL_CONFIGS, create_model, describe_stages
from shared import checkpoint, cli, distributed
from shared.device import resolve_device
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import markdown_table


def _model_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument("--model", choices=list(MODEL_CONFIGS), default=default, help="architecture")


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
    parser.set_presets(PRESETS, default="demo")
    return parser


def train_command(argv: Sequence[str] | None = None) -> dict:
    """``iformer-train``: returns the final results (also written to ``results.json``)."""
    args = train_parser().parse_args(argv)
    options = {key: value for key, value in vars(args).items() if key not in ("preset", "device", "out", "resume")}
    config = build_config(args.preset, **{k: v for k, v in options.items() if k != "quiet"})
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    with cli.run_folder(args.out, "iformer", args.resume) as out:  # no empty folder left if it fails
        results = fit(config, out, device, resume=args.resume, info={"preset": args.preset}, quiet=args.quiet)
    if distributed.is_main_process():
        get_logger().info(
            f"test top-1 {results['test_top1']:.2f}% (best {results['best_test_top1']:.2f}%), "
            f"weights: {out / 'model.pt'}"
        )
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


def eval_command(argv: Sequence[str] | None = None) -> dict:
    """``iformer-eval``: returns and prints the metrics."""
    args = eval_parser().parse_args(argv)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    results = evaluate_file(
        args.weights,
        device,
        model=args.model,
        data=args.data,
        img_size=args.img_size,
        crop_pct=args.crop_pct,
        batch_size=args.batch_size,
        ema=args.ema,
        workers=args.workers,
        amp=args.amp,
        seed=args.seed,
    )
    if distributed.is_main_process():
        print(json.dumps(results, indent=2))
        if args.out is not None:
            checkpoint.save_json(Path(args.out) / "results.json", results)
    return results


def bench_command(argv: Sequence[str] | None = None) -> dict:
    """``iformer-bench``: throughput against torchvision's ResNet-50 in the same process."""
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
    if not modes or set(modes) - set(bench.MODES):
        raise UserError(f"--modes {args.modes!r}: use inference, train or both")
    if min(args.batch_size, args.rounds, args.iters, args.threads or 1) < 1:
        raise UserError("--batch-size, --rounds, --iters and --threads must be >= 1")
    with torch.device("meta"):  # checks --img-size without allocating weights
        build_model(args.model, 1000, args.img_size)
    result = bench.benchmark(
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
    table = bench.format_bench(result)
    print(table)
    if args.out is not None:
        bench.save_bench(args.out, result)
    return bench.result_to_dict(result)


def info_command(argv: Sequence[str] | None = None) -> None:
    """``iformer-info``: the per-stage layout of a model (widths, heads, C_h/C_l per block, parameters)."""
    parser = cli.ArgumentParser(prog="iformer-info", description="Per-stage layout and parameter counts of a model.")
    _model_option(parser, "iformer_small")
    parser.add_argument("--keys", action="store_true", help="also list the state_dict keys and shapes")
    args = parser.parse_args(argv)
    with torch.device("meta"):  # shapes only: no weights are allocated
        model = create_model(args.model)
    rows = [
        [
            s["stage"],
            s["dim"],
            s["blocks"],
            " ".join(f"{high}/{low}" for high, low in s["splits"]),
            "yes" if s["layer_scale"] else "no",
            f"{s['parameters']:,}",
        ]
        for s in describe_stages(model)
    ]
    print(markdown_table(["stage", "dim", "blocks", "C_h/C_l per block", "layer scale", "parameters"], rows))
    print(f"\n{args.model}: {sum(p.numel() for p in model.parameters()):,} parameters, {len(model.state_dict())} keys")
    if args.keys:
        for key, value in model.state_dict().items():
            print(key, tuple(value.shape))


def repro_command(argv: Sequence[str] | None = None) -> dict:
    """``iformer-repro``: the frequency ramp against its ablations; prints ``results.md``."""
    parser = cli.repro_parser(
        "iformer-repro",
        "The frequency ramp vs attention-only and constant-split mixers at matched parameter count, tiny "
        "iFormer on the embedded digits (32x32), several seeds.",
        repro.PRESET_HELP,
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs per run")
    return cli.run_repro(parser, argv, "iformer", repro.run, "epochs")


COMMANDS = {
    "train": train_command,
    "eval": eval_command,
    "bench": bench_command,
    "info": info_command,
    "repro": repro_command,
}
train_main = cli.console_script(train_command)
eval_main = cli.console_script(eval_command)
bench_main = cli.console_script(bench_command)
info_main = cli.console_script(info_command)
repro_main = cli.console_script(repro_command)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
