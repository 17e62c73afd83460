"""Console scripts: ``tyger-train``, ``tyger-select``, ``tyger-loop``, ``tyger-repro``, ``tyger-bench``.

Argument parsing and printing only: the work is :func:`tyger.engine.fit` (one simulated active-learning run,
which documents its files), :func:`tyger.engine.train_and_evaluate`, :func:`tyger.engine.select_round`,
:func:`tyger.repro.compare` / :func:`tyger.repro.run` and :mod:`tyger.bench`. Without ``--data`` every command
uses the embedded ``chembl-reg`` set (real molecules from the RDKit wheel). ``python -m tyger.cli COMMAND``
runs a command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from shared import cli, distributed
from shared.checkpoint import save_json
from shared.device import resolve_device
from shared.errors import UserError
from shared.logging import get_logger
from tyger import bench, repro
from tyger.config import PRESET_HELP, PRESETS, SPLITS, build_config, size_of
from tyger.data import EMBEDDED, TASK_TYPES, read_molecule_csv, read_smiles_file
from tyger.engine import check_config, fit, prepare_data, select_round, sizes, train_and_evaluate
from tyger.losses import DK_KINDS, FB_KINDS
from tyger.selection import SELECTORS


def _size(text: str) -> float:
    """``5%`` -> 0.05, ``0.05`` -> 0.05, ``32`` -> 32."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count, a fraction or a percentage") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


_names = cli.comma_list()


def _data_args(parser: cli.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data", type=Path, default=None, help="MoleculeNet-style CSV / CSV.gz / SDF (default: --dataset)"
    )
    group.add_argument(
        "--dataset", choices=sorted(EMBEDDED), default=None, help="embedded set when no --data (chembl-reg)"
    )
    group.add_argument("--smiles-col", default=None, help="SMILES column (default: 'smiles', else 'mol')")
    group.add_argument(
        "--targets", type=_names, default=None, help="comma-separated task columns (default: all numeric)"
    )
    group.add_argument("--task-type", choices=TASK_TYPES, default=None, help="default: inferred from the labels")
    group.add_argument("--split", choices=SPLITS, default=None, help="default: random for chembl-*, else scaffold")
    group.add_argument("--limit", type=int, default=None, help="use only the first rows of the embedded set")


def _model_args(parser: cli.ArgumentParser, selector: bool = True) -> None:
    group = parser.add_argument_group("Tyger and the loop (defaults from --preset)")
    if selector:
        group.add_argument(
            "--selector", type=_names, default=None, help=f"selection rule(s), comma-separated: {', '.join(SELECTORS)}"
        )
    group.add_argument("--beta", type=float, default=None, help="exponent of the predicted-loss weight; 0 = k-center")
    group.add_argument("--eps", type=float, default=None, help="floor of the normalised predicted loss (0.05)")
    group.add_argument(
        "--gamma", type=float, default=None, help="exponent of a typicality weight (TypiClust) on the distance (0: off)"
    )
    group.add_argument("--dk", choices=DK_KINDS, default=None, help="domain-knowledge objective (fingerprint)")
    group.add_argument("--fb", choices=FB_KINDS, default=None, help="task-learner feedback objective (loss-rank)")
    group.add_argument("--lambda-dk", type=float, default=None, help="weight of L_DK (1.0)")
    group.add_argument("--lambda-fb", type=float, default=None, help="weight of L_FB (1.0)")
    group.add_argument(
        "--no-translation", action="store_true", help="ablation: no graph-to-SMILES loss (L_DK + L_FB only)"
    )
    group.add_argument("--init", choices=("random", "kcenter"), default=None, help="initial labelled set (random)")
    group.add_argument("--init-size", type=_size, default=None, help="initial labels: count, fraction or N%%")
    group.add_argument("--budget", type=_size, default=None, help="labels per round: count, fraction or N%%")
    group.add_argument("--rounds", type=int, default=None, help="selection rounds R")
    group.add_argument("--pretrain-epochs", type=int, default=None, help="querying-module pre-training epochs")
    group.add_argument("--finetune-epochs", type=int, default=None, help="querying-module epochs per round")
    group.add_argument("--task-epochs", type=int, default=None, help="task-learner epochs per round (max)")
    group.add_argument("--patience", type=int, default=None, help="early-stopping patience of the task learner")
    group.add_argument("--query-batch-size", type=int, default=None, help="querying-module batch (64)")
    group.add_argument("--lr", type=float, default=None, help="Adam learning rate (1e-3)")
    group.add_argument("--mc-samples", type=int, default=None, help="MC-dropout samples of bald (20)")
    group.add_argument(
        "--eval-repeats",
        type=int,
        default=None,
        help="score each round by the mean test metric of this many task learners trained from different inits "
        "(the first alone drives the selection): a less noisy curve, same picks (1)",
    )
    group.add_argument(
        "--preset",
        choices=PRESETS,
        default="demo",
        help="; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()).replace("%", "%%"),
    )
    group.add_argument("--quiet", action="store_true", help="no per-round log lines")


