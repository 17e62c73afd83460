"""Console scripts: ``probteacher-train``, ``probteacher-eval``, ``probteacher-make-toy``, ``probteacher-repro``,
``probteacher-bench``.

Argument parsing and printing only: the work is :func:`probteacher.engine.fit` (which documents the files of a
run), :func:`probteacher.engine.evaluate_file` and :func:`probteacher.toy.make_toy_fog`. Without data options
training runs on the synthetic ``toy-fog`` pair, generated once into the cache. Under torchrun:
``torchrun --nproc_per_node=N -m probteacher.cli train --preset paper --task c2f --source ... --target ...``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from probteacher import bench, repro
from probteacher.config import COMPAT, METHODS, METRICS, OPTIMIZERS, PRESET_HELP, PRESETS, TASKS, build_config
from probteacher.engine import evaluate_file, fit
from probteacher.models import SIZES
from probteacher.toy import FOG_LEVELS, OBJECT_KINDS, make_toy_fog
from shared import cli, distributed
from shared.device import resolve_device
from shared.logging import get_logger

SPEC_HELP = "voc:ROOT:SPLIT (a Pascal VOC folder) or coco:ANNOTATION_JSON:IMAGES_ROOT"


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="probteacher-train",
        description="Train Probabilistic Teacher (Chen et al., ICML 2022): a Faster R-CNN with Gaussian RPN/ROI "
        "heads, source-only burn-in, then a mean teacher whose threshold-free soft pseudo-labels (class "
        "distributions and box uncertainties) train the student through the Entropy Focal Loss, with learnable "
        "anchors. Without --source/--target: the synthetic toy-fog pair (generated and cached once). Presets: "
        + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()),
    )
    data = parser.add_argument_group("data (a --task's classes; real tasks read local folders)")
    data.add_argument("--task", choices=list(TASKS), default=None, help="adaptation task (by preset)")
    data.add_argument("--source", default=None, help=f"labelled source train split: {SPEC_HELP}")
    data.add_argument("--target", default=None, help="unlabelled target train split (same forms)")
    data.add_argument("--target-test", default=None, help="labelled target test split (same forms)")
    data.add_argument("--source-test", default=None, help="labelled source test split (optional)")
    data.add_argument("--classes", type=cli.comma_list(), default=None, help="class names a,b,c (default: task's)")
    method = parser.add_argument_group("method")
    method.add_argument("--method", choices=METHODS, default=None, help="pt, or source-only (burn-in throughout)")
    method.add_argument(
        "--hard-threshold",
        type=float,
        default=None,
        help="ablation: teacher boxes with class probability >= T as ground truth",
    )
    method.add_argument("--no-efl", action="store_true", help="ablation: no Entropy Focal Loss weights")
    method.add_argument("--fixed-anchors", action="store_true", help="ablation: no anchor adaptation")
    method.add_argument(
        "--compat", choices=COMPAT, default=None, help="official: every known quirk of the release (see config.py)"
    )
    method.add_argument(
        "--tau", type=float, nargs="+", default=None, help="teacher temperatures: one, or classification localisation"
    )
    method.add_argument("--efl-lambda", type=float, nargs="+", default=None, help="EFL exponents: one, or cls loc")
    method.add_argument("--ema-keep-rate", type=float, default=None, help="teacher EMA keep rate")
    method.add_argument("--burn-in", type=int, default=None, help="source-only iterations before the teacher")
    optim = parser.add_argument_group("model and optimisation (linear warm-up, then constant lr)")
    optim.add_argument("--detector", choices=sorted(SIZES), default=None, help="detector size")
    optim.add_argument("--weights", type=Path, default=None, help="local backbone weights (.pth); default random")
    optim.add_argument("--iterations", type=int, default=None, help="training iterations")
    optim.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="sgd (the release) or adamw (by preset)")
    optim.add_argument("--lr", type=float, default=None, help="learning rate (by preset)")
    optim.add_argument("--eval-every", type=int, default=None, help="iterations between evaluations (0: at the end)")
    optim.add_argument("--checkpoint-every", type=int, default=None, help="iterations between checkpoints")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quiet", action="store_true", help="no log lines")
    parser.add_common_args(epochs=False)
    parser.set_presets({name: {} for name in PRESETS}, default="demo")
    return parser


def _pair(values: list[float] | None) -> list[float] | None:
    return values if values is None or len(values) != 1 else values * 2


def train_command(argv: Sequence[str] | None = None) -> dict:
    """``probteacher-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    cli.set_threads(args.threads)
    config = build_config(
        args.preset,
        task=args.task,
        source=args.source,
        target=args.target,
        target_test=args.target_test,
        source_test=args.source_test,
        classes=args.classes,
        method=args.method,
        hard_threshold=args.hard_threshold,
        efl=False if args.no_efl else None,
        learnable_anchors=False if args.fixed_anchors else None,
        compat=args.compat,
        tau=_pair(args.tau),
        efl_lambda=_pair(args.efl_lambda),
        ema_keep_rate=args.ema_keep_rate,
        burn_in=args.burn_in,
        detector=args.detector,
        weights=args.weights,
        iterations=args.iterations,
        optimizer=args.optimizer,
        lr=args.lr,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        batch_source=args.batch_size,
        batch_target=args.batch_size,
        workers=args.workers,
        seed=args.seed,
        amp=args.amp or None,
    )
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    with cli.run_folder(args.out, "probteacher", args.resume) as out:
        results = fit(config, out, device, resume=args.resume, quiet=args.quiet, info={"preset": args.preset})
    if distributed.is_main_process() and not args.quiet:
        line = ", ".join(
            f"{split} {which} {m['AP50']:.3f}"
            for split in ("target_test", "source_test")
            for which, m in results.get(split, {}).items()
        )
        get_logger().info(f"AP50: {line}; weights: {out / 'final.pt'}")
    return results


