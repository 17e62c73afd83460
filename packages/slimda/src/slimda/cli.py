"""Console scripts: ``slimda-train``, ``slimda-eval``, ``slimda-select``, ``slimda-export``, ``slimda-flops``,
``slimda-repro``.

A training run writes into ``--out``: ``config.json``, ``metrics.jsonl`` (a record every ``--log-every``
iterations, with target accuracy at the largest and smallest width every ``--eval-every``),
``checkpoint-<iteration>.pt`` (bank, optimizer and scaler: ``--resume`` continues exactly, the architecture
draws being a function of the iteration), ``final.pt`` (the bank and what rebuilds it) and ``results.json``
(target accuracy of every uniform width of the bank, every head).
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

from shared import checkpoint, cli, distributed
from shared.device import resolve_device, seed_everything
from shared.errors import UserError, require_path
from shared.logging import MetricsWriter, Progress, format_record, get_logger
from shared.report import markdown_table
from slimda import data as sdata
from slimda.augment import Pipeline
from slimda.config import DATASETS, EMBEDDED, HEADS, METHODS, RESNET_GRID, SLIMCNN_GRID, TrainConfig, build_config
from slimda.engine import Evaluator, Trainer
from slimda.export import check_new_folder, export_architecture
from slimda.flops import count_macs, count_params, parse_budget
from slimda.models import BACKBONES, KNOWLEDGE_HEADS, Arch, ModelBank, knowledge, load_torchvision_weights
from slimda.sampling import SPACES, ArchSampler
from slimda.upem import (
    KINDS,
    bank_ensemble,
    candidate_architectures,
    kendall_tau,
    score_architectures,
    select,
    spearman_rho,
)


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


def load_domains(
    dataset: str, data: Path | None, source: str | None, target: str | None, list_dir: str | None, size: int
) -> tuple[sdata.Domain, sdata.Domain]:
    """The (source, target) domains: an embedded shift, or two domains of a real dataset under ``data``."""
    if data is None:
        if dataset not in EMBEDDED:
            raise UserError(f"--dataset {dataset} needs --data (its domain folders); nothing is downloaded")
        if source or target:
            raise UserError("--source/--target name domains under --data; the embedded datasets fix theirs")
        root = sdata.embedded_root(dataset)
        source, target = sdata.EMBEDDED_DOMAINS[dataset]
        data = root
    elif not (source and target):
        raise UserError("--data needs --source and --target (the domain names under it)")
    data = require_path(data, "--data", kind="dir")
    domains = sdata.load_domain(data, source, size, list_dir), sdata.load_domain(data, target, size, list_dir)
    sdata.check_same_classes(*domains)
    return domains


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
    hyper = parser.add_argument_group("method (defaults: the spec's; [U] = unverified against the paper)")
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
    parser.add_common_args()
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
    if args.epochs is not None:
        raise UserError("slimda-train counts --iterations, not --epochs")
    method = "symnets" if args.no_seed and args.method == "slimda" else args.method
    overrides = {
        "method": method,
        "backbone": args.backbone,
        "iterations": args.iterations,
        "warmup_fraction": args.warmup_fraction,
        "batch_size": args.batch_size,
        "archs_per_iter": args.archs_per_iter,
        "lr": args.lr,
        "backbone_lr_mult": args.backbone_lr_mult
        if args.backbone_lr_mult is not None
        else (0.1 if args.weights else None),
        "seed_weight": args.seed_weight,
        "seed_temperature": args.seed_temperature,
        "seed_source_head": args.seed_source_head,
        "seed_on_source": True if args.seed_on_source else None,
        "ostc": False if args.no_ostc else None,
        "aux_source_ce": args.aux_source_ce,
        "entropy_min": False if args.no_entropy_min else None,
        "train_space": args.train_space,
        "sandwich": False if args.no_sandwich else None,
        "grid": parse_grid(args.grid),
        "image_size": args.image_size,
        "crop": args.crop,
        "flip": args.flip,
        "eval_every": args.eval_every,
        "bn_calib_batches": args.bn_calib_batches,
        "bn_calib_domain": args.bn_calib_domain,
        "eval_head": args.head,
    }
    return build_config(args.preset, args.dataset or "mnist-digits", **overrides)


def calibration_images(config: TrainConfig, source: sdata.Domain, target: sdata.Domain) -> torch.Tensor:
    """Images of the BN recalibration (``--bn-calib-domain``; target by default, AdaBN-style)."""
    if config.bn_calib_domain == "both":
        return torch.cat([source.images, target.images])
    return (source if config.bn_calib_domain == "source" else target).images


def make_evaluator(
    bank: ModelBank,
    config: TrainConfig,
    source: sdata.Domain,
    target: sdata.Domain,
    device: torch.device,
    max_images: int | None = None,
) -> Evaluator:
    """Accuracy on the target images (the transductive UDA protocol), BN recalibrated per architecture.

    ``max_images`` scores a fixed random subset of the target (calibration still reads every domain image).
    """
    images, labels = target.images, target.labels
    if max_images is not None and max_images < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:max_images]
        images, labels = images[keep], labels[keep]
    return Evaluator(
        bank,
        Pipeline(config.crop, config.flip),
        calibration_images(config, source, target),
        images,
        labels,
        device,
        config.bn_calib_batches,
    )


def bank_widths(config: TrainConfig) -> list[float]:
    """The uniform widths of the bank, largest first (the rows of the per-width tables)."""
    return sorted(config.grid, reverse=True)


def evaluate_widths(evaluator: Evaluator, bank: ModelBank, widths: Sequence[float]) -> dict[str, dict[str, float]]:
    return {f"{w:g}": evaluator.accuracy(evaluator.outputs(Arch.uniform(w, bank.num_groups))) for w in widths}


def train(argv: Sequence[str] | None = None) -> dict:
    """``slimda-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    config = config_from_args(args)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    out = cli.run_dir(args.out, "slimda", args.resume)
    log = get_logger()
    dataset = args.dataset or "mnist-digits"
    source, target = load_domains(dataset, args.data, args.source, args.target, args.list_dir, config.image_size)
    seed_everything(args.seed)
    bank = ModelBank(config.backbone, source.num_classes)
    if args.weights is not None:
        load_torchvision_weights(bank, require_path(args.weights, "--weights", kind="file"))
    trainer = Trainer(config, bank, source.images, source.labels, target.images, device, args.seed, args.amp)
    evaluator = make_evaluator(bank, config, source, target, device)
    start = 0
    if args.resume:
        saved = checkpoint.load_checkpoint(checkpoint.latest(out))
        state = checkpoint.restore_training_state(saved, bank, trainer.optimizer, scaler=trainer.scaler)
        start = state["step"]
    else:
        cli.write_config(
            out,
            args,
            train_config=dataclasses.asdict(config),
            num_classes=source.num_classes,
            classes=source.classes,
            source=source.name,
            target=target.name,
        )
    if not args.quiet:
        log.info(
            f"slimda-train: {config.method} on {dataset} {source.name} ({len(source.labels)}) -> {target.name} "
            f"({len(target.labels)}), {config.backbone}, {config.iterations} iterations -> {out}"
        )
    metrics = MetricsWriter(out / "metrics.jsonl")
    metrics.rewind("iteration", start)
    smallest = Arch.uniform(min(config.grid), bank.num_groups)
    running: dict[str, float] = {}
    last_record = start
    started = time.monotonic()
    progress = Progress(range(start, config.iterations), desc="slimda-train", total=config.iterations - start)
    for it in progress:
        for key, value in trainer.step(it).items():
            running[key] = running.get(key, 0.0) + value
        done = it + 1
        if done % args.log_every and done % config.eval_every and done != config.iterations:
            continue
        record = {"iteration": done, **{k: v / (done - last_record) for k, v in running.items()}}
        running, last_record = {}, done
        if done % config.eval_every == 0 or done == config.iterations:
            for name, arch in (("largest", bank.full_arch()), ("smallest", smallest)):
                record[f"acc_{name}"] = evaluator.accuracy(evaluator.outputs(arch))[config.head]
            state = checkpoint.training_state(bank, trainer.optimizer, scaler=trainer.scaler, step=done)
            checkpoint.save_training_checkpoint(out, done, state)
        metrics.write(record)
        progress.update(**{k: v for k, v in record.items() if k.startswith(("loss", "acc"))})
        if not args.quiet:
            log.info(format_record(record))
    results = {
        "method": config.method,
        "dataset": dataset,
        "source": source.name,
        "target": target.name,
        "head": config.head,
        "accuracy": evaluate_widths(evaluator, bank, bank_widths(config)),
        "train_seconds": round(time.monotonic() - started, 1),
    }
    if distributed.is_main_process():
        final = {
            "model": bank.state_dict(),
            "config": dataclasses.asdict(config),
            "num_classes": source.num_classes,
            "classes": source.classes,
            "data": {
                "dataset": dataset,
                "data": str(args.data) if args.data else None,
                "source": source.name,
                "target": target.name,
                "list_dir": args.list_dir,
            },
        }
        checkpoint.save_checkpoint(out / "final.pt", final)
        checkpoint.save_json(out / "results.json", results)
        if not args.quiet:
            rows = [
                [w, *(f"{acc[h]:.2f}" for h in ("ct", "cs", "ca", "folded"))] for w, acc in results["accuracy"].items()
            ]
            print(markdown_table(["width", "Ct", "Cs", "Ca", "folded"], rows))
    return results


