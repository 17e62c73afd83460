"""Console scripts: ``slimda-train``, ``slimda-eval``, ``slimda-select``, ``slimda-export``, ``slimda-flops``,
``slimda-repro``.

Argument parsing and printing only: the work is :func:`slimda.engine.fit`, :func:`slimda.engine.evaluate_file`,
:func:`slimda.upem.select_file`, :func:`slimda.export.export_file`, :func:`slimda.flops.macs_table` and
:func:`slimda.repro.run`. Under torchrun: ``torchrun --nproc_per_node=N -m slimda.cli train --data ROOT ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from shared import checkpoint, cli, distributed
from shared.device import resolve_device
from shared.errors import UserError
from shared.report import markdown_table
from slimda import data as sdata
from slimda import repro
from slimda.config import BN_FORWARDS, DATASETS, HEADS, METHODS, SEED_RAMPS, TrainConfig, build_config
from slimda.engine import evaluate_file, fit
from slimda.export import HEADS as EXPORT_HEADS
from slimda.export import export_file
from slimda.flops import macs_table, parse_budgets
from slimda.models import BACKBONES, KNOWLEDGE_HEADS
from slimda.sampling import SPACES
from slimda.upem import KINDS, select_file, selection_table


def add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data (no --data: the embedded dataset, written once into the cache)")
    domains = "; ".join(f"{name}: {', '.join(d.domains)}" for name, d in sdata.DOMAINS.items())
    group.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help=f"dataset (default: mnist-digits, MNIST-5k -> UCI digits). Domains of the real ones: {domains}",
    )
    group.add_argument("--data", type=Path, default=None, help="root holding one folder (or list file) per domain")
    group.add_argument("--source", default=None, help="labelled source domain, e.g. amazon")
    group.add_argument("--target", default=None, help="unlabelled target domain, e.g. webcam")
    group.add_argument("--list-dir", default=None, help="folder of <domain>.txt image lists under --data")


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="slimda-train",
        description="Train a slimmable model bank for unsupervised domain adaptation: SlimDA (SymNets' domain "
        "confusion + SEED + the tri-classifier), SymNets on the bank (--method symnets), or source only. "
        "Without --data: the embedded MNIST-5k -> UCI digits shift and the tiny slimmable CNN.",
    )
    add_data_args(parser)
    parser.add_argument("--method", choices=METHODS, default="slimda", help="training method")
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default=None, help="slimmable backbone")
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="local torchvision ImageNet state_dict for resnet18/resnet50 (never downloaded)",
    )
    parser.add_argument("--iterations", type=int, default=None, help="training iterations")
    parser.add_argument(
        "--warmup-fraction",
        type=float,
        default=None,
        help="share of source-CE iterations first (a pretrained start for from-scratch backbones)",
    )
    hyper = parser.add_argument_group("method ([U]: a default unverified against the paper)")
    hyper.add_argument("--archs-per-iter", type=int, default=None, help="n architectures per iteration [U]")
    hyper.add_argument("--lr", type=float, default=None, help="learning rate of the heads, lr0 (default 0.01)")
    hyper.add_argument(
        "--backbone-lr-mult",
        type=float,
        default=None,
        help="backbone lr = mult x heads' lr (default 0.1 with --weights, else 1)",
    )
    hyper.add_argument("--seed-weight", type=float, default=None, help="β, weight of SEED (default 1) [U]")
    hyper.add_argument("--seed-temperature", type=float, default=None, help="T of SEED (default 1) [U]")
    hyper.add_argument(
        "--seed-source-head",
        choices=KNOWLEDGE_HEADS,
        default=None,
        help="π_a of an architecture for SEED and UPEM (default folded) [U]",
    )
    hyper.add_argument("--seed-on-source", action="store_true", help="distil on source images too [U]")
    hyper.add_argument("--no-seed", action="store_true", help="ablation: no SEED (same as --method symnets)")
    hyper.add_argument("--no-ostc", action="store_true", help="ablation: SEED through Ct, no Ca (bi-classifier)")
    hyper.add_argument("--aux-source-ce", type=float, default=None, help="γ, source CE on Ca (default 0) [U]")
    hyper.add_argument(
        "--bn-forward",
        choices=BN_FORWARDS,
        default=None,
        help="source and target each in its own forward, with its own BN statistics (separate, as SymNets), "
        "or in one forward (joint) (default separate)",
    )
    hyper.add_argument(
        "--seed-ramp", choices=SEED_RAMPS, default=None, help="β constant, or ramped by λ_p (default none)"
    )
    hyper.add_argument(
        "--seed-detach-features", action="store_true", help="control: SEED trains its head only, not the backbone"
    )
    hyper.add_argument("--no-entropy-min", action="store_true", help="SymNets' no_em ablation")
    hyper.add_argument("--train-space", choices=SPACES, default=None, help="space of the random archs (stagewise)")
    hyper.add_argument("--no-sandwich", action="store_true", help="random archs only (no largest/smallest) [U]")
    hyper.add_argument("--grid", default=None, help="comma-separated width multipliers of the bank [U]")
    hyper.add_argument("--image-size", type=int, default=None, help="images are resized to this square")
    hyper.add_argument("--crop", type=int, default=None, help="random crop (train) / centre crop (eval)")
    hyper.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="random h-flip")
    hyper.add_argument("--bn-calib-batches", type=int, default=None, help="BN recalibration batches (50) [U]")
    hyper.add_argument(
        "--bn-calib-domain",
        choices=("target", "source", "both"),
        default=None,
        help="images of the BN recalibration (target) [U]",
    )
    hyper.add_argument(
        "--head", choices=HEADS, default=None, help="reported head: auto = Ct, or Cs for source-only [U]"
    )
    parser.add_argument("--eval-every", type=int, default=None, help="iterations between evaluations")
    parser.add_argument("--log-every", type=int, default=50, help="iterations between metric records")
    parser.add_argument("--quiet", action="store_true", help="no log lines")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_common_args(workers=False, epochs=False)
    parser.set_presets({"paper": {}, "small": {}, "demo": {}}, default="demo")
    return parser


def parse_grid(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        grid = tuple(sorted({float(w) for w in text.split(",") if w.strip()}))
    except ValueError:
        raise UserError(f"--grid {text!r} is not a comma-separated list of widths") from None
    if not grid or not all(0 < w <= 1 for w in grid) or grid[-1] != 1.0:
        raise UserError(f"--grid {text!r}: widths must lie in (0, 1] and include 1.0")
    return grid


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    method = "symnets" if args.no_seed and args.method == "slimda" else args.method
    overrides = {
        "data": str(args.data) if args.data is not None else None,
        "source": args.source,
        "target": args.target,
        "list_dir": args.list_dir,
        "weights": str(args.weights) if args.weights is not None else None,
        "method": method,
        "backbone": args.backbone,
        "iterations": args.iterations,
        "warmup_fraction": args.warmup_fraction,
        "batch_size": args.batch_size,
        "archs_per_iter": args.archs_per_iter,
        "lr": args.lr,
        "backbone_lr_mult": args.backbone_lr_mult,
        "seed_weight": args.seed_weight,
        "seed_temperature": args.seed_temperature,
        "seed_source_head": args.seed_source_head,
        "seed_on_source": True if args.seed_on_source else None,
        "ostc": False if args.no_ostc else None,
        "aux_source_ce": args.aux_source_ce,
        "bn_forward": args.bn_forward,
        "seed_ramp": args.seed_ramp,
        "seed_detach_features": True if args.seed_detach_features else None,
        "entropy_min": False if args.no_entropy_min else None,
        "train_space": args.train_space,
        "sandwich": False if args.no_sandwich else None,
        "grid": parse_grid(args.grid),
        "image_size": args.image_size,
        "crop": args.crop,
        "flip": args.flip,
        "eval_every": args.eval_every,
        "log_every": args.log_every,
        "bn_calib_batches": args.bn_calib_batches,
        "bn_calib_domain": args.bn_calib_domain,
        "eval_head": args.head,
        "seed": args.seed,
        "amp": args.amp,
    }
    return build_config(args.preset, args.dataset or "mnist-digits", **overrides)


def train_command(argv: Sequence[str] | None = None) -> dict:
    """``slimda-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    config = config_from_args(args)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    with cli.run_folder(args.out, "slimda", args.resume) as out:  # no empty folder left if it fails
        results = fit(
            config,
            out,
            device,
            resume=args.resume,
            info={"preset": args.preset},
            quiet=args.quiet,
            progress=None if args.no_progress else "slimda-train",
        )
    if distributed.is_main_process() and not args.quiet:
        heads = ("ct", "cs", "ca", "folded")
        rows = [[w, *(f"{acc[h]:.2f}" for h in heads)] for w, acc in results["accuracy"].items()]
        print(markdown_table(["width", "Ct", "Cs", "Ca", "folded"], rows))
    return results


