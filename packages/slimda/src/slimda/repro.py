"""``slimda-repro``: the paper's claims at CPU scale (spec §6.4), on an embedded shift.

Per seed, four banks are trained with the same sandwich sampling and data order:

- source only (source CE on Cs),
- SlimDA without SEED (SymNets' domain confusion on the bank),
- SlimDA without OSTC (SEED distilled through Ct, no Ca),
- SlimDA (SymNets + SEED through Ca).

Each is evaluated on the target images at every uniform width of the bank (BN recalibrated per width). On the
SlimDA bank, UPEM scores stage-wise and uniform candidates without labels; its Kendall τ with the true target
accuracy and the accuracy of its choice under each MACs budget against the oracle-best are reported.
Finished runs are kept under ``--out``/runs and skipped when the command is run again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from shared import cli
from shared.checkpoint import save_json
from shared.device import resolve_device, seed_everything
from shared.errors import UserError
from shared.logging import Progress, get_logger
from shared.report import format_mean_std, markdown_table, mean_std, write_results
from slimda.cli import bank_widths, check_budgets, evaluate_widths, load_domains, make_evaluator, run_selection
from slimda.config import EMBEDDED, build_config
from slimda.data import Domain
from slimda.engine import Trainer
from slimda.flops import count_macs, parse_budget
from slimda.models import Arch, ModelBank

VARIANTS = {
    "source-only": {"method": "source-only"},
    "no-seed": {"method": "symnets"},
    "no-ostc": {"method": "slimda", "ostc": False},
    "slimda": {"method": "slimda"},
}
LABELS = {"source-only": "source only", "no-seed": "SlimDA w/o SEED", "no-ostc": "SlimDA w/o OSTC", "slimda": "SlimDA"}
BUDGETS = "1,1/2,1/4,1/8"


def repro_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="slimda-repro",
        description="SlimDA vs the source-only bank at every width, the SEED and OSTC ablations, and UPEM's rank "
        "correlation and budgeted choice, on an embedded domain shift (spec §6.4).",
    )
    parser.add_argument("--dataset", choices=EMBEDDED, default="mnist-digits", help="embedded shift")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--preset", choices=("demo", "small"), default="demo", help="scale (small: 3,000 iterations)")
    parser.add_argument("--iterations", type=int, default=None, help="override the preset's iterations")
    parser.add_argument("--samples", type=int, default=40, help="random stage-wise UPEM candidates (budget 1)")
    parser.add_argument("--budgets", default=BUDGETS, help="MACs budgets of the selection table")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS)
    )
    parser.add_argument("--out", type=Path, default=Path("runs/slimda/repro"), help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    return parser


def run_one(
    dataset: str,
    domains: tuple[Domain, Domain],
    preset: str,
    variant: str,
    seed: int,
    iterations: int | None,
    device: torch.device,
    samples: int,
    budgets: list[float],
) -> dict:
    """Train one bank on ``domains`` (source, target), evaluate every width; on SlimDA banks also run UPEM."""
    config = build_config(preset, dataset, iterations=iterations, **VARIANTS[variant])
    source, target = domains
    seed_everything(seed)
    bank = ModelBank(config.backbone, source.num_classes)
    trainer = Trainer(config, bank, source.images, source.labels, target.images, device, seed)
    started = time.monotonic()
    for it in Progress(range(config.iterations), desc=f"{variant} seed {seed}"):
        trainer.step(it)
    seconds = time.monotonic() - started
    evaluator = make_evaluator(bank, config, source, target, device)
    full = count_macs(bank, bank.full_arch(), config.crop)
    accuracy = evaluate_widths(evaluator, bank, bank_widths(config))
    widths = {
        f"{w:g}": {
            "accuracy": accuracy[f"{w:g}"][config.head],
            "by_head": accuracy[f"{w:g}"],
            "macs_fraction": count_macs(bank, Arch.uniform(w, bank.num_groups), config.crop) / full,
        }
        for w in bank_widths(config)
    }
    record = {
        "variant": variant,
        "seed": seed,
        "head": config.head,
        "iterations": config.iterations,
        "train_seconds": round(seconds, 1),
        "widths": widths,
    }
    if variant == "slimda":
        check_budgets(bank, config, budgets)
        record["selection"] = run_selection(bank, config, evaluator, budgets, "ensemble_kl", samples, 16, seed)
    return record


def repro(argv: Sequence[str] | None = None) -> dict:
    args = repro_parser().parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise UserError(f"unknown variant(s) {unknown}: choose from {list(VARIANTS)}")
    budgets = [parse_budget(b) for b in args.budgets.split(",") if b.strip()]
    device = resolve_device(args.device)
    log = get_logger()
    started = time.monotonic()
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    domains = load_domains(args.dataset, None, None, None, None, build_config(args.preset, args.dataset).image_size)
    for seed in range(args.seeds):
        for variant in variants:
            path = args.out / "runs" / f"{variant}-seed{seed}.json"
            if path.is_file():
                record = json.loads(path.read_text())
            else:
                record = run_one(
                    args.dataset, domains, args.preset, variant, seed, args.iterations, device, args.samples, budgets
                )
                save_json(path, record)
            widths = record["widths"]
            log.info(f"{variant} seed {seed}: " + ", ".join(f"w={w} {v['accuracy']:.1f}" for w, v in widths.items()))
            runs[variant].append(record)
    results = summarise(runs, args)
    results["seconds"] = round(time.monotonic() - started, 1)
    write_results(
        args.out,
        title=f"SlimDA on {args.dataset} ({args.seeds} seed(s), {args.preset})",
        table=results.pop("table"),
        headline=results["headline"],
        results=results,
        notes=results.pop("notes"),
    )
    print((args.out / "results.md").read_text())
    return results


def summarise(runs: dict[str, list[dict]], args) -> dict:
    """The width table (mean ± std over seeds), the UPEM table and the headline checks."""
    variants = list(runs)
    first = runs[variants[0]][0]["widths"]
    rows, per_width = [], {}
    for w in first:
        cells = {v: [r["widths"][w]["accuracy"] for r in runs[v]] for v in variants}
        per_width[w] = {v: mean_std(c)[0] for v, c in cells.items()}
        rows.append([w, f"{first[w]['macs_fraction']:.3f}", *(format_mean_std(cells[v]) for v in variants)])
    table = markdown_table(["width", "MACs fraction", *(LABELS[v] for v in variants)], rows)
    results: dict = {
        "dataset": args.dataset,
        "preset": args.preset,
        "seeds": args.seeds,
        "mean_accuracy": per_width,
        "runs": runs,
    }
    checks = []
    if "slimda" in runs and "source-only" in runs:
        beats = all(acc["slimda"] > acc["source-only"] for acc in per_width.values())
        results["slimda_beats_source_only_at_every_width"] = beats
        checks.append(f"SlimDA > source only at every width: {'yes' if beats else 'NO'}")
    notes = ""
    if "slimda" in runs:
        selections = [r["selection"] for r in runs["slimda"]]
        taus = [s["kendall_tau"] for s in selections]
        rhos = [s["spearman_rho"] for s in selections]
        budget_rows, gaps = [], []
        for i, row in enumerate(selections[0]["selection"]):
            chosen = [s["selection"][i]["accuracy"] for s in selections]
            oracle = [s["selection"][i]["oracle_accuracy"] for s in selections]
            gap = [s["selection"][i]["gap"] for s in selections]
            gaps.append(mean_std(gap)[0])
            budget_rows.append(
                [
                    f"{row['budget']:.4g}",
                    format_mean_std(chosen),
                    format_mean_std(oracle),
                    format_mean_std(gap),
                    " / ".join(s["selection"][i]["arch"] for s in selections),
                ]
            )
        results |= {
            "kendall_tau": mean_std(taus),
            "spearman_rho": mean_std(rhos),
            "selection_gaps": gaps,
            "num_candidates": selections[0]["num_candidates"],
        }
        checks.append(
            f"UPEM Kendall τ {format_mean_std(taus, 3)} (> 0.3: {'yes' if mean_std(taus)[0] > 0.3 else 'NO'})"
        )
        checks.append(
            f"UPEM choice within 2 points of the oracle at every budget: {'yes' if all(g <= 2 for g in gaps) else 'NO'}"
        )
        notes = (
            f"UPEM (ensemble_kl) on the SlimDA bank over {selections[0]['num_candidates']} candidates: Kendall τ "
            f"{format_mean_std(taus, 3)}, Spearman ρ {format_mean_std(rhos, 3)}.\n\n"
            + markdown_table(["budget", "UPEM choice acc", "oracle-best acc", "gap", "chosen (per seed)"], budget_rows)
        )
    results["headline"] = "; ".join(checks)
    results["table"] = table
    results["notes"] = notes
    return results
