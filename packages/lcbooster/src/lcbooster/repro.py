"""``lcbooster-repro``: does LC-Booster's correction help at 80% and 90% symmetric noise? Paired runs, at CPU scale.

The paper's claim ("Reliable Label Correction is a Good Booster When Learning with Extremely Noisy Labels"):
DivideMix's sample selection degrades under extreme noise, and one reliable label-correction pass enlarges and
purifies its labelled set. Most of the paper's margin over plain DivideMix comes with its weak/strong views, so
the correction is measured against two controls that have them too:

- ``dividemix_views``: DivideMix's own recipe (Table 7) trained on LC-Booster's views;
- ``no_correction``: the LC-Booster run itself with the correction never firing (identical up to its epoch);
- ``ce`` (plain cross-entropy) and ``dividemix`` (its own w, w views) for context.

Every run is :func:`lcbooster.engine.fit` on an embedded dataset (default: the UCI digits, 1,442 noisy training
images, 355 clean test images; the small CNN), one noise draw per seed shared by every variant. Reported per noise
level: the test accuracy of each variant (mean ± std), the paired differences over the seeds with their 95%
t-intervals and per-seed values, and what the correction did: label accuracy and correct labels per class before
and after, and the labelled set (size, precision) at the correction and once the 5-epoch loss average has passed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from lcbooster import __version__
from lcbooster.config import TrainConfig, build_config
from lcbooster.data import load_images
from lcbooster.engine import fit
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import (
    RunCache,
    format_ci95,
    format_mean_std,
    markdown_table,
    mean_ci95,
    mean_std,
    plot_bars,
    write_results,
)

NOISES = ("sym80", "sym90")
VARIANTS = {
    "ce": "CE",
    "dividemix": "DivideMix",
    "dividemix_views": "DivideMix + views",
    "no_correction": "LC-Booster w/o correction",
    "lcbooster": "LC-Booster",
}
#: Short names for the figure's axis.
SHORT = {"ce": "CE", "dividemix": "DM", "dividemix_views": "DM+views", "no_correction": "no corr.", "lcbooster": "LCB"}
DEFAULT_VARIANTS = ("ce", "dividemix_views", "no_correction", "lcbooster")
#: The paired differences reported with 95% intervals (minuend, subtrahend), when both variants ran.
CONTRASTS = (
    ("lcbooster", "dividemix_views"),
    ("lcbooster", "no_correction"),
    ("no_correction", "dividemix_views"),
    ("dividemix_views", "dividemix"),
    ("dividemix_views", "ce"),
)
DATASETS = ("digits", "mnist5k")
#: Scales of ``lcbooster-repro --preset``: the embedded schedules of :data:`lcbooster.config.EMBEDDED_SCHEDULES`.
PRESET_HELP = {
    "demo": "digits: 10 warm-up + 30 co-training epochs, correction at 19, lr drop after 25",
    "small": "digits: 10 warm-up + 60 co-training epochs, correction at 29, lr drop after 39; run it with "
    "--seeds 10 for the intervals",
}


def variant_config(
    variant: str, dataset: str, noise: str, preset: str, *, seed: int, epochs: int | None = None
) -> TrainConfig:
    """The configuration of one compared run; every variant shares the dataset, noise draw, seed and schedule."""
    common = {"epochs": epochs, "seed": seed}
    if variant in ("ce", "dividemix", "lcbooster"):
        return build_config(dataset, noise, variant, preset, **common)
    if variant == "no_correction":
        return build_config(dataset, noise, "lcbooster", preset, relabel_epochs=[], **common)
    if variant == "dividemix_views":
        views = build_config(dataset, noise, "lcbooster", preset, **common)
        same = {"views": views.views, "strong_aug": views.strong_aug, "pad_mode": views.pad_mode}
        return build_config(dataset, noise, "dividemix", preset, **same, **common)
    raise UserError(f"unknown variant {variant!r}: choose among {', '.join(VARIANTS)}")


def run(
    out: Path,
    device: torch.device,
    *,
    seeds: int = 3,
    preset: str = "demo",
    noises: Sequence[str] = NOISES,
    dataset: str = "digits",
    epochs: int | None = None,
    variants: Sequence[str] = DEFAULT_VARIANTS,
) -> dict:
    """Train every variant at every noise level for every seed (reusing runs recorded in ``out/runs``); write the
    report (``results.json``, ``results.md``, ``results.png``) into ``out``."""
    if preset not in PRESET_HELP:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESET_HELP)}")
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    if not noises or (epochs is not None and epochs < 2):
        raise UserError("--epochs must be >= 2 and --noise non-empty")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UserError(f"--variants {','.join(unknown) or '(none)'}: choose among {', '.join(VARIANTS)}")
    variants = [v for v in VARIANTS if v in variants]  # the table's order
    configs = {
        (noise, variant, seed): variant_config(variant, dataset, noise, preset, seed=seed, epochs=epochs)
        for noise in noises
        for seed in range(seeds)
        for variant in variants
    }  # every configuration checked before the first run
    log = get_logger()
    cache = RunCache(out / "runs", __version__)
    images = load_images(dataset)
    started = time.monotonic()
    runs: dict[str, dict[str, list[dict]]] = {n: {v: [] for v in variants} for n in noises}
    trained: list[str] = []
    for noise in noises:
        for seed in range(seeds):
            for variant in variants:
                config, run_name = configs[(noise, variant, seed)], f"{noise}-{variant}-seed{seed}"

                def train(config=config, run_name=run_name) -> dict:
                    trained.append(run_name)
                    return fit(config, cache.fresh_folder(run_name), device, images=images, quiet=True)

                runs[noise][variant].append(cache.run(run_name, {"config": config}, train))
            log.info(f"{noise} seed {seed} done ({time.monotonic() - started:.0f} s)")
    schedule = configs[(noises[0], variants[-1], 0)]
    accuracy, summary = _accuracy_report(runs)
    contrasts, differences, headline = _contrast_report(runs)
    correction = _correction_report(runs)
    figure = _figure(out, differences, f"{dataset}, {seeds} seed(s), {schedule.epochs} epochs ({preset} preset)")
    seconds = round(time.monotonic() - started, 1)
    drop = ", ".join(map(str, schedule.lr_milestones))
    notes = (
        f"{seeds} seed(s), {preset} preset on {dataset} ({schedule.epochs} epochs, warm-up {schedule.warmup_epochs}, "
        f"correction at {_correction_epoch(configs)}, lr drop after {drop}); test accuracy in %, mean ± std over "
        "seeds. Paired differences: mean over seeds [95% t-interval], then each seed's value. 'labelled' is the "
        "GMM's labelled set (mean of the two nets' divisions) and its precision, at the correction epoch c and at "
        "c + 5, the first division made from post-correction losses only; 'classes gaining' counts, per seed, the "
        "classes whose correct labels the correction increased. "
        f"Wall time {seconds:.0f} s{_reuse(trained, configs, out)}."
    )
    tables = f"{accuracy}\n\nPaired differences (points):\n\n{contrasts}"
    if correction:
        tables += f"\n\nThe correction (LC-Booster runs):\n\n{correction}"
    results = {"summary": summary, "differences": differences, "runs": runs, "seeds": seeds, "preset": preset}
    results |= {"dataset": dataset, "variants": variants, "epochs": schedule.epochs, "seconds": seconds}
    results["trained_runs"] = len(trained)
    write_results(
        out,
        title="LC-Booster reproduction (embedded, CPU)",
        table=tables,
        headline=headline,
        notes=notes,
        results=results,
        figure=figure,
    )
    return {**results, "headline": headline}


def _reuse(trained: list[str], configs: dict, out: Path) -> str:
    reused = len(configs) - len(trained)
    return f" ({reused} of the {len(configs)} runs reused from {out / 'runs'})" if reused else ""


def _correction_epoch(configs: dict) -> str:
    epochs = {e for c in configs.values() if c.method == "lcbooster" for e in c.relabel_epochs}
    return ", ".join(map(str, sorted(epochs))) or "none"


def _values(runs: list[dict], *keys: str) -> list:
    values = []
    for run in runs:
        value = run
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return values


def _accuracy_report(runs: dict) -> tuple[str, dict]:
    """One row per variant: last-epoch and best test accuracy at each noise level (mean ± std over seeds)."""
    noises, variants = list(runs), list(next(iter(runs.values())))
    headers = ["variant"] + [f"{noise} {k}" for noise in noises for k in ("last", "best")]
    rows = [
        [VARIANTS[v]] + [format_mean_std(_values(runs[n][v], k)) for n in noises for k in ("last", "best")]
        for v in variants
    ]
    summary = {
        noise: {
            f"{v}_{k}": mean_std(_values(runs[noise][v], k))[0] for v in variants for k in ("best", "last", "last5")
        }
        for noise in noises
    }
    return markdown_table(headers, rows), summary


def _contrast_report(runs: dict) -> tuple[str, dict, str]:
    """Paired last-epoch differences per seed, their mean and 95% interval, and the headline that reads them."""
    headers = ["noise", "difference", "mean [95% interval]", "per seed"]
    rows, differences, claims = [], {}, []
    for noise, by_variant in runs.items():
        differences[noise] = {}
        for left, right in CONTRASTS:
            if left not in by_variant or right not in by_variant:
                continue
            pairs = zip(_values(by_variant[left], "last"), _values(by_variant[right], "last"), strict=True)
            values = [a - b for a, b in pairs]
            mean, low, high = mean_ci95(values)
            name = f"{VARIANTS[left]} − {VARIANTS[right]}"
            differences[noise][f"{left}-{right}"] = {"mean": mean, "low": low, "high": high, "per_seed": values}
            rows.append([noise, name, format_ci95(values), " ".join(f"{v:+.1f}" for v in values)])
            if left == "lcbooster":
                claims.append(
                    f"{noise}: {name} = {format_ci95(values)} over {len(values)} seed(s), {_reading(low, high)}."
                )
    return markdown_table(headers, rows), differences, " ".join(claims)


def _reading(low: float, high: float) -> str:
    if math.isnan(low):
        return "one seed: no interval"
    if low > 0:
        return "the interval excludes 0: LC-Booster better"
    if high < 0:
        return "the interval excludes 0: LC-Booster worse"
    return "the interval contains 0: no difference resolved"


def _correction_report(runs: dict) -> str:
    headers = ["noise", "overwritten (accuracy)", "label acc before → after", "labelled at c → c + 5 (precision)"]
    headers.append("classes gaining")
    rows = []
    for noise, by_variant in runs.items():
        corrections = _values(by_variant.get("lcbooster", []), "correction")
        if not corrections:
            continue

        def stat(key: str, digits: int = 0, corrections=corrections) -> str:
            values = [c[key] for c in corrections if c.get(key) is not None]
            return f"{mean_std(values)[0]:.{digits}f}" if values else "n/a"

        gaining = [
            sum(a > b for a, b in zip(c["correct_per_class_after"], c["correct_per_class_before"], strict=True))
            for c in corrections
            if c.get("correct_per_class_before")
        ]
        rows.append(
            [
                noise,
                f"{stat('overwritten')} ({stat('relabel_accuracy', 3)})",
                f"{stat('label_accuracy_before', 3)} → {stat('label_accuracy_after', 3)}",
                f"{stat('n_labeled_before')} ({stat('labeled_precision_before', 3)}) → "
                f"{stat('n_labeled_after')} ({stat('labeled_precision_after', 3)})",
                f"{' '.join(map(str, gaining))} of {len(corrections[0]['correct_per_class_before'])}"
                if gaining
                else "n/a",
            ]
        )
    return markdown_table(headers, rows) if rows else ""


def _figure(out: Path, differences: dict, title: str) -> Path | None:
    """The paired differences with 95% intervals, one group per contrast, one bar per noise (CE, far below, left
    to the table)."""
    names = {key for by_noise in differences.values() for key in by_noise}
    contrasts = [f"{a}-{b}" for a, b in CONTRASTS if f"{a}-{b}" in names and b != "ce"]
    if not contrasts:
        return None
    labels = [" −\n".join(SHORT[v] for v in key.split("-")) for key in contrasts]
    series = {noise: [by_noise[key]["per_seed"] for key in contrasts] for noise, by_noise in differences.items()}
    return plot_bars(
        out / "results.png",
        labels,
        series,
        ylabel="paired difference (points)",
        title=f"Last-epoch test accuracy, paired over seeds: mean and 95% interval\n{title}",
        interval=True,
    )