def _config(args: argparse.Namespace, resume: bool = True, torchrun: bool = False, **extra):
    """The LoopConfig of the parsed options; options this command cannot honour are refused, not ignored."""
    if not torchrun and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("only tyger-train runs under torchrun; run this command as a single process")
    if args.amp:
        raise UserError("--amp is not supported: tyger's small graph networks train in float32")
    if args.resume and not resume:
        raise UserError("--resume applies to tyger-loop runs only; this command starts afresh")
    return build_config(
        args.preset,
        data=args.data,
        dataset=args.dataset,
        limit=args.limit,
        smiles_col=args.smiles_col,
        targets=args.targets,
        task_type=args.task_type,
        split=args.split,
        beta=args.beta,
        eps=args.eps,
        gamma=args.gamma,
        dk=args.dk,
        fb=args.fb,
        lambda_dk=args.lambda_dk,
        lambda_fb=args.lambda_fb,
        translation=False if args.no_translation else None,
        init=args.init,
        init_size=args.init_size,
        budget=args.budget,
        rounds=args.rounds,
        pretrain_epochs=args.pretrain_epochs,
        finetune_epochs=args.finetune_epochs,
        task_epochs=args.task_epochs,
        patience=args.patience,
        task_batch_size=args.batch_size,
        query_batch_size=args.query_batch_size,
        lr=args.lr,
        mc_samples=args.mc_samples,
        eval_repeats=args.eval_repeats,
        seed=args.seed,
        **extra,
    )


def _parser(prog: str, description: str, selector: bool = True) -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog=prog, description=description)
    _data_args(parser)
    _model_args(parser, selector)
    parser.add_common_args(workers=False, epochs=False)
    return parser


def loop_command(argv: Sequence[str] | None = None) -> dict:
    """``tyger-loop``: simulated active learning, one or several selectors and seeds."""
    parser = _parser(
        "tyger-loop",
        "Simulated pool-based active learning (labels revealed on request): pre-train the querying module on the "
        "pool, then each round train the task learner on the labelled set, evaluate on the test split, and pick "
        "the next batch with --selector. The same command runs regression, binary, multi-label and multi-class "
        "tasks. With several selectors or --seeds > 1 each run goes to OUT/<data>-<selector>-seed<k>/ and OUT "
        "gets results.json/.md and results.png (one line per selector, band = std over seeds). With no arguments: "
        "tyger and random on chembl-reg, 3 seeds.",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds --seed, --seed+1, ... (3 when comparing)")
    args = parser.parse_args(argv)
    selectors = args.selector or ["tyger", "random"]
    unknown = [s for s in selectors if s not in SELECTORS]
    if unknown:
        raise UserError(f"unknown selector {', '.join(unknown)}: choose from {', '.join(SELECTORS)}")
    seeds = args.seeds if args.seeds is not None else (3 if args.selector is None else 1)
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    device = resolve_device(args.device)
    log = get_logger()
    base = _config(args, selector=selectors[0])
    for name in selectors:
        check_config(dataclasses.replace(base, selector=name))
    if len(selectors) == 1 and seeds == 1:
        with cli.run_folder(args.out, "tyger", args.resume) as out:
            results = fit(base, out, device, resume=args.resume, quiet=args.quiet)
        log.info(f"AULC {results['aulc']:.4f}, final test {results['metric']} {results['final']:.4f}; files in {out}")
        return results
    out = args.out or Path("runs") / "tyger" / time.strftime("%Y%m%d-%H%M%S")
    if args.resume and not out.is_dir():
        raise UserError(f"--resume: {out} holds no runs; run without --resume to start it")
    if not args.resume and out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out} already holds runs: pass --resume to continue them, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs = repro.compare(
        base, selectors, list(range(args.seed, args.seed + seeds)), out, device, resume=args.resume, quiet=args.quiet
    )
    report = repro.report_study(out, base.source(), runs)
    print((out / "results.md").read_text(encoding="utf-8"))
    log.info(f"{len(selectors)} selector(s) x {seeds} seed(s) in {time.perf_counter() - started:.0f} s; files in {out}")
    return report


def train_command(argv: Sequence[str] | None = None) -> dict:
    """``tyger-train``: one task learner, evaluated."""
    parser = _parser(
        "tyger-train",
        "Train one task learner (GINE graph network) on the pool split of the data -- all of it, or the rows "
        "--labelled names -- early-stopped on the validation split, and evaluate it on the test split. Writes "
        "final.pt and results.json. Under torchrun (python -m tyger.cli train) each process takes its share "
        "of every batch (--batch-size per process).",
        selector=False,
    )
    parser.add_argument("--labelled", type=Path, default=None, help="file of pool indices (one per line) to train on")
    args = parser.parse_args(argv)
    config = _config(args, resume=False, torchrun=True)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    with cli.run_folder(args.out, "tyger", False) as out:
        results = train_and_evaluate(config, out, device, args.labelled)
    if distributed.is_main_process():
        print(json.dumps(results, indent=2))
    return results


