"""Console scripts: ``m3ed-train``, ``m3ed-eval``, ``m3ed-stats``, ``m3ed-make-synthetic``, ``m3ed-repro``.

Without ``--data`` every command works on the synthetic release (written in the real layout, read back
by the real readers). Under torchrun: ``torchrun --nproc_per_node=N -m m3ed.cli train --data DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from m3ed.data import DialogueDataset, collate_dialogues, parse_modalities
from m3ed.engine import build_optimizer, class_weights, cosine_schedule, evaluate, train_epoch
from m3ed.metrics import aggregate_runs, benchmark_table
from m3ed.models import build_model
from m3ed.release import EMOTIONS, M3EDRelease, format_stats, release_stats
from m3ed.synthetic import SyntheticConfig, make_synthetic_release
from shared import checkpoint, cli, distributed
from shared.data import cache_dir, make_loader, set_epoch
from shared.device import resolve_device, seed_everything
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, format_record, get_logger

MODELS = ("mdi", "utt-mlp", "dialoguernn")
PRESETS = {
    # The official MDI recipe (run_htrm.sh): 50 epochs, 32 dialogues per batch, clip 5, cosine, no warm-up.
    "paper": {"model": "mdi", "epochs": 50, "batch_size": 32},
    "small": {"model": "mdi", "epochs": 20, "batch_size": 32},
    # Demo-sized models on the synthetic release: well under a minute on a laptop CPU.
    "demo": {"model": "mdi", "epochs": 15, "batch_size": 8},
}
#: Learning rate by preset and model (official: MDI 3e-5, utterance MLP 1e-3, DialogueRNN 2e-4).
LEARNING_RATES = {
    "paper": {"mdi": 3e-5, "utt-mlp": 1e-3, "dialoguernn": 2e-4},
    "small": {"mdi": 1e-4, "utt-mlp": 1e-3, "dialoguernn": 5e-4},
    "demo": {"mdi": 1e-3, "utt-mlp": 1e-3, "dialoguernn": 1e-3},
}
SPLITS = ("train", "val", "test")
LETTERS = {"audio": "a", "visual": "v", "text": "l"}  # the paper's A, V, L
MODEL_NAMES = {"mdi": "MDI", "utt-mlp": "utterance MLP", "dialoguernn": "DialogueRNN"}


def open_release(data: Path | None, features: str | None = None) -> M3EDRelease:
    """The release at ``data`` (checked), or the synthetic release, written once on first use."""
    if data is None:
        root = cache_dir("m3ed", "synthetic-0")
        if distributed.is_main_process() and not (root / "COMPLETE").exists():
            make_synthetic_release(root, SyntheticConfig(), seed=0)
            checkpoint.atomic_write(root / "COMPLETE", lambda f: f.write("synthetic release, seed 0\n"), binary=False)
        distributed.barrier()
    else:
        root = require_path(data, "--data folder", kind="dir")
    release = M3EDRelease(root, features=features)
    release.check()
    return release


def _model_overrides(args: argparse.Namespace) -> dict:
    if args.model != "mdi":
        return {}
    overrides = {}
    if args.branches:
        branches = tuple(b.strip() for b in args.branches.split(",") if b.strip())
        unknown = set(branches) - {"global", "local", "intra", "inter"}
        if unknown or not branches:
            raise UserError(f"--branches {args.branches!r}: choose from global, local, intra, inter")
        overrides["branches"] = branches
    for key in ("combine", "fusion"):
        if getattr(args, key):
            overrides[key] = getattr(args, key)
    if args.freeze_fusion_projection:
        overrides["freeze_fusion_projection"] = True
    return overrides


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="m3ed-train",
        description="Train MDI (or a baseline) on M3ED's utterance features; the test score is taken at the "
        "epoch with the best validation weighted F1. Without --data: the synthetic release.",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="M3ED release folder (annotation.json, splitInfo/, *.pkl)"
    )
    parser.add_argument("--features", default=None, help="feature pickle name inside --data (default: the only one)")
    parser.add_argument("--model", choices=MODELS, default=None, help="MDI or a baseline")
    parser.add_argument("--modalities", default="avl", help="any of a (audio), v (visual), l or t (text)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: by preset and model)")
    parser.add_argument("--clip", type=float, default=5.0, help="gradient-norm clipping (0: off)")
    parser.add_argument("--class-weights", action="store_true", help="inverse-frequency class weights in the loss")
    parser.add_argument("--branches", default=None, help="MDI branches, e.g. global,local,intra,inter")
    parser.add_argument("--combine", choices=("end", "per_block"), default=None, help="MDI branch combination")
    parser.add_argument("--fusion", choices=("ecat", "lcat", "add", "gate"), default=None, help="MDI fusion")
    parser.add_argument(
        "--freeze-fusion-projection", action="store_true", help="keep the fusion Linear at init (official quirk)"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    parser.add_common_args()
    parser.set_presets(PRESETS, default="demo")
    return parser


def _loaders(release: M3EDRelease, modalities, args, device):
    def dataset(split: str) -> DialogueDataset:
        ids = release.dialogues_in(split)
        if not ids:
            raise UserError(f"{release.root}: the {split} split has no dialogues")
        return DialogueDataset(release.features, ids, modalities)

    common = {"collate_fn": collate_dialogues, "workers": args.workers, "device": device, "seed": args.seed}
    train = make_loader(dataset("train"), args.batch_size, shuffle=True, **common)
    val = make_loader(dataset("val"), args.batch_size, shard=False, **common)
    test = make_loader(dataset("test"), args.batch_size, shard=False, **common)
    return train, val, test


def train(argv: Sequence[str] | None = None) -> dict:
    """``m3ed-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    modalities = parse_modalities(args.modalities)
    if args.epochs < 1 or args.batch_size < 1:
        raise UserError("--epochs and --batch-size must be >= 1")
    args.lr = args.lr or LEARNING_RATES[args.preset][args.model]
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    out = cli.run_dir(args.out, "m3ed", args.resume)
    log = get_logger()
    release = open_release(args.data, args.features)
    train_loader, val_loader, test_loader = _loaders(release, modalities, args, device)
    dims = {m: release.features.dims[m] for m in modalities}
    overrides = _model_overrides(args)
    seed_everything(args.seed)
    model = build_model(args.model, modalities, dims, preset=args.preset, **overrides)
    params = sum(p.numel() for p in model.parameters())
    model = distributed.wrap_model(model, device)
    optimizer = build_optimizer(model, args.lr)
    scheduler = cosine_schedule(optimizer, args.epochs * len(train_loader))
    weight = None
    if args.class_weights:
        train_labels = (y for d in release.dialogues_in("train") for y in release.features.labels[d])
        weight = class_weights(train_labels).to(device)
    spec = {"model": args.model, "modalities": "".join(LETTERS[m] for m in modalities), "preset": args.preset}
    spec.update({"input_dims": dims, "overrides": overrides})
    start, best = 0, {"val": None, "test": None, "epoch": 0, "state": None}
    if args.resume:
        state = checkpoint.restore_training_state(
            checkpoint.load_checkpoint(checkpoint.latest(out)), model, optimizer, scheduler
        )
        start, best = state["epoch"], state["extra"]["best"]
        log.info(f"resumed from {checkpoint.latest(out)} at epoch {start}")
    else:
        cli.write_config(out, args, parameters=params, data_root=str(release.root), **spec)
    metrics = MetricsWriter(out / "metrics.jsonl")
    log.info(f"m3ed-train: {args.model} on {spec['modalities']} ({params:,} parameters), {args.epochs} epochs -> {out}")
    started = time.monotonic()
    for epoch in range(start, args.epochs):
        set_epoch(train_loader, epoch)
        loss = train_epoch(
            model,
            train_loader,
            optimizer,
            scheduler,
            device,
            clip=args.clip or None,
            weight=weight,
            amp=args.amp,
            desc=f"epoch {epoch + 1}/{args.epochs}",
        )
        val, test = evaluate(model, val_loader, device), evaluate(model, test_loader, device)
        if best["val"] is None or val["weighted_f1"] > best["val"]["weighted_f1"]:
            weights = {k: v.detach().clone() for k, v in distributed.unwrap_model(model).state_dict().items()}
            best = {"val": val, "test": test, "epoch": epoch + 1, "state": weights}
        record = {"epoch": epoch + 1, "train_loss": loss, "val_weighted_f1": val["weighted_f1"]}
        record.update({"test_weighted_f1": test["weighted_f1"], "test_accuracy": test["accuracy"]})
        metrics.write(record)
        if not args.quiet:
            log.info(format_record(record))
        state = checkpoint.training_state(model, optimizer, scheduler, epoch=epoch + 1, best=best)
        checkpoint.save_training_checkpoint(out, epoch + 1, state)
    checkpoint.save_checkpoint(out / "model.pt", {"state_dict": best["state"], **spec})
    results = {
        **spec,
        "parameters": params,
        "best_epoch": best["epoch"],
        "val_weighted_f1": 100 * best["val"]["weighted_f1"],
        "test_weighted_f1": 100 * best["test"]["weighted_f1"],
        "test_accuracy": 100 * best["test"]["accuracy"],
        "test_per_class_f1": dict(zip(EMOTIONS, best["test"]["per_class_f1"], strict=True)),
        "train_seconds": round(time.monotonic() - started, 1),
        "data": str(release.root),
    }
    if distributed.is_main_process():
        checkpoint.save_json(out / "results.json", results)
        log.info(
            f"best val WF1 {results['val_weighted_f1']:.2f} at epoch {best['epoch']}: "
            f"test WF1 {results['test_weighted_f1']:.2f}, accuracy {results['test_accuracy']:.2f}"
        )
    return results