def eval_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="slimda-eval",
        description="Target accuracy and MACs of one architecture of a trained bank, after BN recalibration.",
    )
    parser.add_argument("--weights", type=Path, required=True, help="final.pt (or checkpoint-<iteration>.pt)")
    parser.add_argument("--arch", default="1", help="uniform width (0.5) or one width per group (0.5-0.25-...)")
    parser.add_argument("--head", choices=HEADS, default="auto", help="reported head (auto: the run's)")
    parser.add_argument("--bn-calib-batches", type=int, default=None, help="default: the run's")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default: the run's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser


def eval_command(argv: Sequence[str] | None = None) -> dict:
    """``slimda-eval``: returns and prints the accuracy of every head, MACs and parameters."""
    args = eval_parser().parse_args(argv)
    results = evaluate_file(
        args.weights,
        resolve_device(args.device),
        arch=args.arch,
        head=args.head,
        bn_calib_batches=args.bn_calib_batches,
        data=args.data,
    )
    print(json.dumps(results, indent=2))
    return results


def select_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="slimda-select",
        description="Pick the architecture to deploy under each MACs budget with UPEM, using no target labels. "
        "Where the target images have labels, their accuracy and UPEM's rank correlation with it are reported "
        "beside the choice (never used for it).",
    )
    parser.add_argument("--weights", type=Path, required=True, help="final.pt of slimda-train")
    parser.add_argument(
        "--budgets", default="1,1/2,1/4,1/8,1/16,1/32,1/64", help="comma-separated fractions of the full MACs"
    )
    parser.add_argument("--upem", choices=KINDS, default="ensemble_kl", help="label-free score [U]")
    parser.add_argument("--samples", type=int, default=500, help="random stage-wise candidates per budget")
    parser.add_argument(
        "--reference-archs",
        type=int,
        default=16,
        help="M architectures of the bank ensemble p̄_bank: the largest + M-1 random [U]",
    )
    parser.add_argument("--max-images", type=int, default=2000, help="target images UPEM reads")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default: the run's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate and reference draws")
    parser.add_argument("--out", type=Path, default=None, help="write selection.json and selection.md here")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def select_command(argv: Sequence[str] | None = None) -> dict:
    """``slimda-select``: the UPEM choice per budget (with accuracy and Kendall τ where labels exist)."""
    args = select_parser().parse_args(argv)
    results = select_file(
        args.weights,
        resolve_device(args.device),
        budgets=parse_budgets(args.budgets),
        kind=args.upem,
        samples=args.samples,
        reference_archs=args.reference_archs,
        max_images=args.max_images,
        seed=args.seed,
        data=args.data,
        progress=not args.no_progress,
    )
    text = selection_table(results)
    print(text)
    if args.out is not None:
        checkpoint.save_json(args.out / "selection.json", results)
        checkpoint.atomic_write(args.out / "selection.md", lambda f: f.write(text + "\n"), binary=False)
    return results