def eval_command(argv: Sequence[str] | None = None) -> dict:
    """``probteacher-eval``: the AP of a trained student or teacher, printed as JSON."""
    parser = cli.ArgumentParser(
        prog="probteacher-eval",
        description="Evaluate a trained detector: VOC AP50 all-point (voc12, the release's evaluator), 11-point "
        "(voc07) or COCO AP@[.5:.95] (coco), overall and per class.",
    )
    parser.add_argument("--weights", type=Path, required=True, help="final.pt (or checkpoint-<iteration>.pt)")
    parser.add_argument("--which", choices=("teacher", "student"), default="teacher", help="model to evaluate")
    parser.add_argument("--data", default=None, help=f"{SPEC_HELP} (default: the run's target test split)")
    parser.add_argument("--classes", type=cli.comma_list(), default=None, help="class names (default: the run's)")
    parser.add_argument("--metric", choices=METRICS, default="voc12", help="AP definition")
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    cli.set_threads(args.threads)
    results = evaluate_file(
        args.weights,
        which=args.which,
        data=args.data,
        classes=args.classes,
        metric=args.metric,
        device=resolve_device(args.device),
        batch_size=args.batch_size,
    )
    print(json.dumps(results, indent=2))
    return results


def make_toy_command(argv: Sequence[str] | None = None) -> dict:
    """``probteacher-make-toy``: write the synthetic source / fogged target pair as Pascal VOC folders."""
    parser = cli.ArgumentParser(
        prog="probteacher-make-toy",
        description="Write the synthetic domain-shift pair: shapes (or digits) over photo backgrounds as the "
        "source, the same under a depth-dependent fog (Foggy-Cityscapes-like) as the target, each a Pascal VOC "
        "folder with train and test splits (out/source, out/target).",
    )
    parser.add_argument("--out", type=Path, required=True, help="new (or empty) output folder")
    parser.add_argument("--objects", choices=OBJECT_KINDS, default="shapes", help="object kind (3 or 10 classes)")
    parser.add_argument("--fog-level", choices=list(FOG_LEVELS), default="dense", help="mean fog transmission")
    parser.add_argument("--scale-shift", type=float, default=1.0, help="target objects larger by this factor")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--source-train", type=int, default=1500, help="labelled source train images")
    parser.add_argument("--target-train", type=int, default=1500, help="unlabelled target train images")
    parser.add_argument("--test", type=int, default=300, help="test images per domain")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    args = parser.parse_args(argv)
    print(f"writing the toy pair to {args.out} ...", flush=True)
    summary = make_toy_fog(
        args.out,
        n_source_train=args.source_train,
        n_target_train=args.target_train,
        n_test=args.test,
        size=args.size,
        objects=args.objects,
        fog_level=args.fog_level,
        scale_shift=args.scale_shift,
        seed=args.seed,
    )
    counts = ", ".join(f"{name} {s['images']}" for name, s in summary["splits"].items())
    print(f"wrote {counts} images ({summary['seconds']} s) to {args.out}")
    return summary


