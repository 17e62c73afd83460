"""Console scripts: ``m3ed-train``, ``m3ed-eval``, ``m3ed-stats``, ``m3ed-make-synthetic``, ``m3ed-repro``.

Argument parsing and printing only: the work is :func:`m3ed.engine.fit`, :func:`m3ed.engine.evaluate_run`,
:func:`m3ed.engine.tabulate_runs`, :func:`m3ed.release.release_stats` and :func:`m3ed.repro.run`. Without
``--data`` every command works on the synthetic release (written in the real layout, read back by the real
readers). Under torchrun: ``torchrun --nproc_per_node=N -m m3ed.cli train --data DIR``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from m3ed import repro
from m3ed.config import PRESETS, TASKS, build_config
from m3ed.data import ANNOTATIONS, open_release
from m3ed.engine import evaluate_run, fit, tabulate_runs
from m3ed.models import COMBINES, FUSIONS, MODELS
from m3ed.release import SPLITS, format_stats, release_stats
from m3ed.synthetic import SyntheticConfig, make_synthetic_release
from shared import cli, distributed
from shared.device import resolve_device
from shared.errors import UserError
from shared.logging import get_logger


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="m3ed-train",
        description="Train MDI (or a baseline) on M3ED's utterance features; the test score is taken at the "
        "epoch with the best validation weighted F1 (micro F1 with --task multi). Without --data: the synthetic "
        "release. Presets: paper (the official MDI recipe), small, demo.",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="M3ED release folder (annotation.json, splitInfo/, *.pkl)"
    )
    parser.add_argument("--features", default=None, help="feature pickle name inside --data (default: the only one)")
    parser.add_argument(
        "--annotations",
        choices=ANNOTATIONS,
        default="check",
        help="check: read annotation.json and splitInfo/ and require the pickle to agree with them (dialogues, "
        "splits, utterances, labels); none: train from the feature pickle alone (its labels and train/val/test "
        "lists), as the official MDI code does; the folder then needs only the pickle",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="single",
        help="single: the benchmark, final_main_emo with 7-way cross-entropy, selected and scored on weighted F1; "
        "multi: the blended emotions, final_mul_emo (plus the main one) as multi-hot targets of 7 sigmoids with "
        "BCE-with-logits, an emotion predicted where its sigmoid > 0.5, selected on validation micro F1 and "
        "scored with micro/macro F1, Hamming loss and subset accuracy (needs annotation.json)",
    )
    parser.add_argument(
        "--at-least-one",
        action="store_true",
        help="--task multi: also predict the top emotion of an utterance whose sigmoids are all <= 0.5",
    )
    parser.add_argument("--model", choices=MODELS, default=None, help="MDI or a baseline")
    parser.add_argument("--modalities", default="avl", help="any of a (audio), v (visual), l or t (text)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: by preset and model)")
    parser.add_argument("--clip", type=float, default=5.0, help="gradient-norm clipping (0: off)")
    parser.add_argument("--class-weights", action="store_true", help="inverse-frequency class weights in the loss")
    parser.add_argument("--branches", default=None, help="MDI branches, e.g. global,local,intra,inter")
    parser.add_argument("--combine", choices=COMBINES, default=None, help="MDI branch combination")
    parser.add_argument("--fusion", choices=FUSIONS, default=None, help="MDI fusion")
    parser.add_argument(
        "--freeze-fusion-projection", action="store_true", help="keep the fusion Linear at init (official quirk)"
    )
    parser.add_argument(
        "--no-nodal-attention",
        dest="nodal_attention",
        action="store_false",
        help="DialogueGCN: classify [g, h] directly instead of through the nodal attention (paper eqs. 4-6), as "
        "the official code does without --nodal_attention (the M3ED runs set it)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    parser.add_common_args()
    parser.set_presets(PRESETS, default="demo")
    return parser


def train_command(argv: Sequence[str] | None = None) -> dict:
    """``m3ed-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("preset", "device", "out", "resume", "quiet")}
    config = build_config(args.preset, **options)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    with cli.run_folder(args.out, "m3ed", args.resume) as out:  # no empty folder left if it fails
        results = fit(config, out, device, resume=args.resume, info={"preset": args.preset}, quiet=args.quiet)
    if distributed.is_main_process() and config.task == "multi":
        get_logger().info(
            f"best val micro F1 {results['val_micro_f1']:.2f} at epoch {results['best_epoch']}: test micro F1 "
            f"{results['test_micro_f1']:.2f}, macro F1 {results['test_macro_f1']:.2f}"
        )
    elif distributed.is_main_process():
        get_logger().info(
            f"best val WF1 {results['val_weighted_f1']:.2f} at epoch {results['best_epoch']}: "
            f"test WF1 {results['test_weighted_f1']:.2f}, accuracy {results['test_accuracy']:.2f}"
        )
    return results


def eval_command(argv: Sequence[str] | None = None) -> dict:
    """``m3ed-eval``: score a trained run on a split, or print the benchmark table of many runs."""
    parser = cli.ArgumentParser(
        prog="m3ed-eval",
        description="Weighted F1, accuracy and per-class F1 of a run's best-validation model on a split (micro/"
        "macro F1, Hamming loss and subset accuracy for a --task multi run); or, with --table, the benchmark "
        "table (models x modality combinations, drop-worst-val aggregation; one task at a time).",
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
    device = resolve_device(args.device)
    result = evaluate_run(args.run, device, split=args.split, data=args.data, batch_size=args.batch_size)
    print(json.dumps({k: v for k, v in result.items() if k != "confusion"}, indent=2))
    return result


def stats_command(argv: Sequence[str] | None = None) -> dict:
    """``m3ed-stats``: validate a release and print the paper's statistics table for it."""
    parser = cli.ArgumentParser(
        prog="m3ed-stats",
        description="Check every file of an M3ED release and print its statistics (dialogues, turns, "
        "utterances, labels per split, modality coverage). Without --data: the synthetic release.",
    )
    parser.add_argument("--data", type=Path, default=None, help="M3ED release folder")
    parser.add_argument("--features", default=None, help="feature pickle name inside --data")
    args = parser.parse_args(argv)
    table = release_stats(open_release(args.data, args.features))
    print(format_stats(table))
    return table


def make_synthetic_command(argv: Sequence[str] | None = None) -> dict:
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


def repro_command(argv: Sequence[str] | None = None) -> dict:
    """``m3ed-repro``: MDI against its baselines and its branch ablations; prints ``results.md``."""
    parser = cli.repro_parser(
        "m3ed-repro",
        "MDI vs the utterance MLP (no context) and DialogueRNN for every modality combination, and MDI's "
        "branch ablations, on the synthetic release, several seeds.",
        repro.PRESET_HELP,
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs per run")
    return cli.run_repro(parser, argv, "m3ed", repro.run, "epochs")


COMMANDS = {
    "train": train_command,
    "eval": eval_command,
    "stats": stats_command,
    "make-synthetic": make_synthetic_command,
    "repro": repro_command,
}
train_main = cli.console_script(train_command)
eval_main = cli.console_script(eval_command)
stats_main = cli.console_script(stats_command)
make_synthetic_main = cli.console_script(make_synthetic_command)
repro_main = cli.console_script(repro_command)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
