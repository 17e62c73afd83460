"""Which form of Tyger's selection beats random? Test and validation AULC of Tyger's variants, per task and seed.

Every variant runs the loop of ``tyger-repro`` at its ``--scale`` (demo: demo preset, each round scored by 3
task learners, NCI limited to 1,500 rows; small: the small preset and the full sets) on the three embedded
tasks, with the same initial set and round-0 learner per seed:

- ``tyger``: the default (loss-rank feedback; k-center distance on z times the predicted loss, beta = 1);
- ``beta0``: the same querying module, pure k-center on z (beta = 0);
- ``relation``: relation feedback on labelled batches (pure k-center: u(z) is not trained);
- ``relation-pool``: relation feedback on the pool batches (the task learner's features need no labels);
- ``relation-pool-0.3``: the same with lambda_FB = 0.3;
- ``typicality``: the default times a typicality weight (TypiClust's, gamma = 1) against outlier picks;
- ``random`` and ``coreset``: the baselines.

``aulc_val`` is the area for each round's validation metric: choose a variant on it, read test afterwards.
Each variant's runs go to ``OUT/<variant>/`` (rerunning reuses finished runs); one JSON line per run is
printed, then each variant's mean and its paired difference to random (positive = better, for RMSE too).

    PYTHONPATH=shared/src:packages/tyger/src python packages/tyger/benchmarks/variant_sweep.py \\
        --variants tyger,beta0,random --seeds 0,1,2 --out runs/tyger-variants
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from shared.cli import comma_list
from shared.report import mean_std
from tyger.config import build_config
from tyger.repro import SCALES, TASKS, compare

VARIANTS: dict[str, dict] = {
    "tyger": {"selector": "tyger"},
    "beta0": {"selector": "tyger", "beta": 0.0},
    "relation": {"selector": "tyger", "fb": "relation"},
    "relation-pool": {"selector": "tyger", "fb": "relation-pool"},
    "relation-pool-0.3": {"selector": "tyger", "fb": "relation-pool", "lambda_fb": 0.3},
    "typicality": {"selector": "tyger", "gamma": 1.0},
    "random": {"selector": "random"},
    "coreset": {"selector": "coreset"},
}


def run(
    out: Path, tasks: list[str], variants: list[str], seeds: list[int], device: torch.device, scale: str = "demo"
) -> list[dict]:
    """Every variant on every task and seed through :func:`tyger.repro.compare`, into ``out/<variant>/``
    (finished runs are reused); one row per run."""
    settings = SCALES[scale]
    rows = []
    for task in tasks:
        config = build_config(
            settings["preset"], dataset=task, limit=settings["limits"].get(task), **settings["options"]
        )
        for variant in variants:
            options = dict(VARIANTS[variant])
            selector = options.pop("selector")
            runs = compare(
                dataclasses.replace(config, **options), [selector], seeds, out / variant, device, resume=True
            )[selector]
            for seed, result in zip(seeds, runs, strict=True):
                row = {"task": task, "variant": variant, "seed": seed, "test": result["aulc"]}
                rows.append(row | {"val": result["aulc_val"], "higher_is_better": result["higher_is_better"]})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(rows: list[dict], split: str) -> str:
    """Per task and variant: mean AULC, and the mean paired gain over random with the seeds it wins."""
    lines = [f"{split} AULC: mean (gain over random, positive = better; seeds ahead)"]
    table = {(r["task"], r["variant"], r["seed"]): r for r in rows}
    for task in dict.fromkeys(r["task"] for r in rows):
        cells = []
        for variant in dict.fromkeys(r["variant"] for r in rows if r["task"] == task):
            runs = [r for r in rows if r["task"] == task and r["variant"] == variant]
            sign = 1 if runs[0]["higher_is_better"] else -1
            gains = [
                sign * (r[split] - table[(task, "random", r["seed"])][split])
                for r in runs
                if (task, "random", r["seed"]) in table
            ]
            gain = f"{mean_std(gains)[0]:+.3f}, {sum(g > 0 for g in gains)}/{len(gains)}" if gains else "-"
            cells.append(f"{variant} {mean_std([r[split] for r in runs])[0]:.3f} ({gain})")
        lines.append(f"{task}: " + " | ".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=comma_list(), default=list(TASKS))
    parser.add_argument("--variants", type=comma_list(), default=list(VARIANTS), help=", ".join(VARIANTS))
    parser.add_argument("--seeds", type=comma_list(int, "seeds"), default=[0, 1, 2])
    parser.add_argument("--scale", choices=tuple(SCALES), default="demo", help="the repro's scale (demo)")
    parser.add_argument("--out", type=Path, default=Path("runs/tyger-variants"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args.out, args.tasks, args.variants, args.seeds, torch.device("cpu"), args.scale)
    print(summary(rows, "test"))
    print(summary(rows, "val"))


if __name__ == "__main__":
    main()
