"""``promptdfd-repro``: does a reinforced topic prompter make better synthetic text for data-free distillation?

The claim of Ma et al., PromptDFD (IJCAI 2022): pseudo sentences written by a pre-trained language model and
steered by a topic prompter trained with reinforcement learning distil a text classifier better than earlier
data-free syntheses, in some cases about as well as the original training text. On the keyword-topic toy task
(``demo``), per seed, one teacher and one generator are trained, then every method makes its synthetic set and
the same KD recipe distils the same student: random tokens, an out-of-domain corpus, the unprompted generator,
a hand-written prompt per class, the reinforced prompter, and KD on the real training texts (the upper bound).
The report is the student's test accuracy per method (mean +- std over seeds), the prompter's learning curve
(the fraction of prompts holding a keyword of their class, which starts near chance), and sample texts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from shared.errors import UserError
from shared.logging import get_logger
from shared.report import (
    RunCache,
    format_ci95,
    format_mean_std,
    hypothesis_lines,
    markdown_table,
    mean_std,
    paired_differences,
    plot_bars,
    plot_lines,
    write_results,
)

from . import __version__
from .config import build_config, plain
from .engine import fit, prepare_assets, trains_generator

PRESET_HELP = {
    "demo": "keyword-topic toy task, tiny teacher/student/generator, GRU prompter, 1,600 texts and 200 KD updates "
    "per method",
    "small": "BBC News, MiniLM-L6 teacher, MiniLM-L2 student, SmolLM2-135M generator, 800 texts and 6,400 KD samples "
    "per method (about 15 min per seed on 2 cores)",
}
#: The runs of the comparison: each a method with the preset's settings, plus the two-stage ablation, whose
#: prompter learns from the topic reward alone (the toy check that it learns to emit class keywords).
RUNS: dict[str, dict] = {
    "random-tokens": {"method": "random-tokens"},
    "ood-corpus": {"method": "ood-corpus"},
    "unprompted-lm": {"method": "unprompted-lm"},
    "manual-prompt": {"method": "manual-prompt"},
    "promptdfd-two-stage": {"method": "promptdfd", "schedule": "two-stage", "lambda_adv": 0.0, "rl_batch_size": 64},
    "promptdfd": {"method": "promptdfd"},
    "data-kd": {"method": "data-kd"},
}
ORDER = tuple(RUNS)
#: The runs of each preset: ``small`` leaves out the two-stage ablation (6,400 SmolLM2 generations).
PRESET_RUNS = {"demo": ORDER, "small": tuple(m for m in ORDER if m != "promptdfd-two-stage")}
#: Students distilled on each synthetic set. The demo's tiny random-init student lands anywhere between 0.5
#: and 1.0 on one set depending on its initialisation, so three average it out; the small preset's student
#: starts from pre-trained MiniLM layers, and one per set keeps a seed near 15 minutes.
EVAL_STUDENTS = {"demo": 3, "small": 1}
#: Whether each seed trains its own teacher. The small preset fine-tunes one MiniLM teacher (seed 0, 3.5 min)
#: and distils it at every seed: in data-free KD the teacher is given, and the seeds vary the synthesis and the
#: student.
TEACHER_PER_SEED = {"demo": True, "small": False}


def run(out: Path, device: torch.device, *, seeds: int = 3, preset: str = "demo", methods=None) -> dict:
    """Every method at seeds 0..seeds-1; writes ``results.json``, ``results.md`` and ``results.png`` into ``out``."""
    if preset not in PRESET_RUNS:
        raise UserError(f"promptdfd-repro runs --preset {' or '.join(PRESET_RUNS)}, not {preset}")
    methods = list(methods or PRESET_RUNS[preset])
    unknown = [m for m in methods if m not in RUNS]
    if unknown:
        raise UserError(f"unknown method {', '.join(unknown)}: choose from {', '.join(RUNS)}")
    cache = RunCache(Path(out) / "runs", __version__)
    log = get_logger()
    results: dict[str, list[dict]] = {m: [] for m in methods}
    assets: list[dict] = []
    for seed in range(seeds):
        base = build_config(preset, seed=seed, eval_students=EVAL_STUDENTS[preset])
        asset_seed = seed if TEACHER_PER_SEED[preset] else 0
        name = f"seed{asset_seed}-assets"
        folder = cache.folder / name
        generator = folder / "generator.pt" if trains_generator(base) else None
        if not ((folder / "teacher.pt").is_file() and (generator is None or generator.is_file())):
            cache.path(name).unlink(missing_ok=True)
        asset_config = dataclasses.replace(base, seed=asset_seed)
        assets.append(
            cache.run(
                name,
                plain(asset_config),
                lambda c=asset_config, name=name: prepare_assets(c, cache.fresh_folder(name), device, quiet=True),
            )
        )
        for method in methods:
            config = dataclasses.replace(base, teacher=folder / "teacher.pt", generator=generator, **RUNS[method])
            run_name = f"seed{seed}-{method}"
            log.info(f"{run_name} ...")
            results[method].append(
                cache.run(
                    run_name,
                    plain(config),
                    lambda c=config, n=run_name: fit(c, cache.fresh_folder(n), device, quiet=True),
                )
            )
            log.info(f"{run_name}: student test accuracy {results[method][-1]['student_accuracy_mean']:.4f}")
    return report(out, results, assets, preset)


def report(out: Path, results: dict[str, list[dict]], assets: list[dict], preset: str) -> dict:
    """The tables, hypotheses and figure of a finished comparison."""
    out = Path(out)
    methods = [m for m in ORDER if m in results]
    accuracy = {m: [r["student_accuracy_mean"] for r in results[m]] for m in methods}
    teacher = [a["teacher"]["test"]["accuracy"] for a in assets]
    rows = []
    for m in methods:
        synth = [r["synthetic"] for r in results[m]]
        keyword = [s["keyword_fraction"] for s in synth if "keyword_fraction" in s]
        vs_random = (
            format_ci95(paired_differences(accuracy[m], accuracy["random-tokens"]), 3)
            if "random-tokens" in accuracy and m != "random-tokens" and len(accuracy[m]) > 1
            else ""
        )
        rows.append(
            [
                m,
                format_mean_std(accuracy[m], 3),
                format_mean_std([r["student"]["accuracy"] for r in results[m]], 3),
                format_mean_std([float(np.mean([x["macro_f1"] for x in r["students"]])) for r in results[m]], 3),
                vs_random,
                format_mean_std([s["teacher_confidence"] for s in synth], 3),
                format_mean_std(keyword, 2) if keyword else "",
                format_mean_std([s["distinct_2"] for s in synth], 2),
                f"{results[m][0]['texts']:,} / {results[m][0]['kd_updates']}",
            ]
        )
    rows.append(["teacher", format_mean_std(teacher, 3), "", "", "", "", "", "", ""])
    table = markdown_table(
        [
            "method",
            f"student accuracy (mean of {EVAL_STUDENTS.get(preset, 1)} per set)",
            "the run's own student",
            "macro-F1",
            "minus random-tokens (95% CI)",
            "teacher confidence",
            "texts with a class keyword",
            "distinct-2",
            "texts / KD updates",
        ],
        rows,
    )
    hypotheses, curve = {}, None
    if "promptdfd-two-stage" in results and results["promptdfd-two-stage"][0].get("rl"):
        rl = [r["rl"] for r in results["promptdfd-two-stage"]]
        if "keyword_fraction_first10" in rl[0]:
            first = float(np.mean([r["keyword_fraction_first10"] for r in rl]))
            last = float(np.mean([r["keyword_fraction_last10"] for r in rl]))
            hypotheses["keyword"] = {
                "statement": f"two-stage prompter (topic reward only): prompts holding a keyword of their class rise "
                f"from about chance ({first:.2f} in the first 10 iterations) to > 0.8 (mean of the last 10)",
                "measured": last,
                "held": last > 0.8,
            }
            curve = [r["curve"]["keyword_fraction"] for r in rl]
    if "promptdfd" in accuracy:
        pd_mean, rt_mean = mean_std(accuracy["promptdfd"])[0], mean_std(accuracy.get("random-tokens", [np.nan]))[0]
        if "random-tokens" in accuracy:
            hypotheses["vs_random"] = {
                "statement": "promptdfd student accuracy >= random-tokens student accuracy (mean over seeds)",
                "measured": pd_mean - rt_mean,
                "held": pd_mean >= rt_mean,
            }
        if "unprompted-lm" in accuracy:
            gap = pd_mean - mean_std(accuracy["unprompted-lm"])[0]
            hypotheses["vs_unprompted"] = {
                "statement": "promptdfd student accuracy - unprompted-lm student accuracy >= 0 (mean over seeds)",
                "measured": gap,
                "held": gap >= 0,
            }
            if preset == "small" and "data-kd" in accuracy:
                behind = mean_std(accuracy["data-kd"])[0] - pd_mean
                hypotheses["e1"] = {
                    "statement": "E1: promptdfd - unprompted-lm >= 0.02 and data-kd - promptdfd <= 0.05 (means; "
                    f"data-kd - promptdfd = {behind:+.3f}; measured: promptdfd - unprompted-lm)",
                    "measured": gap,
                    "held": gap >= 0.02 and behind <= 0.05,
                }
    figure = plot_bars(
        out / "results.png",
        methods,
        {"student test accuracy": [accuracy[m] for m in methods]},
        ylabel="test accuracy",
        title=f"PromptDFD ({preset}): student accuracy per synthetic set",
    )
    if curve is not None:
        steps = list(range(1, len(curve[0]) + 1))
        plot_lines(
            out / "prompter.png",
            steps,
            {"prompts with a class keyword": [list(v) for v in zip(*curve, strict=True)]},
            xlabel="REINFORCE iteration",
            ylabel="fraction",
            title="Two-stage topic prompter: prompts holding a keyword of their class",
        )
    shown = ", ".join(
        f"{m} {format_mean_std(accuracy[m], 3)}" for m in ("promptdfd", "random-tokens", "data-kd") if m in accuracy
    )
    headline = f"Student test accuracy, {len(teacher)} seed(s): {shown}; teacher {format_mean_std(teacher, 3)}."
    notes = hypothesis_lines(hypotheses) + "\n\n" + _samples(results)
    if curve is not None:
        notes += "\n\n![prompter](prompter.png)\n"
    write_results(
        out,
        title=f"PromptDFD reproduction ({preset})",
        table=table,
        headline=headline,
        results={"preset": preset, "methods": results, "assets": assets, "hypotheses": hypotheses},
        notes=notes,
        figure=figure,
    )
    return {"preset": preset, "methods": results, "hypotheses": hypotheses}


def _samples(results: dict[str, list[dict]]) -> str:
    """Example synthetic texts of seed 0, per method (from each run's synth.jsonl)."""
    lines = ["## Synthetic texts (seed 0)"]
    for method in ORDER:
        if method in results and results[method] and results[method][0].get("examples"):
            lines.append(f"\n**{method}**\n")
            lines += [f"- `{e}`" for e in results[method][0]["examples"]]
    return "\n".join(lines)
