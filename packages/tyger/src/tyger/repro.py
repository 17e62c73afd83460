"""``tyger-repro``: does Tyger's embedding-only selection beat the baselines on every task type?

The claim of Tyger (arXiv 2205.11279, abstract): one selector, working on a querying module's embedding space
only, serves every task type of molecular property prediction and outperforms task-type-specific baselines.
On the three embedded tasks (real molecules from the RDKit wheel) -- ``chembl-reg`` (regression, RMSE),
``chembl-bin`` (binary, ROC-AUC) and ``nci-alerts`` (multi-label with computed structural-alert labels, mean
ROC-AUC) -- every method runs the same loop (:func:`tyger.engine.fit`) with the same budget and seeds: tyger,
random, coreset, maxmin-ecfp, bald, learning-loss, and entropy and margin on the classification tasks. The
report is the area under each learning curve (mean +- std over seeds), Tyger's rank per task, whether it beats
random, the curves, and the querying module's SMILES reconstruction on held-out molecules.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from shared.errors import UserError
from shared.logging import get_logger
from shared.report import RunCache, format_mean_std, markdown_table, mean_std, plot_line_panels, write_results
from tyger import __version__
from tyger.config import LoopConfig, build_config, plain, validate
from tyger.engine import fit, load_dataset, prepare_data

TASKS = ("chembl-reg", "chembl-bin", "nci-alerts")
METHODS = ("tyger", "random", "coreset", "maxmin-ecfp", "bald", "learning-loss")
CLASSIFICATION_METHODS = ("entropy", "margin")
#: Per scale: the LoopConfig preset and options for every run, and row limits of the embedded sets.
SCALES: dict[str, dict] = {
    "demo": {"preset": "demo", "options": {"eval_repeats": 3}, "limits": {"nci-alerts": 1500}},
    "small": {"preset": "small", "options": {"eval_repeats": 3}, "limits": {}},
}
PRESET_HELP = {
    "demo": "2x64 GINE, 32 initial + 4 rounds x 32 labels, NCI limited to 1,500 molecules, each round scored by 3 "
    "task learners",
    "small": "3x128 GINE, 5% initial + 6 rounds x 5%, full embedded sets, each round scored by 3 task learners",
}


def methods_for(task_type: str, methods: Sequence[str] | None = None) -> list[str]:
    """The methods that run on a task type (the classification-only ones left out of regression)."""
    chosen = list(methods) if methods else [*METHODS, *CLASSIFICATION_METHODS]
    if task_type == "regression":
        chosen = [m for m in chosen if m not in (*CLASSIFICATION_METHODS, "badge")]
    return chosen


def compare(
    base: LoopConfig,
    selectors: Sequence[str],
    seeds: Sequence[int],
    folder: Path,
    device: torch.device,
    *,
    cache: RunCache | None = None,
    resume: bool = False,
    quiet: bool = True,
    counter: dict | None = None,
) -> dict[str, list[dict]]:
    """Every selector at every seed on ``base``'s data: ``{selector: [fit result per seed]}``.

    With ``cache`` each run is a :class:`~shared.report.RunCache` entry (reused when recorded with the same
    configuration by this version), its files in ``cache.fresh_folder(name)``; without, each run writes into
    ``folder/<selector>-seed<k>`` (``resume`` continues a run with a checkpoint, reuses a finished one). The
    molecules are read and featurised once, split once per seed, and the pre-trained querying module is shared
    per seed.
    ``counter["trained"]`` counts the runs computed (not reused).
    """
    counter = {} if counter is None else counter
    results: dict[str, list[dict]] = {s: [] for s in selectors}
    lazy = _LazyData()
    for seed in seeds:
        pretrained = folder / "pretrained"  # one file per pool and settings: shared by chembl-reg and chembl-bin
        pretrained.mkdir(parents=True, exist_ok=True)
        for selector in selectors:
            config = dataclasses.replace(base, selector=selector, seed=seed)
            validate(config)
            name = f"{_slug(base.source())}-{selector}-seed{seed}"
            run_folder = folder / name
            fit_here = functools.partial(
                _fit_once, config, device, quiet=quiet, pretrained=pretrained, lazy=lazy, counter=counter, name=name
            )
            if cache is not None:
                compute = functools.partial(_in_fresh_folder, cache, name, fit_here)
                results[selector].append(cache.run(name, plain(config), compute))
            elif resume and (run_folder / "results.json").is_file():
                results[selector].append(json.loads((run_folder / "results.json").read_text()))
            else:
                resume_run = resume and any(run_folder.glob("checkpoint-*.pt"))
                results[selector].append(fit_here(run_folder, resume=resume_run))
    return results


class _LazyData:
    """The data of a comparison, made on first use (all runs cached: never): the molecules read and featurised
    once (their graphs kept on the dataset), the split of the current seed."""

    def __init__(self) -> None:
        self.dataset = None
        self.seed, self.data = None, None

    def __call__(self, config: LoopConfig):
        if self.dataset is None:
            self.dataset = load_dataset(config)
        if self.seed != config.seed:
            self.seed, self.data = config.seed, prepare_data(config, self.dataset)
        return self.data


def _in_fresh_folder(cache: RunCache, name: str, fit_here) -> dict:
    return fit_here(cache.fresh_folder(name))


def _fit_once(
    config: LoopConfig,
    device: torch.device,
    target: Path,
    *,
    quiet: bool,
    pretrained: Path,
    lazy: _LazyData,
    counter: dict,
    name: str,
    resume: bool = False,
) -> dict:
    started = time.perf_counter()
    counter["trained"] = counter.get("trained", 0) + 1
    result = fit(config, target, device, resume=resume, quiet=quiet, pretrained=pretrained, data=lazy(config))
    get_logger().info(f"{name}: AULC {result['aulc']:.4f} ({time.perf_counter() - started:.0f} s)")
    return result


def _slug(text: str) -> str:
    """A folder-name form of a run's source: ``chembl-reg``, ``nci-alerts-1500``, ``mydata`` for ``mydata.csv.gz``."""
    name = Path(text).name.replace("[:", "-").replace("]", "")
    for suffix in (".gz", ".csv", ".tsv", ".sdf"):
        name = name.removesuffix(suffix)
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def summarise(runs: dict[str, list[dict]]) -> dict:
    """AULC mean/std per method, ranks (1 = best), Tyger's rank and whether it beats random."""
    first = next(iter(runs.values()))[0]
    higher = first["higher_is_better"]
    aulcs = {m: [r["aulc"] for r in rs] for m, rs in runs.items()}
    means = {m: mean_std(v)[0] for m, v in aulcs.items()}
    order = sorted(means, key=lambda m: -means[m] if higher else means[m])
    summary = {
        "metric": first["metric"],
        "task_type": first["task_type"],
        "higher_is_better": higher,
        "aulc": aulcs,
        "aulc_mean": means,
        "ranking": order,
    }
    if "tyger" in means:
        summary["tyger_rank"] = order.index("tyger") + 1
        if "random" in means:
            summary["tyger_beats_random"] = bool(
                means["tyger"] > means["random"] if higher else means["tyger"] < means["random"]
            )
    return summary