def export_command(argv: Sequence[str] | None = None) -> dict:
    """``slimda-export``: BN-recalibrate the architecture on the run's calibration images, then export it."""
    parser = cli.ArgumentParser(
        prog="slimda-export",
        description="Export one architecture of a trained bank as a standalone torchvision-style model: a folder "
        "with model.py (plain PyTorch, no slimda), arch.json and weights.pt, BN statistics recalibrated for it.",
    )
    parser.add_argument("--weights", type=Path, required=True, help="final.pt of slimda-train")
    parser.add_argument("--arch", required=True, help="uniform width (0.5) or one width per group (0.5-0.25-...)")
    parser.add_argument("--head", choices=EXPORT_HEADS, default=None, help="deployed head (default: the run's)")
    parser.add_argument("--out", type=Path, required=True, help="new folder to write")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default: the run's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    result = export_file(args.weights, args.arch, args.out, resolve_device(args.device), head=args.head, data=args.data)
    print(f"wrote {result['out']}: {result['arch']} ({result['head']} head), target accuracy {result['accuracy']:.2f}%")
    return result


def flops_command(argv: Sequence[str] | None = None) -> dict:
    """``slimda-flops``: MACs and parameters of architectures of a bank (no weights needed)."""
    parser = cli.ArgumentParser(
        prog="slimda-flops",
        description="MACs (conv layers; --heads adds the deployed "
        "K-way head) and parameters of bank architectures, as fractions of the full model.",
    )
    parser.add_argument("--model", choices=sorted(BACKBONES), default="resnet50", help="backbone")
    parser.add_argument(
        "--arch",
        action="append",
        default=None,
        help="architecture(s) to count (default: every uniform width of the grid)",
    )
    parser.add_argument("--input-size", type=int, default=None, help="input side (default 224, slimcnn 16)")
    parser.add_argument("--num-classes", type=int, default=31, help="K of the heads")
    parser.add_argument("--heads", action="store_true", help="include the deployed head's MACs")
    args = parser.parse_args(argv)
    table = macs_table(args.model, args.arch, args.input_size, args.num_classes, args.heads)
    full = table["full_macs"]
    unit, scale = ("G", 1e9) if full >= 1e9 else ("M", 1e6)
    rows = [
        [
            r["arch"],
            r["feature_dim"],
            f"{r['macs'] / scale:.3f} {unit}",
            f"1/{full / r['macs']:.1f}",
            f"{r['params'] / 1e6:.2f} M",
        ]
        for r in table["archs"]
    ]
    print(markdown_table(["arch", "pooled feature", "MACs", "fraction", "params"], rows))
    return table


