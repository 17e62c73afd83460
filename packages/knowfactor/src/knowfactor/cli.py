"""Console scripts: ``knowfactor-train``, ``knowfactor-eval``, ``knowfactor-assemble``, ``knowfactor-repro``.

Argument parsing and printing only: the work is :func:`knowfactor.engine.fit`,
:func:`knowfactor.engine.evaluate_file`, :func:`knowfactor.engine.assemble_factors` and
:func:`knowfactor.repro.run`. Under torchrun: ``torchrun --nproc_per_node=N -m knowfactor.cli train ...``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from knowfactor import repro
from knowfactor.config import CONFIGS, KD_VARIANTS, METHODS, PRESETS, build_config
from knowfactor.engine import assemble_factors, evaluate_file, fit
from shared import cli, distributed
from shared.device import resolve_device
from shared.logging import get_logger


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="knowfactor-train",
        description="Train a teacher (--method teacher), factorize it into factor networks (--method kf) or "
        "distil a plain KD student (--method kd). Without --data: the embedded data of the config. Presets: "
        "paper (the release's CIFAR-10 recipe), small (30 epochs), demo (the embedded dSprites-lite; kf and kd "
        "without --teacher train one first into OUT/teacher).",
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
    parser.add_argument(
        "--kd-variant",
        choices=KD_VARIANTS,
        default="release",
        help="--method kd: release (plain cross-entropy, no gradient clipping, as the release) or matched "
        "(label smoothing 0.1 and the config's gradient clipping, as the KF runs)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    parser.add_common_args(workers=False)
    parser.set_presets(PRESETS, default="demo")
    return parser


def train_command(argv: Sequence[str] | None = None) -> dict:
    """``knowfactor-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else None
    config = build_config(
        args.preset,
        method=args.method,
        config=args.config,
        data=args.data,
        tasks=tasks,
        teacher=args.teacher,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        lambda_kd=args.lambda_kd,
        lambda_feat=args.lambda_feat,
        beta=args.beta,
        official_teacher_bn=args.official_teacher_bn,
        kd_variant=args.kd_variant,
        seed=args.seed,
        amp=args.amp,
    )
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    with cli.run_folder(args.out, "knowfactor", args.resume) as out:  # no empty folder left if it fails
        results = fit(config, out, device, resume=args.resume, info={"preset": args.preset}, quiet=args.quiet)
    if distributed.is_main_process():
        shown = ", ".join(f"{t} {a:.2f}%" for t, a in results["tasks"].items())
        get_logger().info(f"test accuracy: {shown} -> {out}")
    return results


def eval_command(argv: Sequence[str] | None = None) -> dict:
    """``knowfactor-eval``: per-task test accuracy of a teacher, KD student, factor network or assembled net."""
    parser = cli.ArgumentParser(
        prog="knowfactor-eval",
        description="Per-task test accuracy of a file written by knowfactor-train or knowfactor-assemble; for "
        "kf.pt each factor network and their assembly.",
    )
    parser.add_argument(
        "--weights", type=Path, required=True, help="teacher.pt, kd.pt, kf.pt, factors/<t>.pt or multi.pt"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset (default: the data of the run that wrote --weights)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    results = evaluate_file(args.weights, resolve_device(args.device), data=args.data)
    print(json.dumps(results, indent=2))
    return results


def assemble_command(argv: Sequence[str] | None = None) -> dict:
    """``knowfactor-assemble``: plug factor networks together into one multi-task network, no fine-tuning."""
    parser = cli.ArgumentParser(
        prog="knowfactor-assemble",
        description="Combine any subset of factor networks of one factorization into a multi-task network: "
        "one CKN forward, one TSN and head per task.",
    )
    parser.add_argument("--factors", type=Path, nargs="+", required=True, help="factors/<task>.pt files")
    parser.add_argument("--out", type=Path, required=True, help="file to write (e.g. multi.pt)")
    args = parser.parse_args(argv)
    meta = assemble_factors(args.factors, args.out)
    print(f"assembled {len(meta['tasks'])} factor networks ({', '.join(meta['tasks'])}) into {args.out}")
    return meta


def repro_command(argv: Sequence[str] | None = None) -> dict:
    """``knowfactor-repro``: three task bottlenecks, factor networks vs teacher vs KD, assembly, transfer; prints
    ``results.md``."""
    parser = cli.repro_parser(
        "knowfactor-repro",
        "The release's dSprites recipe at CPU scale: per-sample VIB vs KD only vs batch-moment bottleneck (MIG, "
        "leakage and own-task probes), factor networks vs teacher vs KD, assembly, transfer to a held-out task, "
        "on the embedded dSprites-lite, several seeds.",
        repro.PRESET_HELP,
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs per run")
    parser.add_argument(
        "--beta", type=float, default=None, help="bottleneck weight of the VIB and moment runs (default 1e-3)"
    )
    return cli.run_repro(parser, argv, "knowfactor", repro.run, "epochs", "beta")


COMMANDS = {"train": train_command, "eval": eval_command, "assemble": assemble_command, "repro": repro_command}
train_main = cli.console_script(train_command)
eval_main = cli.console_script(eval_command)
assemble_main = cli.console_script(assemble_command)
repro_main = cli.console_script(repro_command)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