def curve_series(runs: dict[str, list[dict]]) -> tuple[list[int], dict[str, list[list[float]]]]:
    """x = labelled counts, and per method the per-seed test metric at each x (for plot_line_panels)."""
    first = next(iter(runs.values()))[0]
    x = [c["labelled"] for c in first["curve"]]
    series = {m: [[r["curve"][i]["test"] for r in rs] for i in range(len(x))] for m, rs in runs.items()}
    return x, series


def plot_panels(path: Path, panels: dict[str, dict[str, list[dict]]]) -> Path | None:
    """One panel per task: the test metric against labelled molecules, one line per method (mean, band +- std),
    Tyger drawn thicker. None without matplotlib."""
    figure = {}
    for task, runs in panels.items():
        x, series = curve_series(runs)
        first = next(iter(runs.values()))[0]
        better = "higher" if first["higher_is_better"] else "lower"
        figure[f"{task} ({first['metric']}, {better} is better)"] = (x, series, first["metric"])
    return plot_line_panels(path, figure, xlabel="labelled molecules", emphasis="tyger")


def aulc_table(summaries: dict[str, dict], methods: Sequence[str]) -> str:
    """Rows = methods, columns = tasks: AULC mean +- std (Tyger's rank per task in the last row)."""
    arrows = {t: "↑" if s["higher_is_better"] else "↓" for t, s in summaries.items()}
    headers = ["method", *(f"{t} ({s['metric']} {arrows[t]})" for t, s in summaries.items())]
    rows = []
    for m in methods:
        cells = [
            format_mean_std(s["aulc"][m], digits=3) if m in s["aulc"] else "n/a (regression)"
            for s in summaries.values()
        ]
        rows.append([m, *cells])
    ranks = [f"{s['tyger_rank']} of {len(s['ranking'])}" if "tyger_rank" in s else "-" for s in summaries.values()]
    rows.append(["Tyger's rank", *ranks])
    beats = [
        ("yes" if s["tyger_beats_random"] else "no") if "tyger_beats_random" in s else "-" for s in summaries.values()
    ]
    rows.append(["Tyger beats random", *beats])
    return markdown_table(headers, rows)


def _change_cell(reports: list[dict], when: str, key: str) -> str:
    return format_mean_std([r[when][key] for r in reports], digits=3)


