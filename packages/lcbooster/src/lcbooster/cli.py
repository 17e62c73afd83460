"""Console scripts: ``lcbooster-train``, ``lcbooster-eval``, ``lcbooster-make-noise``, ``lcbooster-repro``,
``lcbooster-bench``.

A training run writes into ``--out``: ``config.json``, ``noisy_labels.npy`` (the label file it trained on,
LC-Booster's (2, N) format), ``metrics.jsonl`` (one record per epoch), ``checkpoint-<epoch>.pt`` (both
networks, optimizers, the corrected labels, the GMM loss histories and the RNG: ``--resume`` continues
exactly, also across the correction epoch), ``final.pt`` (the networks and what rebuilds them) and
``results.json``.
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
from torch import nn

from lcbooster import data as ldata
from lcbooster import noise as lnoise
from lcbooster.config import CIFAR, DATASETS, EMBEDDED, METHODS, NOISE_SETTINGS, TrainConfig, build_config, parse_noise
from lcbooster.engine import CoTrainer, TrainData
from lcbooster.models import MODELS, build_model
from lcbooster.transforms import Views
from shared import checkpoint, cli, distributed
from shared.device import resolve_device, seed_everything
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, format_record, get_logger, read_metrics

SETTINGS = {
    f"c{d.removeprefix('cifar')}-{n}": (d, n)
    for d in CIFAR
    for n in NOISE_SETTINGS
    if d == "cifar10" or "asym" not in n
}


def load_images(dataset: str, path: Path | None) -> ldata.ImageData:
    """CIFAR pickles from ``--data``, or an embedded dataset (written as CIFAR-style pickles and read back)."""
    if dataset in CIFAR:
        if path is None:
            raise UserError(f"--dataset {dataset} needs --data (the CIFAR python pickles); nothing is downloaded")
        return ldata.load_cifar(require_path(path, "--data", kind="dir"), kind=dataset)
    if path is not None:
        return dataclasses.replace(ldata.load_cifar(require_path(path, "--data", kind="dir")), flip=False)
    return ldata.load_embedded(dataset)


def make_views(config: TrainConfig, images: ldata.ImageData) -> Views:
    """The weak/strong/test views of the configuration (digits: no flip, translate + cutout + jitter)."""
    if config.dataset in EMBEDDED or not images.flip:
        views = Views.for_digits(images.mean, images.std, images.x_train.shape[-1])
        return views if config.strong_aug == "digits" else dataclasses.replace(views, strong_aug="none", cutout=None)
    strong = config.strong_aug if config.strong_aug in ("rand", "auto") else "none"
    return Views.for_cifar(images.mean, images.std, strong=strong, pad_mode=config.pad_mode)


def noisy_labels(args, config: TrainConfig, images: ldata.ImageData, out: Path) -> torch.Tensor:
    """The noisy label vector: ``--noise-file``, the run's saved copy on resume, or a fresh draw (saved)."""
    saved = out / "noisy_labels.npy"
    count, classes = len(images.y_train), images.num_classes
    if args.resume and saved.exists():
        labels = lnoise.load_noisy_labels(saved, count, classes)
    elif args.noise_file is not None:
        labels = lnoise.load_noisy_labels(require_path(args.noise_file, "--noise-file", kind="file"), count, classes)
    else:
        seed = args.seed if args.noise_seed is None else args.noise_seed
        labels = lnoise.draw_noise(images.y_train.numpy(), config.noise_mode, config.noise_ratio, classes, seed)
    if distributed.is_main_process() and not saved.exists():
        lnoise.save_noisy_labels(saved, labels)
    return torch.as_tensor(labels, dtype=torch.long)


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="lcbooster-train",
        description="Learning with noisy labels: plain cross-entropy (--method ce), DivideMix (--method dividemix) "
        "or LC-Booster = DivideMix + reliable label correction (--method lcbooster). Without --data: the "
        "embedded MNIST-5k with synthetic symmetric noise.",
    )
    parser.add_argument("--method", choices=METHODS, default="lcbooster", help="training method")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default=None, help="shorthand for --dataset + --noise")
    parser.add_argument("--dataset", choices=DATASETS, default=None, help="dataset (default: mnist5k, or --setting's)")
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
    parser.add_common_args()
    parser.set_presets({"paper": {}, "small": {}, "demo": {}}, default="demo")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    dataset, noise = SETTINGS[args.setting] if args.setting else (None, None)
    dataset = args.dataset or dataset or "mnist5k"
    noise = parse_noise(args.noise or noise or "sym80")
    if args.preset == "paper" and dataset in EMBEDDED:
        raise UserError("--preset paper is the CIFAR recipe: pass --setting c10-sym90 (or --dataset) and --data")
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
    }
    return build_config(dataset, noise, args.method, args.preset, **overrides)


