"""Console scripts: ``lcbooster-train``, ``lcbooster-eval``, ``lcbooster-make-noise``, ``lcbooster-repro``,
``lcbooster-bench``.

Argument parsing and printing only: the work is :func:`lcbooster.engine.fit` (which documents the files of a
run), :func:`lcbooster.engine.evaluate_file`, :func:`lcbooster.noise.write_noise_file`,
:func:`lcbooster.repro.run` and :mod:`lcbooster.bench`. Under torchrun:
``torchrun --nproc_per_node=N -m lcbooster.cli train --setting c10-sym90 --preset paper --data ROOT``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lcbooster import bench, repro
from lcbooster.config import DATASETS, METHODS, PRESETS, SETTINGS, TrainConfig, build_config, parse_noise
from lcbooster.data import cifar_kind, load_images
from lcbooster.engine import evaluate_file, fit
from lcbooster.models import MODELS
from lcbooster.noise import write_noise_file
from shared import cli, distributed
from shared.device import resolve_device
from shared.errors import UserError
from shared.logging import get_logger


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="lcbooster-train",
        description="Learning with noisy labels: plain cross-entropy (--method ce), DivideMix (--method dividemix) "
        "or LC-Booster = DivideMix + reliable label correction (--method lcbooster). Without --data: the "
        "embedded MNIST-5k with synthetic symmetric noise.",
    )
    parser.add_argument("--method", choices=METHODS, default="lcbooster", help="training method")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default=None, help="shorthand for --dataset + --noise")
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="dataset (default: --setting's, the CIFAR kind of --data, else mnist5k)",
    )
    parser.add_argument("--noise", default=None, help="noise setting sym<percent> or asym<percent> (default: sym80)")
    parser.add_argument("--data", type=Path, default=None, help="CIFAR root (cifar-10-batches-py / cifar-100-python)")
    parser.add_argument("--noise-file", type=Path, default=None, help="noisy labels (.npy (2,N) or DivideMix .json)")
    parser.add_argument("--noise-seed", type=int, default=None, help="seed of the noise draw (default: --seed)")
    parser.add_argument("--model", choices=sorted(MODELS), default=None, help="network (default: the preset's)")
    parser.add_argument("--weights", type=Path, default=None, help="local ImageNet state_dict for resnet50")
    hyper = parser.add_argument_group("method hyper-parameters (default: the setting's released/Table-7 values)")
    for name, kind, text in (
        ("lambda-u", float, "λu, weight of the unlabelled loss"),
        ("lambda-p", float, "weight of the uniform-prior penalty"),
        ("p-threshold", float, "clean-probability threshold of the division"),
        ("temperature", float, "sharpening temperature T"),
        ("alpha", float, "Beta(α, α) of MixMatch"),
        ("relabel-threshold", float, "τ of the reliable label correction"),
        ("warmup-epochs", int, "CE warm-up epochs E_w"),
        ("unlabeled-ratio", int, "unlabelled batch = ratio x labelled batch"),
        ("lr", float, "SGD learning rate"),
    ):
        hyper.add_argument(f"--{name}", type=kind, default=None, help=text)
    hyper.add_argument("--relabel-epochs", default=None, help="comma-separated 1-based epochs of the correction pass")
    hyper.add_argument("--relabel-scope", choices=("all", "unlabel"), default=None, help="samples it may correct")
    hyper.add_argument("--views", choices=("dividemix", "ww_ws", "wwss"), default=None, help="views of each batch")
    hyper.add_argument("--strong-aug", choices=("rand", "auto", "digits", "none"), default=None, help="strong view")
    hyper.add_argument("--eval-bn-in-guess", action="store_true", help="guess with the trained net in eval mode")
    hyper.add_argument("--reset-history-on-relabel", action="store_true", help="clear the 5-epoch loss history")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_common_args(workers=False)
    parser.set_presets({name: {} for name in PRESETS}, default="demo")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of ``lcbooster-train``'s options."""
    dataset, noise = SETTINGS[args.setting] if args.setting else (None, None)
    if args.data is not None and not (args.dataset or dataset):  # CIFAR pickles: the CIFAR recipe, said aloud
        dataset = cifar_kind(args.data)
        get_logger().info(
            f"--data holds {dataset}: the {dataset} recipe ({args.preset} preset); pass --dataset mnist5k or "
            "digits to read CIFAR-style pickles of another dataset with that recipe"
        )
    dataset = args.dataset or dataset or "mnist5k"
    noise = parse_noise(args.noise or noise or "sym80")
    relabel = None
    if args.relabel_epochs is not None:
        try:
            relabel = [int(e) for e in args.relabel_epochs.split(",") if e.strip()]
        except ValueError:
            raise UserError(
                f"--relabel-epochs {args.relabel_epochs!r} is not a comma-separated list of epochs"
            ) from None
    overrides = {
        "model": args.model,
        "lambda_u": args.lambda_u,
        "lambda_p": args.lambda_p,
        "p_threshold": args.p_threshold,
        "temperature": args.temperature,
        "alpha": args.alpha,
        "relabel_threshold": args.relabel_threshold,
        "relabel_epochs": relabel,
        "relabel_scope": args.relabel_scope,
        "warmup_epochs": args.warmup_epochs,
        "unlabeled_ratio": args.unlabeled_ratio,
        "lr": args.lr,
        "views": args.views,
        "strong_aug": args.strong_aug,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "faithful_bn_in_guess": False if args.eval_bn_in_guess else None,
        "reset_history_on_relabel": True if args.reset_history_on_relabel else None,
        "data": args.data,
        "noise_file": args.noise_file,
        "noise_seed": args.noise_seed,
        "weights": args.weights,
        "seed": args.seed,
        "amp": args.amp,
    }
    return build_config(dataset, noise, args.method, args.preset, **overrides)