def querying_table(querying: dict[str, list[dict]]) -> str:
    """Held-out SMILES reconstruction of the pre-trained querying module, before and after pre-training."""
    rows = []
    for task, reports in querying.items():
        if not reports:
            continue
        cell = functools.partial(_change_cell, reports)
        rows.append(
            [
                task,
                reports[0]["after"]["molecules"],
                f"{cell('before', 'validity')} → {cell('after', 'validity')}",
                f"{cell('before', 'reconstruction')} → {cell('after', 'reconstruction')}",
                f"{cell('before', 'token_accuracy')} → {cell('after', 'token_accuracy')}",
            ]
        )
    return markdown_table(
        ["task", "held-out molecules", "greedy validity", "exact reconstruction", "teacher-forced token accuracy"],
        rows,
    )


def run(
    out: str | Path,
    device: torch.device,
    *,
    seeds: int = 3,
    preset: str = "demo",
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> dict:
    """Every method on every embedded task at ``seeds`` seeds; writes results.json/.md/.png into ``out``."""
    if preset not in SCALES:
        raise UserError(f"tyger-repro has scales {', '.join(SCALES)}, not {preset!r}")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    tasks = list(tasks or TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise UserError(f"unknown task {', '.join(unknown)}: choose from {', '.join(TASKS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scale = SCALES[preset]
    cache = RunCache(out / "runs", __version__)
    started = time.perf_counter()
    panels, summaries, querying, computed = {}, {}, {}, 0
    for task in tasks:
        base = build_config(scale["preset"], dataset=task, limit=scale["limits"].get(task), **scale["options"])
        task_type = {"chembl-reg": "regression", "chembl-bin": "binary", "nci-alerts": "multilabel"}[task]
        chosen = methods_for(task_type, methods)
        counter = {"trained": 0}
        runs = compare(base, chosen, list(range(seeds)), out, device, cache=cache, counter=counter)
        computed += counter["trained"]
        panels[task] = runs
        summaries[task] = summarise(runs)
        querying[task] = [r["querying"] for r in runs.get("tyger", []) if "querying" in r]
    all_methods = [m for m in (*METHODS, *CLASSIFICATION_METHODS) if any(m in s["aulc"] for s in summaries.values())]
    figure = plot_panels(out / "results.png", panels)
    table = aulc_table(summaries, all_methods)
    lines = []
    for task, s in summaries.items():
        if "tyger_rank" in s:
            verdict = "beats" if s.get("tyger_beats_random") else "does not beat"
            lines.append(f"{task}: Tyger ranks {s['tyger_rank']} of {len(s['ranking'])} and {verdict} random")
    headline = "AULC, " + "; ".join(lines) + f" ({seeds} seed{'s' * (seeds > 1)}, {preset})"
    notes = (
        "AULC: area under the test-metric curve over the labelled fraction of the pool (trapezoid rule, divided by "
        "the fraction's range); RMSE lower is better, ROC-AUC higher. Every method shares the task learner, loop, "
        "initial set and budget of its seed.\n\n"
        "## Querying module: SMILES reconstruction of held-out molecules (greedy decoding)\n\n"
        "Before → after pre-training on the pool (L_trans + λ_DK L_DK), mean ± std over seeds.\n\n"
        f"{querying_table(querying)}\n\n"
        f"Wall time: {time.perf_counter() - started:.0f} s for {computed} new runs on {device} "
        f"with {torch.get_num_threads()} thread(s)."
    )
    results = {
        "preset": preset,
        "seeds": seeds,
        "tasks": summaries,
        "curves": {t: {m: [r["curve"] for r in rs] for m, rs in runs.items()} for t, runs in panels.items()},
        "querying": querying,
        "trained_runs": computed,
        "seconds": time.perf_counter() - started,
    }
    write_results(
        out,
        title="Tyger vs baselines: area under the active-learning curve on the embedded tasks",
        table=table,
        headline=headline,
        results=results,
        notes=notes,
        figure=figure,
    )
    return results


def report_study(out: str | Path, label: str, runs: dict[str, list[dict]]) -> dict:
    """results.json/.md/.png of a comparison on one dataset (``tyger-loop`` with several selectors or seeds)."""
    out = Path(out)
    summary = summarise(runs)
    figure = plot_panels(out / "results.png", {label: runs})
    seeds = len(next(iter(runs.values())))
    parts = [f"{m} {format_mean_std(v, digits=4)}" for m, v in summary["aulc"].items()]
    headline = f"{label} AULC ({summary['metric']}, {seeds} seed{'s' * (seeds > 1)}): " + ", ".join(parts)
    results = {"dataset": label, "summary": summary, "curves": {m: [r["curve"] for r in rs] for m, rs in runs.items()}}
    write_results(
        out,
        title=f"Active learning on {label}",
        table=aulc_table({label: summary}, list(runs)),
        headline=headline,
        results=results,
        figure=figure,
    )
    return results | {"headline": headline}