def load_bank(path: Path) -> tuple[ModelBank, TrainConfig, dict]:
    """The bank of a ``final.pt`` (or of a ``checkpoint-<iteration>.pt`` beside its run's ``config.json``)."""
    saved = checkpoint.load_checkpoint(require_path(path, "--weights", kind="file"))
    if "config" in saved and "model" in saved:
        meta = saved
    elif "model" in saved and (path.parent / "config.json").is_file():
        config_file = json.loads((path.parent / "config.json").read_text())
        data_args = {k: config_file.get(k) for k in ("dataset", "data", "list_dir")}
        meta = {
            "model": saved["model"],
            "config": config_file["train_config"],
            "num_classes": config_file["num_classes"],
            "classes": config_file["classes"],
            "data": {**data_args, "source": config_file["source"], "target": config_file["target"]},
        }
        meta["data"]["dataset"] = meta["data"]["dataset"] or "mnist-digits"
    else:
        raise UserError(f"{path} is not a file written by slimda-train (final.pt or checkpoint-<iteration>.pt)")
    values = dict(meta["config"])
    values["grid"] = tuple(values["grid"])
    config = TrainConfig(**values)
    bank = ModelBank(config.backbone, meta["num_classes"])
    try:
        bank.load_state_dict(meta["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"{path} does not fit a {config.backbone} bank ({first})") from None
    return bank, config, meta


def domains_of_run(meta: dict, config: TrainConfig, data: Path | None) -> tuple[sdata.Domain, sdata.Domain]:
    """The run's source and target domains (``--data`` overrides where a real dataset now lives)."""
    info = meta["data"]
    root = data if data is not None else (Path(info["data"]) if info["data"] else None)
    source, target = (info["source"], info["target"]) if root is not None else (None, None)
    return load_domains(info["dataset"], root, source, target, info["list_dir"], config.image_size)


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


def evaluate_file(argv: Sequence[str] | None = None) -> dict:
    """``slimda-eval``."""
    args = eval_parser().parse_args(argv)
    bank, config, meta = load_bank(args.weights)
    config = dataclasses.replace(
        config,
        eval_head=args.head if args.head != "auto" else config.eval_head,
        bn_calib_batches=args.bn_calib_batches or config.bn_calib_batches,
    )
    arch = bank.parse_arch(args.arch)
    device = resolve_device(args.device)
    source, target = domains_of_run(meta, config, args.data)
    evaluator = make_evaluator(bank.to(device), config, source, target, device)
    accuracy = evaluator.accuracy(evaluator.outputs(arch))
    full = count_macs(bank, bank.full_arch(), config.crop)
    macs = count_macs(bank, arch, config.crop)
    results = {
        "arch": str(arch),
        "head": config.head,
        "accuracy": accuracy[config.head],
        "accuracy_by_head": accuracy,
        "macs": macs,
        "macs_fraction": macs / full,
        "params": count_params(bank, arch),
    }
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
    parser.add_argument("--budgets", default="1,1/2,1/4,1/8", help="comma-separated fractions of the full MACs")
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


def check_budgets(bank: ModelBank, config: TrainConfig, budgets: list[float]) -> None:
    """A budget below the smallest architecture's MACs is refused, naming that architecture."""
    full = count_macs(bank, bank.full_arch(), config.crop)
    smallest = Arch.uniform(min(config.grid), bank.num_groups)
    need = count_macs(bank, smallest, config.crop)
    for budget in budgets:
        if budget * full < need:
            raise UserError(
                f"no architecture meets budget {budget:.4g} ({budget * full / 1e6:.2f} MMACs): the smallest, "
                f"{smallest}, needs {need / 1e6:.2f} MMACs = 1/{full / need:.1f} of the full model"
            )


def select_file(argv: Sequence[str] | None = None) -> dict:
    """``slimda-select``: the UPEM choice per budget (with accuracy and Kendall τ where labels exist)."""
    args = select_parser().parse_args(argv)
    bank, config, meta = load_bank(args.weights)
    budgets = [parse_budget(b) for b in args.budgets.split(",") if b.strip()]
    check_budgets(bank, config, budgets)
    device = resolve_device(args.device)
    source, target = domains_of_run(meta, config, args.data)
    evaluator = make_evaluator(bank.to(device), config, source, target, device, args.max_images)
    results = run_selection(
        bank,
        config,
        evaluator,
        budgets,
        args.upem,
        args.samples,
        args.reference_archs,
        args.seed,
        progress=not args.no_progress,
    )
    results["weights"] = str(args.weights)
    text = selection_markdown(results)
    print(text)
    if args.out is not None:
        checkpoint.save_json(args.out / "selection.json", results)
        checkpoint.atomic_write(args.out / "selection.md", lambda f: f.write(text + "\n"), binary=False)
    return results


def run_selection(
    bank: ModelBank,
    config: TrainConfig,
    evaluator: Evaluator,
    budgets: list[float],
    kind: str,
    samples: int,
    reference_archs: int,
    seed: int,
    progress: bool = False,
) -> dict:
    """Score candidates of every budget once (UPEM, accuracy) and pick per budget; rank correlations over all."""
    sampler = ArchSampler(bank.num_groups, config.grid, 2, "stagewise", True, seed)

    def macs(arch: Arch) -> int:
        return count_macs(bank, arch, config.crop)

    full = macs(bank.full_arch())
    generator = torch.Generator().manual_seed(seed + 1)
    references = [bank.full_arch()]
    while len(references) < min(reference_archs, sampler.space_size()):
        arch = sampler.random(generator)
        if arch not in references:
            references.append(arch)
    cache: dict[Arch, object] = {}

    def outputs(arch: Arch):
        if arch not in cache:
            cache[arch] = evaluator.outputs(arch)
        return cache[arch]

    reference = None
    if kind in ("ensemble_kl", "ensemble_agreement"):
        reference = bank_ensemble([knowledge(outputs(a), config.seed_source_head) for a in references])
    candidates: list[Arch] = []
    for budget in budgets:
        for arch in candidate_architectures(sampler, macs, budget * full, bank_widths(config), samples, seed):
            if arch not in candidates:
                candidates.append(arch)
    wrap = (lambda items: Progress(items, desc="slimda-select")) if progress else (lambda items: items)
    has_labels = evaluator.labels is not None
    scored = score_architectures(
        candidates,
        outputs,
        macs,
        kind,
        reference,
        config.seed_source_head,
        accuracy=(lambda o: evaluator.accuracy(o)[config.head]) if has_labels else None,
        progress=wrap,
    )
    rows = []
    for budget in budgets:
        chosen, oracle = select(scored, budget * full)
        row = {
            "budget": budget,
            "arch": str(chosen.arch),
            "macs": chosen.macs,
            "macs_fraction": chosen.macs / full,
            "upem": chosen.upem,
            "candidates": sum(s.macs <= budget * full for s in scored),
        }
        if oracle is not None:
            row |= {
                "accuracy": chosen.accuracy,
                "oracle_arch": str(oracle.arch),
                "oracle_accuracy": oracle.accuracy,
                "gap": oracle.accuracy - chosen.accuracy,
            }
        rows.append(row)
    results = {
        "upem": kind,
        "head": config.head,
        "reference_archs": [str(a) for a in references],
        "selection": rows,
        "candidates": [{"arch": str(s.arch), "macs": s.macs, "upem": s.upem, "accuracy": s.accuracy} for s in scored],
    }
    if has_labels:
        upem, acc = [-s.upem for s in scored], [s.accuracy for s in scored]
        results |= {
            "kendall_tau": kendall_tau(upem, acc),
            "spearman_rho": spearman_rho(upem, acc),
            "num_candidates": len(scored),
        }
    return results


def selection_markdown(results: dict) -> str:
    headers = ["budget", "UPEM choice", "MACs fraction", "UPEM"]
    labelled = "kendall_tau" in results
    if labelled:
        headers += ["accuracy", "oracle-best", "oracle accuracy", "gap"]
    rows = []
    for r in results["selection"]:
        row = [f"{r['budget']:.4g}", r["arch"], f"{r['macs_fraction']:.4f}", f"{r['upem']:.4f}"]
        if labelled:
            row += [f"{r['accuracy']:.2f}", r["oracle_arch"], f"{r['oracle_accuracy']:.2f}", f"{r['gap']:.2f}"]
        rows.append(row)
    text = markdown_table(headers, rows)
    if labelled:
        text += (
            f"\n\nUPEM ({results['upem']}) vs target accuracy over {results['num_candidates']} architectures: "
            f"Kendall τ {results['kendall_tau']:.3f}, Spearman ρ {results['spearman_rho']:.3f}"
        )
    return text


def export_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="slimda-export",
        description="Export one architecture of a trained bank as a standalone torchvision-style model: a folder "
        "with model.py (plain PyTorch, no slimda), arch.json and weights.pt, BN statistics recalibrated for it.",
    )
    parser.add_argument("--weights", type=Path, required=True, help="final.pt of slimda-train")
    parser.add_argument("--arch", required=True, help="uniform width (0.5) or one width per group (0.5-0.25-...)")
    parser.add_argument("--head", choices=("ct", "cs", "ca"), default=None, help="deployed head (default: the run's)")
    parser.add_argument("--out", type=Path, required=True, help="new folder to write")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default: the run's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser


def export_file(argv: Sequence[str] | None = None) -> dict:
    """``slimda-export``: BN-recalibrate the architecture on the run's calibration images, then export it."""
    args = export_parser().parse_args(argv)
    check_new_folder(args.out)
    bank, config, meta = load_bank(args.weights)
    arch = bank.parse_arch(args.arch)
    head = args.head or config.head
    if head not in ("ct", "cs", "ca"):
        raise UserError(f"the run reports head {head!r}, which is not a plain linear layer: pass --head ct, cs or ca")
    device = resolve_device(args.device)
    source, target = domains_of_run(meta, config, args.data)
    evaluator = make_evaluator(bank.to(device), config, source, target, device)
    accuracy = evaluator.accuracy(evaluator.outputs(arch))[head]
    info = {
        "classes": meta["classes"],
        "crop": config.crop,
        "image_size": config.image_size,
        "normalise": "imagenet",
        "target_accuracy": accuracy,
        "source": meta["data"]["source"],
        "target": meta["data"]["target"],
    }
    folder = export_architecture(bank.cpu(), arch, args.out, head=head, meta=info)
    print(f"wrote {folder}: {arch} ({head} head), target accuracy {accuracy:.2f}%")
    return {"out": str(folder), "arch": str(arch), "head": head, "accuracy": accuracy}


def flops_file(argv: Sequence[str] | None = None) -> dict:
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
    bank = ModelBank(args.model, args.num_classes)
    size = args.input_size or (16 if args.model == "slimcnn" else 224)
    grid = SLIMCNN_GRID if args.model == "slimcnn" else RESNET_GRID
    archs = (
        [bank.parse_arch(a) for a in args.arch]
        if args.arch
        else [Arch.uniform(w, bank.num_groups) for w in sorted(grid, reverse=True)]
    )
    full = count_macs(bank, bank.full_arch(), size, include_heads=args.heads)
    unit, scale = ("G", 1e9) if full >= 1e9 else ("M", 1e6)
    rows, records = [], []
    for arch in archs:
        macs = count_macs(bank, arch, size, include_heads=args.heads)
        params = count_params(bank, arch)
        records.append(
            {
                "arch": str(arch),
                "macs": macs,
                "fraction": macs / full,
                "params": params,
                "feature_dim": bank.feature_dim(arch),
            }
        )
        rows.append(
            [
                str(arch),
                bank.feature_dim(arch),
                f"{macs / scale:.3f} {unit}",
                f"1/{full / macs:.1f}",
                f"{params / 1e6:.2f} M",
            ]
        )
    print(markdown_table(["arch", "pooled feature", "MACs", "fraction", "params"], rows))
    return {"model": args.model, "input_size": size, "archs": records}


def repro(argv: Sequence[str] | None = None) -> dict:
    """``slimda-repro``."""
    from slimda.repro import repro as run_repro

    return run_repro(argv)


COMMANDS = {
    "train": train,
    "eval": evaluate_file,
    "select": select_file,
    "export": export_file,
    "flops": flops_file,
    "repro": repro,
}
train_main = cli.console_script(train)
eval_main = cli.console_script(evaluate_file)
select_main = cli.console_script(select_file)
export_main = cli.console_script(export_file)
flops_main = cli.console_script(flops_file)
repro_main = cli.console_script(repro)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