def train(argv: Sequence[str] | None = None) -> dict:
    """``lcbooster-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    config = config_from_args(args)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    out = cli.run_dir(args.out, "lcbooster", args.resume)
    log = get_logger()
    images = load_images(config.dataset, args.data)
    labels = noisy_labels(args, config, images, out)
    data = TrainData(
        images=images.x_train,
        noisy_labels=labels,
        test_images=images.x_test,
        test_labels=images.y_test,
        num_classes=images.num_classes,
        views=make_views(config, images),
        clean_labels=images.y_train,
    )
    seed_everything(args.seed)
    in_chans = images.x_train.shape[1]
    count = 1 if config.method == "ce" else 2
    networks = [build_model(config.model, images.num_classes, in_chans, args.weights) for _ in range(count)]
    trainer = CoTrainer(
        config, networks, data, device, seed=args.seed, amp=args.amp, progress=not (args.no_progress or args.quiet)
    )
    pair = nn.ModuleList(trainer.cores)
    start = 0
    if args.resume:
        state = checkpoint.restore_training_state(checkpoint.load_checkpoint(checkpoint.latest(out)), pair)
        trainer.load_state(state["extra"])
        start = state["epoch"]
    else:
        noise_accuracy = lnoise.label_accuracy(labels.numpy(), images.y_train.numpy())
        cli.write_config(
            out,
            args,
            train_config=dataclasses.asdict(config),
            num_classes=images.num_classes,
            in_chans=in_chans,
            noisy_label_accuracy=noise_accuracy,
        )
        log.info(f"noisy labels: {config.noise}, label accuracy {noise_accuracy:.4f} ({len(labels)} samples)")
    metrics = MetricsWriter(out / "metrics.jsonl")
    log.info(f"lcbooster-train: {config.method} on {images.name} {config.noise}, {config.epochs} epochs -> {out}")
    started = time.monotonic()
    for epoch in range(start + 1, config.epochs + 1):
        record = trainer.run_epoch(epoch)
        metrics.write(record)
        if not args.quiet:
            log.info(format_record(record))
        state = checkpoint.training_state(pair, epoch=epoch, **trainer.state())
        checkpoint.save_training_checkpoint(out, epoch, state)
    distributed.barrier()  # every process reads the metrics that the main process finished writing
    results = summarise(config, out, time.monotonic() - started)
    if distributed.is_main_process():
        final = {"models": [c.state_dict() for c in trainer.cores], "config": dataclasses.asdict(config)}
        final |= {"num_classes": images.num_classes, "in_chans": in_chans, "dataset": config.dataset}
        checkpoint.save_checkpoint(out / "final.pt", final)
        checkpoint.save_json(out / "results.json", results)
        log.info(f"test accuracy: last {results['last']:.2f}%, best {results['best']:.2f}%")
    return results


def summarise(config: TrainConfig, out: Path, seconds: float) -> dict:
    """Last / best / last-5 test accuracy, and the labelled set and label precision around the correction."""
    records = read_metrics(out / "metrics.jsonl")
    last = records[-1]
    results = {
        "method": config.method,
        "dataset": config.dataset,
        "noise": config.noise,
        "last": last["test_acc"],
        "best": last["best"],
        "last5": last["last5"],
        "label_accuracy_final": last.get("label_accuracy"),
        "train_seconds": round(seconds, 1),
    }
    corrected = [r for r in records if "relabel_overwritten" in r]
    if corrected:
        at = corrected[0]
        after = next((r for r in records if r["epoch"] == at["epoch"] + 1), None)
        results["correction"] = {
            "epoch": at["epoch"],
            "overwritten": at["relabel_overwritten"],
            "changed": at["relabel_changed"],
            "relabel_accuracy": at["relabel_accuracy"],
            "label_accuracy_before": at["label_accuracy_before"],
            "label_accuracy_after": at["label_accuracy_after"],
            "n_labeled_before": _mean_pair(at, "n_labeled"),
            "labeled_precision_before": _mean_pair(at, "labeled_precision"),
            "n_labeled_after": _mean_pair(after, "n_labeled") if after else None,
            "labeled_precision_after": _mean_pair(after, "labeled_precision") if after else None,
        }
    return results


def _mean_pair(record: dict, key: str) -> float | None:
    values = [record.get(f"{key}_1"), record.get(f"{key}_2")]
    return None if None in values else sum(values) / 2


def load_final(path: Path) -> tuple[list[nn.Module], dict]:
    """The networks of a ``final.pt``, or of a ``checkpoint-<epoch>.pt`` read with its run's ``config.json``."""
    saved = checkpoint.load_checkpoint(require_path(path, "--weights", kind="file"))
    if "models" in saved:
        states, meta = saved["models"], saved
    elif "model" in saved and (path.parent / "config.json").is_file():
        meta = json.loads((path.parent / "config.json").read_text())
        meta["config"] = meta["train_config"]
        states = [{k.split(".", 1)[1]: v for k, v in saved["model"].items() if k.startswith(f"{i}.")} for i in (0, 1)]
        states = [state for state in states if state]
    else:
        raise UserError(f"{path} is not a file written by lcbooster-train (final.pt or checkpoint-<epoch>.pt)")
    networks = []
    for state in states:
        net = build_model(meta["config"]["model"], meta["num_classes"], meta["in_chans"])
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise UserError(f"{path} does not fit model {meta['config']['model']} ({first})") from None
        networks.append(net.eval())
    return networks, meta