def evaluate_run(argv: Sequence[str] | None = None) -> dict:
    """``m3ed-eval``: score a trained run on a split, or print the benchmark table of many runs."""
    parser = cli.ArgumentParser(
        prog="m3ed-eval",
        description="Weighted F1, accuracy and per-class F1 of a run's best-validation model on a split; "
        "or, with --table, the benchmark table (models x modality combinations, drop-worst-val aggregation).",
    )
    parser.add_argument("--run", type=Path, default=None, help="a folder written by m3ed-train")
    parser.add_argument("--split", choices=SPLITS, default="test", help="which split to score")
    parser.add_argument("--data", type=Path, default=None, help="release folder (default: the run's)")
    parser.add_argument("--table", type=Path, nargs="+", default=None, help="run folders to tabulate")
    parser.add_argument("--batch-size", type=int, default=32, help="dialogues per batch")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    if args.table:
        print(tabulate_runs(args.table))
        return {}
    if args.run is None:
        raise UserError("give --run RUN_FOLDER (or --table RUN ...)")
    run = require_path(args.run, "--run folder", kind="dir")
    saved = checkpoint.load_checkpoint(require_path(run / "model.pt", "trained model"))
    config = json.loads(require_path(run / "config.json", "run config").read_text())
    data = args.data or (Path(config["data"]) if config.get("data") else None)
    release = open_release(data, config.get("features"))
    modalities = parse_modalities(saved["modalities"])
    model = build_model(saved["model"], modalities, saved["input_dims"], preset=saved["preset"], **saved["overrides"])
    model.load_state_dict(saved["state_dict"])
    device = resolve_device(args.device)
    dataset = DialogueDataset(release.features, release.dialogues_in(args.split), modalities)
    loader = make_loader(dataset, args.batch_size, collate_fn=collate_dialogues, device=device, shard=False)
    report = evaluate(model.to(device), loader, device)
    result = {"run": str(run), "split": args.split, **report}
    print(json.dumps({k: v for k, v in result.items() if k != "confusion"}, indent=2))
    return result