def repro_command(argv: Sequence[str] | None = None) -> dict:
    """``probteacher-repro``: source-only against PT and its ablations on the fogged toy target."""
    parser = cli.repro_parser(
        "probteacher-repro",
        "Does the Probabilistic Teacher adapt a detector to fog? On the synthetic toy-fog pair, per seed: one "
        "source burn-in, then source-only, PT, PT without EFL, PT without anchor adaptation and hard-threshold "
        "pseudo-labels, each branched from that burn-in; VOC AP50 on the fogged target and the source test "
        "splits, paired differences over seeds.",
        {preset: repro.preset_help(preset) for preset in repro.SCALES},
    )
    return cli.run_repro(parser, argv, "probteacher", repro.run)


def bench_command(argv: Sequence[str] | None = None) -> dict:
    """``probteacher-bench``: images/s of a PT adaptation step against a plain Faster R-CNN step, and inference."""
    parser = cli.ArgumentParser(
        prog="probteacher-bench",
        description="Images/s of one PT adaptation step (EMA, teacher on the weak target views, student on the "
        "source views and the strong target views) against one supervised step of torchvision's plain Faster "
        "R-CNN with the same backbone, anchors, batch and image size, interleaved in one process; and inference "
        "images/s. PT's overhead is their ratio. Images: the toy-fog set resized to --size.",
    )
    parser.add_argument("--detector", choices=list(SIZES), default="tiny", help="backbone size")
    parser.add_argument("--size", type=int, default=128, help="image side (the official scale is 600)")
    parser.add_argument("--batch-size", type=int, default=2, help="source (and target) images per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each kind (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    cli.set_threads(args.threads)
    results = bench.run(
        resolve_device(args.device),
        detector=args.detector,
        batch_size=args.batch_size,
        size=args.size,
        steps=args.steps,
        warmup=args.warmup,
    )
    s = results["seconds"]
    print(
        f"{results['detector']} at {results['size']}px, batch {results['batch_size']}, {results['threads']} "
        f"thread(s) on {results['device']}: PT step {s['pt']:.3f} s ({results['pt_images_per_s']} source images/s), "
        f"plain Faster R-CNN step {s['plain']:.3f} s ({results['plain_images_per_s']} images/s): PT costs "
        f"{results['pt_overhead']}x; inference {results['inference_images_per_s']} images/s",
        flush=True,
    )
    return results


COMMANDS = {
    "train": train_command,
    "eval": eval_command,
    "make-toy": make_toy_command,
    "repro": repro_command,
    "bench": bench_command,
}
train_main = cli.console_script(train_command)
eval_main = cli.console_script(eval_command)
make_toy_main = cli.console_script(make_toy_command)
repro_main = cli.console_script(repro_command)
bench_main = cli.console_script(bench_command)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