def evaluate_file(argv: Sequence[str] | None = None) -> dict:
    """``lcbooster-eval``: test accuracy of the two-network ensemble and of each network."""
    parser = cli.ArgumentParser(
        prog="lcbooster-eval",
        description="Test accuracy of a trained run: the ensemble (mean of both networks' logits) and each net.",
    )
    parser.add_argument("--weights", type=Path, required=True, help="final.pt (or checkpoint-<epoch>.pt) of a run")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default: the run's embedded data)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    networks, meta = load_final(args.weights)
    config = TrainConfig(**meta["config"])
    images = load_images(config.dataset, args.data)
    if images.num_classes != meta["num_classes"]:
        raise UserError(f"{args.weights} has {meta['num_classes']} classes, the data {images.num_classes}")
    device = resolve_device(args.device)
    data = TrainData(
        images.x_train[:0],
        images.y_train[:0],
        images.x_test,
        torch.as_tensor(images.y_test),
        images.num_classes,
        make_views(config, images),
    )
    trainer = CoTrainer(config, networks, data, device, progress=False)
    results = {"weights": str(args.weights), **trainer.evaluate()}
    print(json.dumps(results, indent=2))
    return results


def make_noise(argv: Sequence[str] | None = None) -> dict:
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
    ratio = lnoise.check_noise_ratio(args.ratio)
    out = args.out.with_suffix(f".{args.format}") if args.format else args.out
    if out.suffix not in (".npy", ".json"):
        raise UserError(f"--out {out} must end in .npy or .json (or pass --format)")
    if out.exists():
        raise UserError(f"{out} exists: noise files are never overwritten; choose another --out")
    images = load_images(args.dataset, args.data)
    clean = images.y_train.numpy()
    labels = lnoise.draw_noise(
        clean,
        args.type,
        ratio,
        images.num_classes,
        args.seed,
        include_true_class=not args.exclude_true_class,
        per_class=args.per_class,
    )
    lnoise.save_noisy_labels(out, labels)
    accuracy = lnoise.label_accuracy(labels, clean)
    print(f"wrote {out}: {len(labels)} labels, label accuracy {accuracy:.4f}")
    return {"out": str(out), "label_accuracy": accuracy}


def repro(argv: Sequence[str] | None = None) -> dict:
    """``lcbooster-repro``."""
    from lcbooster.repro import repro as run_repro

    return run_repro(argv)


def bench(argv: Sequence[str] | None = None) -> dict:
    """``lcbooster-bench``."""
    from lcbooster.bench import bench as run_bench

    return run_bench(argv)


COMMANDS = {"train": train, "eval": evaluate_file, "make-noise": make_noise, "repro": repro, "bench": bench}
train_main = cli.console_script(train)
eval_main = cli.console_script(evaluate_file)
make_noise_main = cli.console_script(make_noise)
repro_main = cli.console_script(repro)
bench_main = cli.console_script(bench)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