def tabulate_runs(runs: Sequence[Path]) -> str:
    """The benchmark table of spec section 6 from the ``results.json`` of many runs."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        result = json.loads(require_path(Path(run) / "results.json", "results.json").read_text())
        combination = "+".join(letter.upper() for letter in result["modalities"])
        groups.setdefault((MODEL_NAMES[result["model"]], combination), []).append(result)
    return benchmark_table({key: aggregate_runs(results) for key, results in groups.items()})


def stats(argv: Sequence[str] | None = None) -> dict:
    """``m3ed-stats``: validate a release and print the paper's statistics table for it."""
    parser = cli.ArgumentParser(
        prog="m3ed-stats",
        description="Check every file of an M3ED release and print its statistics (dialogues, turns, "
        "utterances, labels per split, modality coverage). Without --data: the synthetic release.",
    )
    parser.add_argument("--data", type=Path, default=None, help="M3ED release folder")
    parser.add_argument("--features", default=None, help="feature pickle name inside --data")
    args = parser.parse_args(argv)
    release = open_release(args.data, args.features)
    table = release_stats(release)
    print(format_stats(table))
    return table


def make_synthetic(argv: Sequence[str] | None = None) -> dict:
    """``m3ed-make-synthetic``: write a synthetic release in the real file layout."""
    parser = cli.ArgumentParser(
        prog="m3ed-make-synthetic",
        description="Write a small synthetic M3ED release (annotation.json, splitInfo/, relation file, feature "
        "pickle) whose emotions depend on dialogue context and speakers.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write (must not hold a release)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--movies", type=int, default=SyntheticConfig.movies, help="number of TV series")
    args = parser.parse_args(argv)
    if (args.out / "annotation.json").exists():
        raise UserError(f"{args.out} already holds a release: choose another --out")
    if args.movies < 3:
        raise UserError("--movies must be >= 3 (train, val and test need one series each)")
    truth = make_synthetic_release(args.out, SyntheticConfig(movies=args.movies), seed=args.seed)
    print(f"wrote a synthetic M3ED release to {args.out}")
    return truth


def repro(argv: Sequence[str] | None = None) -> dict:
    """``m3ed-repro``."""
    from m3ed.repro import repro as run_repro

    return run_repro(argv)


COMMANDS = {"train": train, "eval": evaluate_run, "stats": stats, "make-synthetic": make_synthetic, "repro": repro}
train_main = cli.console_script(train)
eval_main = cli.console_script(evaluate_run)
stats_main = cli.console_script(stats)
make_synthetic_main = cli.console_script(make_synthetic)
repro_main = cli.console_script(repro)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
