"""``m3ed-repro``: dialogue context wins where emotions depend on it (spec section 8.2, C4 and C5).

On the synthetic release (40% of utterances carry no emotion signal of their own; their emotion is
the one of the same speaker's previous utterance), every run is a real ``m3ed-train`` run (demo
preset, test weighted F1 at the best-validation epoch):

- C4: MDI vs the utterance-level MLP (no context) vs DialogueRNN, for every modality combination;
- C5: MDI's interaction branches one at a time on top of the global branch, all four, and the
  paper-figure combination ``per_block`` instead of the released ``end``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from m3ed.cli import MODEL_NAMES, train
from shared import cli
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import format_mean_std, markdown_table, mean_std, write_results

COMBINATIONS = ("a", "v", "l", "av", "al", "vl", "avl")
ABLATIONS = {
    "global": ["--branches", "global"],
    "global + local": ["--branches", "global,local"],
    "global + intra-speaker": ["--branches", "global,intra"],
    "global + inter-speaker": ["--branches", "global,inter"],
    "all four (end, released)": [],
    "all four (per_block, paper figure)": ["--combine", "per_block"],
}


def _run(out: Path, name: str, seed: int, argv: list[str]) -> float:
    results = train([*argv, "--seed", str(seed), "--out", str(out / f"{name}-seed{seed}"), "--quiet"])
    return results["test_weighted_f1"]


def repro(argv: Sequence[str] | None = None) -> dict:
    parser = cli.ArgumentParser(
        prog="m3ed-repro",
        description="MDI vs utterance-only and DialogueRNN per modality combination, and MDI's branch "
        "ablations, on the synthetic release (demo preset), several seeds.",
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the demo preset's)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/m3ed-repro/<time>)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        raise UserError("--seeds and --epochs must be >= 1")
    out = cli.run_dir(args.out, "m3ed-repro", resume=False)
    common = ["--preset", "demo", "--device", "cpu"] + (["--epochs", str(args.epochs)] if args.epochs else [])
    log = get_logger()
    started = time.monotonic()
    context: dict[str, dict[str, list[float]]] = {m: {c: [] for c in COMBINATIONS} for m in MODEL_NAMES}
    ablation: dict[str, list[float]] = {name: [] for name in ABLATIONS}
    for seed in range(args.seeds):
        for model in MODEL_NAMES:
            for combo in COMBINATIONS:
                name = f"{model}-{combo}"
                score = _run(out / "runs", name, seed, [*common, "--model", model, "--modalities", combo])
                context[model][combo].append(score)
        for label, extra in ABLATIONS.items():
            if not extra:  # the full model is the MDI run on avl above
                ablation[label].append(context["mdi"]["avl"][-1])
                continue
            slug = "mdi-avl-" + "-".join(extra[1:]).replace(",", "+")
            ablation[label].append(_run(out / "runs", slug, seed, [*common, "--model", "mdi", *extra]))
        log.info(f"seed {seed} done ({time.monotonic() - started:.0f} s)")

    headers = ["model", *(c.upper() for c in COMBINATIONS)]
    rows = [[MODEL_NAMES[m], *(format_mean_std(context[m][c]) for c in COMBINATIONS)] for m in MODEL_NAMES]
    table = markdown_table(headers, rows)
    ablation_table = markdown_table(
        ["MDI branches (A+V+L)", "test weighted F1"], [[k, format_mean_std(v)] for k, v in ablation.items()]
    )
    mdi, mlp, rnn = (mean_std(context[m]["avl"])[0] for m in MODEL_NAMES)
    wins = sum(mean_std(context["mdi"][c])[0] >= mean_std(context["utt-mlp"][c])[0] + 5 for c in COMBINATIONS)
    headline = (
        f"A+V+L test WF1: MDI {mdi:.2f} vs utterance MLP {mlp:.2f} ({mdi - mlp:+.2f}) vs DialogueRNN {rnn:.2f}; "
        f"MDI >= MLP + 5 points in {wins}/{len(COMBINATIONS)} modality combinations ({args.seeds} seed(s))"
    )
    notes = f"MDI branch ablations:\n\n{ablation_table}"
    print(f"{table}\n\n{headline}\n\n{ablation_table}", flush=True)
    results = {
        "context": context,
        "ablation": ablation,
        "seeds": args.seeds,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_results(
        out,
        title="m3ed-repro: test weighted F1 (%) on the synthetic release",
        table=table,
        headline=headline,
        results=results,
        notes=notes,
    )
    return results