def repro_command(argv: Sequence[str] | None = None) -> dict:
    """``slimda-repro``: the four banks at every width and UPEM's selection; prints ``results.md``."""
    parser = cli.repro_parser(
        "slimda-repro",
        "SlimDA vs the source-only bank at every width, the SEED and OSTC ablations, and UPEM's rank correlation "
        "and budgeted choice, on an embedded domain shift (MNIST-5k -> UCI digits by default).",
        repro.PRESET_HELP,
    )
    parser.add_argument("--dataset", choices=sdata.EMBEDDED, default="mnist-digits", help="embedded shift")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's iterations per bank")
    parser.add_argument("--samples", type=int, default=40, help="random stage-wise UPEM candidates per budget")
    parser.add_argument(
        "--budgets",
        type=parse_budgets,
        default="1,1/2,1/4,1/8,1/16,1/32,1/64",
        help="MACs budgets of the selection table",
    )
    parser.add_argument(
        "--variants",
        type=cli.comma_list(),
        default=",".join(repro.ABLATION),
        help="comma-separated subset of " + ",".join(repro.VARIANTS) + " (the last three: controls of SEED)",
    )
    parser.add_argument(
        "--bn-forward",
        choices=BN_FORWARDS,
        default=None,
        help="batch-norm forwards of every bank (default: the presets' separate, as SymNets); "
        "use another --out for joint, or its runs replace the recorded ones",
    )
    options = ("dataset", "iterations", "samples", "budgets", "variants", "bn_forward")
    return cli.run_repro(parser, argv, "slimda", repro.run, *options)


COMMANDS = {
    "train": train_command,
    "eval": eval_command,
    "select": select_command,
    "export": export_command,
    "flops": flops_command,
    "repro": repro_command,
}
train_main = cli.console_script(train_command)
eval_main = cli.console_script(eval_command)
select_main = cli.console_script(select_command)
export_main = cli.console_script(export_command)
flops_main = cli.console_script(flops_command)
repro_main = cli.console_script(repro_command)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