def train_command(argv: Sequence[str] | None = None) -> dict:
    """``lcbooster-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    config = config_from_args(args)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    with cli.run_folder(args.out, "lcbooster", args.resume) as out:  # no empty folder left if it fails
        results = fit(
            config,
            out,
            device,
            resume=args.resume,
            info={"preset": args.preset, "setting": args.setting},
            quiet=args.quiet,
            progress=not args.no_progress,
        )
    if distributed.is_main_process():
        get_logger().info(
            f"test accuracy: last {results['last']:.2f}%, best {results['best']:.2f}%, weights: {out / 'final.pt'}"
        )
    return results


def eval_command(argv: Sequence[str] | None = None) -> dict:
    """``lcbooster-eval``: test accuracy of the two-network ensemble and of each network."""
    parser = cli.ArgumentParser(
        prog="lcbooster-eval",
        description="Test accuracy of a trained run: the ensemble (mean of both networks' logits) and each net.",
    )
    parser.add_argument("--weights", type=Path, required=True, help="final.pt (or checkpoint-<epoch>.pt) of a run")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default: the run's embedded data)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    results = evaluate_file(args.weights, resolve_device(args.device), data=args.data)
    print(json.dumps(results, indent=2))
    return results


def make_noise_command(argv: Sequence[str] | None = None) -> dict:
    """``lcbooster-make-noise``: write a noisy-label file for a dataset (so runs are comparable)."""
    parser = cli.ArgumentParser(
        prog="lcbooster-make-noise",
        description="Draw symmetric (true class included, as DivideMix/LC-Booster) or asymmetric (CIFAR-10 class "
        "pairs) label noise and save it as LC-Booster's .npy (2, N) or DivideMix's .json; prints the label accuracy.",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="mnist5k", help="dataset")
    parser.add_argument("--data", type=Path, default=None, help="CIFAR root (not needed for embedded datasets)")
    parser.add_argument("--type", choices=("sym", "asym"), default="sym", help="noise type")
    parser.add_argument("--ratio", type=float, required=True, help="noise ratio r in [0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    parser.add_argument("--exclude-true-class", action="store_true", help="symmetric noise never redraws the truth")
    parser.add_argument("--per-class", action="store_true", help="draw r of every class instead of r overall")
    parser.add_argument("--out", type=Path, required=True, help="file to write (.npy or .json)")
    parser.add_argument("--format", choices=("npy", "json"), default=None, help="default: from --out's suffix")
    args = parser.parse_args(argv)
    out = args.out.with_suffix(f".{args.format}") if args.format else args.out
    images = load_images(args.dataset, args.data)
    result = write_noise_file(
        out,
        images.y_train.numpy(),
        images.num_classes,
        args.type,
        args.ratio,
        args.seed,
        include_true_class=not args.exclude_true_class,
        per_class=args.per_class,
    )
    print(f"wrote {out}: {result['labels']} labels, label accuracy {result['label_accuracy']:.4f}")
    return result


def repro_command(argv: Sequence[str] | None = None) -> dict:
    """``lcbooster-repro``: LC-Booster against its controls, paired over seeds; prints ``results.md``."""
    parser = cli.repro_parser(
        "lcbooster-repro",
        "Does LC-Booster's correction help under extreme label noise? LC-Booster against DivideMix with the same "
        "weak/strong views and against itself without the correction (and CE), on an embedded dataset (default: "
        "the UCI digits) at 80/90% symmetric noise: test accuracy, paired differences with 95% intervals over "
        "the seeds, and what the correction did to the labels and the labelled set.",
        repro.PRESET_HELP,
    )
    parser.add_argument(
        "--noise",
        dest="noises",
        type=_noise_list,
        default=",".join(repro.NOISES),
        help="comma-separated noise settings",
    )
    parser.add_argument(
        "--variants",
        type=_variant_list,
        default=",".join(repro.DEFAULT_VARIANTS),
        help=f"comma-separated runs to compare, among {', '.join(repro.VARIANTS)}",
    )
    parser.add_argument("--dataset", choices=repro.DATASETS, default="digits", help="embedded dataset")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the preset's)")
    return cli.run_repro(parser, argv, "lcbooster", repro.run, "noises", "dataset", "epochs", "variants")


def _variant_list(text: str) -> list[str]:
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in variants if v not in repro.VARIANTS]
    if unknown or not variants:
        raise argparse.ArgumentTypeError(f"{text!r}: choose among {', '.join(repro.VARIANTS)}")
    return variants


def _noise_list(text: str) -> list[str]:
    return [parse_noise(noise.strip()) for noise in text.split(",") if noise.strip()]


def bench_command(argv: Sequence[str] | None = None) -> dict:
    """``lcbooster-bench``: one co-divide epoch, or (``--transforms``) the batched augmentations."""
    parser = cli.ArgumentParser(
        prog="lcbooster-bench",
        description="Time one DivideMix (or LC-Booster) co-divide epoch on CIFAR-10-sized input with PreAct "
        "ResNet-18: GMM fit, evaluation and training throughput, and the extrapolated epoch time (--full: "
        "run the whole epoch). --transforms instead times the batched RandAugmentMC and AutoAugment against "
        "their per-sample torchvision reference.",
    )
    parser.add_argument("--method", choices=("dividemix", "lcbooster"), default="dividemix", help="method")
    parser.add_argument("--samples", type=int, default=50_000, help="training-set size N")
    parser.add_argument("--labeled-fraction", type=float, default=0.5, help="|L| / N of the division (extrapolation)")
    parser.add_argument("--eval-samples", type=int, default=2048, help="images timed in the evaluation pass")
    parser.add_argument("--iterations", type=int, default=8, help="co-training iterations timed")
    parser.add_argument("--full", action="store_true", help="run one whole co-divide epoch instead of sampling")
    augment = parser.add_argument_group("--transforms: the augmentations alone")
    augment.add_argument("--transforms", action="store_true", help="time the augmentations instead of an epoch")
    augment.add_argument("--batch-size", type=int, default=128, help="images per augmented batch")
    augment.add_argument("--image-size", type=int, default=32, help="image side")
    augment.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median over them)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument("--amp", action="store_true", help="mixed precision")
    args = parser.parse_args(argv)
    cli.set_threads(args.threads)
    device = resolve_device(args.device)
    if args.transforms:
        result = bench.benchmark_transforms(
            device, batch_size=args.batch_size, image_size=args.image_size, rounds=args.rounds
        )
    else:
        result = bench.benchmark(
            device,
            method=args.method,
            samples=args.samples,
            labeled_fraction=args.labeled_fraction,
            eval_samples=args.eval_samples,
            iterations=args.iterations,
            amp=args.amp,
            full=args.full,
        )
    print(bench.format_result(result))
    return result


COMMANDS = {
    "train": train_command,
    "eval": eval_command,
    "make-noise": make_noise_command,
    "repro": repro_command,
    "bench": bench_command,
}
train_main = cli.console_script(train_command)
eval_main = cli.console_script(eval_command)
make_noise_main = cli.console_script(make_noise_command)
repro_main = cli.console_script(repro_command)
bench_main = cli.console_script(bench_command)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
