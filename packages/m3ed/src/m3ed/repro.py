"""``m3ed-repro``: dialogue context wins where emotions depend on it.

"M3ED: Multi-modal Multi-scene Multi-label Emotional Dialogue Database" (ACL 2022) proposes MDI, whose
dialog-aware interaction branches (global, local, intra- and inter-speaker, Figure 2) model the dialogue
context. On the synthetic release (40% of utterances carry no emotion signal of their own; their emotion
is the one of the same speaker's previous utterance), every run is :func:`m3ed.engine.fit` with the
``demo`` preset (``small``: the larger models, 20 epochs), and its score is the test weighted F1 at the
best-validation epoch:

- MDI vs the utterance-level MLP (no context) vs DialogueRNN, for every modality combination;
- all five models (those three, DialogueGCN and MMGCN) and DialogueGCN without its nodal attention on
  A+V+L, on the single-label task and on the multi-label task (micro and macro F1 at the best-validation
  micro F1, at least one emotion predicted per utterance), beside the train split's majority class;
- MDI's interaction branches one at a time on top of the global branch, all four, and the combination
  the paper's Figure 2 draws (``per_block``) instead of the released ``end``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m3ed import __version__
from m3ed.config import PRESETS, build_config
from m3ed.data import multi_hot_targets, open_release
from m3ed.engine import fit
from m3ed.metrics import classification_report, multilabel_report
from m3ed.models import MODEL_NAMES
from m3ed.release import M3EDRelease
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import RunCache, format_mean_std, markdown_table, mean_std, plot_bars, write_results

COMBINATIONS = ("a", "v", "l", "av", "al", "vl", "avl")
#: The models of the per-combination table; every model of MODEL_NAMES runs on A+V+L for both tasks.
CONTEXT_MODELS = ("mdi", "utt-mlp", "dialoguernn")
#: Variants run on A+V+L for both tasks beside the five models: row label, run name and options.
TASK_VARIANTS = {
    "DialogueGCN w/o nodal attention": ("dialoguegcn-nonodal", {"model": "dialoguegcn", "nodal_attention": False}),
}
#: The multi-label runs predict at least one emotion per utterance (every utterance of M3ED has one): with the
#: 0.5 threshold alone a model that has learned only the label priors predicts nothing and scores 0.
MULTI_OPTIONS = {"task": "multi", "at_least_one": True}
#: MDI's branch ablations on A+V+L: run name and options (None: the all-four MDI run of the comparison).
ABLATIONS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "global": ("global", {"branches": ("global",)}),
    "global + local": ("global+local", {"branches": ("global", "local")}),
    "global + intra-speaker": ("global+intra", {"branches": ("global", "intra")}),
    "global + inter-speaker": ("global+inter", {"branches": ("global", "inter")}),
    "all four (end, released)": None,
    "all four (per_block, paper figure)": ("per_block", {"combine": "per_block"}),
}
#: Scales of ``m3ed-repro --preset``: every run uses the ``m3ed-train`` preset of the same name.
PRESET_HELP = {
    "demo": f"the demo models (MDI d 64, 2 layers), {PRESETS['demo']['epochs']} epochs per run",
    "small": f"the small models (MDI d 256, 2 layers; baselines at their official sizes), "
    f"{PRESETS['small']['epochs']} epochs per run",
}


def run(out: Path, device: torch.device, *, seeds: int = 3, preset: str = "demo", epochs: int | None = None) -> dict:
    """Train every model, combination and ablation for every seed (reusing runs recorded in ``out/runs``);
    write the report into ``out``."""
    if preset not in PRESET_HELP:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESET_HELP)}")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    log = get_logger()
    cache = RunCache(out / "runs", __version__)
    release = open_release(None)
    started = time.monotonic()

    def train_run(name: str, seed: int, **options: Any) -> dict:
        config = build_config(preset, seed=seed, epochs=epochs, **options)
        run_name = f"{name}-seed{seed}"

        def train() -> dict:
            run_out = cache.fresh_folder(run_name)
            return fit(config, run_out, device, release=release, info={"preset": preset}, quiet=True)

        result = cache.run(run_name, {"config": config}, train)
        key = "test_weighted_f1" if config.task == "single" else "test_micro_f1"
        log.info(f"seed {seed} {name}: {key} {result[key]:.2f}")
        return result

    def score(name: str, seed: int, **options: Any) -> float:
        return train_run(name, seed, **options)["test_weighted_f1"]

    context: dict[str, dict[str, list[float]]] = {m: {c: [] for c in COMBINATIONS} for m in MODEL_NAMES}
    task_rows = {label: (slug, {"model": slug}) for slug, label in MODEL_NAMES.items()} | TASK_VARIANTS
    tasks = {label: {"weighted_f1": [], "micro_f1": [], "macro_f1": []} for label in task_rows}
    ablation: dict[str, list[float]] = {name: [] for name in ABLATIONS}
    for seed in range(seeds):
        for model in MODEL_NAMES:
            for combo in COMBINATIONS if model in CONTEXT_MODELS else ("avl",):
                context[model][combo].append(score(f"{model}-{combo}", seed, model=model, modalities=combo))
        for label, (slug, options) in task_rows.items():
            single = context[slug]["avl"][-1] if slug in context else score(f"{slug}-avl", seed, **options)
            multi = train_run(f"{slug}-avl-multi", seed, modalities="avl", **options, **MULTI_OPTIONS)
            tasks[label]["weighted_f1"].append(single)
            tasks[label]["micro_f1"].append(multi["test_micro_f1"])
            tasks[label]["macro_f1"].append(multi["test_macro_f1"])
        for label, variant in ABLATIONS.items():
            if variant is None:
                ablation[label].append(context["mdi"]["avl"][-1])
            else:
                slug, options = variant
                ablation[label].append(score(f"mdi-avl-{slug}", seed, model="mdi", modalities="avl", **options))

    epochs = epochs or PRESETS[preset]["epochs"]
    headers = ["model", *(c.upper() for c in COMBINATIONS)]
    rows = [[MODEL_NAMES[m], *(format_mean_std(context[m][c]) for c in COMBINATIONS)] for m in CONTEXT_MODELS]
    table = markdown_table(headers, rows)
    prior = majority_scores(release)
    tasks_table = markdown_table(
        ["model (A+V+L)", "single-label weighted F1", "multi-label micro F1", "multi-label macro F1"],
        [[label, *(format_mean_std(v) for v in scores.values())] for label, scores in tasks.items()]
        + [["majority class of train (no model)", *(f"{v:.2f}" for v in prior.values())]],
    )
    ablation_table = markdown_table(
        ["MDI branches (A+V+L)", "test weighted F1"], [[k, format_mean_std(v)] for k, v in ablation.items()]
    )
    mdi, mlp, rnn = (mean_std(context[m]["avl"])[0] for m in CONTEXT_MODELS)
    wins = sum(mean_std(context["mdi"][c])[0] >= mean_std(context["utt-mlp"][c])[0] + 5 for c in COMBINATIONS)
    headline = (
        f"A+V+L test WF1: MDI {mdi:.2f} vs utterance MLP {mlp:.2f} ({mdi - mlp:+.2f}) vs DialogueRNN {rnn:.2f}; "
        f"MDI >= MLP + 5 points in {wins}/{len(COMBINATIONS)} modality combinations ({seeds} seed(s))"
    )
    figure = plot_bars(
        out / "results.png",
        ["+".join(c.upper()) for c in COMBINATIONS],
        {MODEL_NAMES[m]: [context[m][c] for c in COMBINATIONS] for m in CONTEXT_MODELS},
        ylabel="test weighted F1 (%)",
        title=f"synthetic M3ED release, {preset} models ({seeds} seed(s), {epochs} epochs)",
    )
    results = {
        "context": {m: {c: v for c, v in combos.items() if v} for m, combos in context.items()},
        "tasks": tasks,
        "majority_class": prior,
        "ablation": ablation,
        "preset": preset,
        "epochs": epochs,
        "seeds": seeds,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_results(
        out,
        title="m3ed-repro: test weighted F1 (%) on the synthetic release",
        table=table,
        headline=headline,
        results=results,
        notes=f"All five models on A+V+L, single- and multi-label (test scores at the best-validation epoch; "
        f"multi-label: at least one emotion per utterance):"
        f"\n\n{tasks_table}\n\nMDI branch ablations:\n\n{ablation_table}",
        figure=figure,
    )
    return {**results, "headline": headline}


def majority_scores(release: M3EDRelease) -> dict[str, float]:
    """Test scores (%) of predicting the train split's most frequent main emotion for every utterance: weighted
    F1 of the single-label task, micro and macro F1 of the multi-label task (that one emotion predicted)."""
    counts = np.bincount([y for d in release.dialogues_in("train") for y in release.features.labels[d]], minlength=7)
    majority = int(counts.argmax())
    test = release.dialogues_in("test")
    truth = np.concatenate([np.asarray(release.features.labels[d]) for d in test])
    single = classification_report(truth, np.full_like(truth, majority))
    targets = multi_hot_targets(release)
    multi_truth = np.concatenate([targets[d] for d in test]).astype(np.int64)
    predicted = np.zeros_like(multi_truth)
    predicted[:, majority] = 1
    multi = multilabel_report(multi_truth, predicted)
    return {
        "weighted_f1": 100 * single["weighted_f1"],
        "micro_f1": 100 * multi["micro_f1"],
        "macro_f1": 100 * multi["macro_f1"],
    }
