"""``slimda-repro``: the claims of Slimmable Domain Adaptation (CVPR 2022) at CPU scale, on an embedded shift.

Per seed, four banks are trained with the same sandwich sampling and data order (the domains are read once):

- source only (source CE on Cs),
- SlimDA without SEED (SymNets' domain confusion on the bank),
- SlimDA without OSTC (SEED distilled through Ct, no Ca),
- SlimDA (SymNets + SEED through Ca);

and on request three controls of SEED: ramped by λ_p, kept out of the backbone, and with γ = 1 source CE on Ca.

Each is :func:`slimda.engine.fit`, which evaluates the target images at every uniform width of the bank (BN
recalibrated per width). On the SlimDA bank, UPEM then scores stage-wise and uniform candidates without labels;
its Kendall τ with the true target accuracy and the accuracy of its choice under each MACs budget against the
oracle-best are reported. Each run, selection included, is kept in a :class:`shared.report.RunCache` under
``out/runs``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from shared.errors import UserError
from shared.logging import get_logger
from shared.report import RunCache, format_mean_std, markdown_table, mean_std, plot_lines, write_results
from slimda import __version__
from slimda.config import EMBEDDED, TrainConfig, build_config
from slimda.data import Domain
from slimda.engine import fit, load_bank, load_domains, make_evaluator
from slimda.flops import count_macs, format_budget
from slimda.models import Arch, ModelBank
from slimda.upem import check_budgets, run_selection

VARIANTS = {
    "source-only": {"method": "source-only"},
    "no-seed": {"method": "symnets"},
    "no-ostc": {"method": "slimda", "ostc": False},
    "slimda": {"method": "slimda"},
    "slimda-ramp": {"method": "slimda", "seed_ramp": "lambda"},
    "slimda-detach": {"method": "slimda", "seed_detach_features": True},
    "slimda-aux": {"method": "slimda", "aux_source_ce": 1.0},
}
#: The default variants: the paper's ablation; the other three are controls of SEED (issue 18's grid).
ABLATION = ("source-only", "no-seed", "no-ostc", "slimda")
LABELS = {
    "source-only": "source only",
    "no-seed": "SlimDA w/o SEED",
    "no-ostc": "SlimDA w/o OSTC",
    "slimda": "SlimDA",
    "slimda-ramp": "SlimDA, SEED ramped by λ_p",
    "slimda-detach": "SlimDA, SEED trains Ca only",
    "slimda-aux": "SlimDA, γ = 1 source CE on Ca",
}
BUDGETS = (1.0, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64)
#: Scales of ``slimda-repro --preset``: the ``slimda-train`` preset of every bank.
PRESET_HELP = {"demo": "750 iterations per bank, 300 of them a source warm-up", "small": "3,000 iterations per bank"}
UPEM_KIND, REFERENCE_ARCHS = "ensemble_kl", 16


def train_and_select(
    config: TrainConfig,
    out: Path,
    device: torch.device,
    domains: tuple[Domain, Domain],
    variant: str,
    samples: int,
    budgets: Sequence[float],
) -> dict:
    """One bank: :func:`fit` into ``out``, the accuracy and MACs fraction of every width; UPEM on a SlimDA bank."""
    results = fit(config, out, device, domains=domains, quiet=True, progress=f"{variant} seed {config.seed}")
    bank, _, _ = load_bank(out / "final.pt")
    full = count_macs(bank, bank.full_arch(), config.crop)
    widths = {
        width: {
            "accuracy": by_head[config.head],
            "by_head": by_head,
            "macs_fraction": count_macs(bank, Arch.uniform(float(width), bank.num_groups), config.crop) / full,
        }
        for width, by_head in results["accuracy"].items()
    }
    record = {
        "variant": variant,
        "seed": config.seed,
        "head": config.head,
        "iterations": config.iterations,
        "train_seconds": results["train_seconds"],
        "widths": widths,
    }
    if "teacher_accuracy" in results:
        record["teacher_accuracy"] = results["teacher_accuracy"]
    if variant == "slimda":
        evaluator = make_evaluator(bank.to(device), config, *domains, device)
        record["selection"] = run_selection(
            bank, config, evaluator, budgets, UPEM_KIND, samples, REFERENCE_ARCHS, config.seed
        )
    return record


def run(
    out: Path,
    device: torch.device,
    *,
    seeds: int = 3,
    preset: str = "demo",
    dataset: str = "mnist-digits",
    iterations: int | None = None,
    samples: int = 40,
    budgets: Sequence[float] = BUDGETS,
    variants: Sequence[str] = ABLATION,
    bn_forward: str | None = None,
) -> dict:
    """Train every variant for every seed (reusing runs recorded in ``out/runs``); write the report into ``out``.

    ``bn_forward`` overrides the presets' ``separate`` for every bank (``joint``: the control of issue 18).
    """
    if preset not in PRESET_HELP:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESET_HELP)}")
    if dataset not in EMBEDDED:
        raise UserError(f"unknown dataset {dataset!r}: the repro runs on {', '.join(EMBEDDED)}")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise UserError(f"unknown variant(s) {unknown}: choose from {list(VARIANTS)}")
    if samples < 0:
        raise UserError(f"--samples must be >= 0, got {samples}")
    log = get_logger()
    cache = RunCache(out / "runs", __version__)
    base = build_config(preset, dataset, iterations=iterations, bn_forward=bn_forward)  # what every bank shares
    domains = load_domains(base)
    if "slimda" in variants:  # before any training: a budget no architecture meets
        with torch.device("meta"):
            bank = ModelBank(base.backbone, domains[0].num_classes)
        check_budgets(bank, base, budgets)
    started = time.monotonic()
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for seed in range(seeds):
        for variant in variants:
            config = build_config(
                preset, dataset, iterations=iterations, seed=seed, bn_forward=bn_forward, **VARIANTS[variant]
            )
            run_name = f"{variant}-seed{seed}"
            recorded = {"config": config}
            if variant == "slimda":
                recorded |= {"upem": UPEM_KIND, "samples": samples, "budgets": list(budgets)}

            def train(config=config, run_name=run_name, variant=variant) -> dict:
                run_out = cache.fresh_folder(run_name)
                return train_and_select(config, run_out, device, domains, variant, samples, budgets)

            record = cache.run(run_name, recorded, train)
            widths = record["widths"]
            log.info(f"{variant} seed {seed}: " + ", ".join(f"w={w} {v['accuracy']:.1f}" for w, v in widths.items()))
            runs[variant].append(record)
    results = summarise(runs, dataset=dataset, preset=preset, seeds=seeds)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["bn_forward"] = base.bn_forward
    title = f"SlimDA on {dataset} ({seeds} seed(s), {preset}, {base.bn_forward} BN forwards)"
    first = runs[variants[0]][0]["widths"]
    figure = plot_lines(
        out / "results.png",
        [w["macs_fraction"] for w in first.values()],
        {LABELS[v]: [[r["widths"][w]["accuracy"] for r in runs[v]] for w in first] for v in variants},
        xlabel="MACs fraction of the full bank (uniform widths " + ", ".join(first) + ")",
        ylabel="target accuracy (%)",
        title=f"{title}: mean ± std over seeds",
        log_x=True,
    )
    table, notes = results.pop("table"), results.pop("notes")
    write_results(
        out, title=title, table=table, headline=results["headline"], results=results, notes=notes, figure=figure
    )
    return results


def summarise(runs: dict[str, list[dict]], *, dataset: str, preset: str, seeds: int) -> dict:
    """The width table (mean ± std over seeds), the UPEM table and the headline checks."""
    variants = list(runs)
    first = runs[variants[0]][0]["widths"]
    rows, per_width = [], {}
    for w in first:
        cells = {v: [r["widths"][w]["accuracy"] for r in runs[v]] for v in variants}
        per_width[w] = {v: mean_std(c)[0] for v, c in cells.items()}
        rows.append([w, f"{first[w]['macs_fraction']:.3f}", *(format_mean_std(cells[v]) for v in variants)])
    table = markdown_table(["width", "MACs fraction", *(LABELS[v] for v in variants)], rows)
    results: dict = {"dataset": dataset, "preset": preset, "seeds": seeds, "mean_accuracy": per_width, "runs": runs}
    checks, notes = [], ""
    if "slimda" in runs and "source-only" in runs:
        beats = all(acc["slimda"] > acc["source-only"] for acc in per_width.values())
        results["slimda_beats_source_only_at_every_width"] = beats
        checks.append(f"SlimDA > source only at every width: {'yes' if beats else 'NO'}")
        smallest = list(first)[-1]
        gain = per_width[smallest]["slimda"] - per_width[smallest]["source-only"]
        fraction = first[smallest]["macs_fraction"]
        results["smallest_width_gain"] = {"width": smallest, "macs_fraction": fraction, "gain": gain}
        checks.append(f"SlimDA − source only at width {smallest} (1/{1 / fraction:.0f} of the MACs): {gain:+.2f}")
    teachers = {v: [r["teacher_accuracy"] for r in runs[v]] for v in variants if "teacher_accuracy" in runs[v][0]}
    if teachers:
        results["teacher_accuracy"] = {v: mean_std(t) for v, t in teachers.items()}
        notes = (
            "SEED's teacher p̄ at the first adaptation step, target accuracy in its training regime: "
            + "; ".join(f"{LABELS[v]} {format_mean_std(t)}" for v, t in teachers.items())
            + ".\n\n"
        )
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
                    format_budget(row["budget"]),
                    format_mean_std(chosen),
                    format_mean_std(oracle),
                    format_mean_std(gap),
                    " / ".join(s["selection"][i]["arch"] for s in selections),
                ]
            )
        results |= {
            "budgets": [format_budget(row["budget"]) for row in selections[0]["selection"]],
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
        notes += (
            f"UPEM ({UPEM_KIND}) on the SlimDA bank over {selections[0]['num_candidates']} candidates: Kendall τ "
            f"{format_mean_std(taus, 3)}, Spearman ρ {format_mean_std(rhos, 3)}.\n\n"
            + markdown_table(["budget", "UPEM choice acc", "oracle-best acc", "gap", "chosen (per seed)"], budget_rows)
        )
    results["headline"] = "; ".join(checks)
    results["table"] = table
    results["notes"] = notes
    return results