def select_command(argv: Sequence[str] | None = None) -> dict:
    """``tyger-select``: one real selection round, picks.csv for the lab."""
    parser = _parser(
        "tyger-select",
        "One real selection round: --labelled is a CSV of measured molecules (SMILES and task columns), --pool "
        "the candidates (CSV with a SMILES column, or .smi). Pre-trains the querying module on both, trains the "
        "task learner on the measured ones, fine-tunes, and writes the --budget picks to OUT/picks.csv "
        "(candidate row, SMILES, score, rank). Without --labelled/--pool: a demo on the embedded set's pool, "
        "its first --init-size molecules taken as measured.",
        selector=False,
    )
    parser.add_argument("--labelled", type=Path, default=None, help="CSV of measured molecules with their labels")
    parser.add_argument("--pool", type=Path, default=None, help="CSV or .smi of unmeasured candidates")
    parser.add_argument("--selector", choices=sorted(SELECTORS), default="tyger", help="selection rule")
    parser.add_argument("--picks", type=int, default=None, help="molecules to pick (default: --budget of the preset)")
    args = parser.parse_args(argv)
    config = _config(args, resume=False, selector=args.selector)
    device = resolve_device(args.device)
    if (args.labelled is None) != (args.pool is None):
        raise UserError("give both --labelled and --pool, or neither (the embedded demo)")
    if args.labelled is not None:
        labelled = read_molecule_csv(args.labelled, config.smiles_col, config.targets, config.task_type)
        candidates = read_smiles_file(args.pool, config.smiles_col)
    else:
        data = prepare_data(config)
        b0, _ = sizes(config, len(data.pool))
        labelled = data.pool.subset(range(b0))
        candidates = data.pool.smiles[b0:]
    budget = args.picks or size_of(config.budget, len(candidates), config.min_batch)
    with cli.run_folder(args.out, "tyger", False) as out:
        picks = select_round(config, labelled, candidates, budget, out, device)
    for row in picks[:10]:
        score = "" if row["score"] is None else f"{row['score']:.4f}"
        print(f"{row['rank']:>3}  {row['candidate']:>6}  {score:>8}  {row['smiles']}")
    get_logger().info(f"{len(picks)} picks in {out / 'picks.csv'}")
    return {"picks": picks, "out": str(out)}


def repro_command(argv: Sequence[str] | None = None) -> dict:
    """``tyger-repro``: every method on the three embedded task types."""
    parser = cli.repro_parser(
        "tyger-repro",
        "Does Tyger's embedding-only selection beat random and the usual baselines on every task type? On the "
        "embedded chembl-reg (regression, RMSE), chembl-bin (binary, ROC-AUC) and nci-alerts (multi-label, mean "
        "ROC-AUC): tyger, random, coreset, maxmin-ecfp, bald, learning-loss (+ entropy, margin on classification), "
        "same loop, budget and seeds; AULC table, curves, and the querying module's SMILES reconstruction.",
        repro.PRESET_HELP,
    )
    parser.add_argument("--tasks", type=_names, default=None, help=f"comma-separated subset of {','.join(repro.TASKS)}")
    parser.add_argument("--methods", type=_names, default=None, help="comma-separated subset of the methods")
    return cli.run_repro(parser, argv, "tyger", repro.run, "tasks", "methods")


def bench_command(argv: Sequence[str] | None = None) -> dict:
    """``tyger-bench``: featurisation and encoder throughput, AL-round seconds against pool size."""
    parser = cli.ArgumentParser(
        prog="tyger-bench",
        description="Molecules/s of featurisation (SMILES to batched graphs) and of one querying-module training "
        "epoch, and the seconds of one active-learning round (train the task learner, embed the pool, select) at "
        "growing pool sizes built by repeating the embedded molecules. Selection works in blocks: no pool x pool "
        "matrix.",
    )
    parser.add_argument("--pools", type=cli.comma_list(int, "integers"), default=list(bench.POOLS),
                        help="comma-separated pool sizes")  # fmt: skip
    parser.add_argument("--molecules", type=int, default=1000, help="molecules for the throughput measurements")
    parser.add_argument("--model", choices=PRESETS, default="demo", help="network sizes")
    parser.add_argument("--budget", type=int, default=32, help="picks of the timed round")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--out", type=Path, default=None, help="write bench.json here")
    args = parser.parse_args(argv)
    cli.set_threads(args.threads)
    result = bench.benchmark(
        resolve_device(args.device), pools=args.pools, molecules=args.molecules, model=args.model, budget=args.budget
    )
    print(bench.format_result(result))
    if args.out is not None:
        save_json(args.out / "bench.json", result)
    return result


COMMANDS = {
    "train": train_command,
    "select": select_command,
    "loop": loop_command,
    "repro": repro_command,
    "bench": bench_command,
}
train_main = cli.console_script(train_command)
select_main = cli.console_script(select_command)
loop_main = cli.console_script(loop_command)
repro_main = cli.console_script(repro_command)
bench_main = cli.console_script(bench_command)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
