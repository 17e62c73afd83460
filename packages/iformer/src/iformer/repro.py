"""``iformer-repro``: does the frequency ramp help, at CPU scale?

The paper's claim (Inception mixer with a high-to-low frequency ramp beats attention-only mixing at a
similar size) is an ImageNet claim. Here, on the embedded digits at 32x32, the ``tiny_test`` iFormer
(the ramp: the attention share C_l/C grows with depth) is trained against two ablations of the same
macro-architecture, each at a matched parameter count (the MLP ratio is adjusted to match):

- attention only: every channel goes to the low-frequency (attention) branch, C_h = 0;
- constant split: half the channels to each branch in every block, no ramp.

Every run is :func:`iformer.engine.fit` with the ``demo`` recipe (``small``: a longer schedule); the runs
share one read of the data and its order (seed 0), and the seeds vary the initialisation. The reported
score is the test accuracy after the last epoch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from iformer import __version__
from iformer.config import build_config
from iformer.data import digits_loaders
from iformer.engine import fit
from iformer.models import MODEL_CONFIGS, InceptionTransformer
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import RunCache, format_mean_std, markdown_table, mean_std, plot_bars, write_results

TINY = MODEL_CONFIGS["tiny_test"]
VARIANTS = {
    "iFormer (frequency ramp)": TINY["attention_heads"],
    "attention only (C_h = 0)": tuple(
        h for h, d in zip(TINY["num_heads"], TINY["depths"], strict=True) for _ in range(d)
    ),
    "constant split (C_l = C/2)": tuple(
        h // 2 for h, d in zip(TINY["num_heads"], TINY["depths"], strict=True) for _ in range(d)
    ),
}
#: Scales of ``iformer-repro --preset``: epochs of every run (the demo recipe otherwise).
PRESETS = {"demo": {"epochs": 8}, "small": {"epochs": 30}}
PRESET_HELP = {"demo": "8 epochs per run", "small": "30 epochs per run"}
IMG_SIZE, BATCH_SIZE = 32, 64


def build_variant(attention_heads: Sequence[int], mlp_ratio: float = 4.0) -> InceptionTransformer:
    return InceptionTransformer(
        **{**TINY, "attention_heads": attention_heads, "mlp_ratio": mlp_ratio, "num_classes": 10, "img_size": 32}
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_mlp_ratio(attention_heads: Sequence[int], target: int) -> float:
    """The MLP ratio (on a 1/64 grid in [2, 6]) whose parameter count is closest to ``target``."""
    ratios = [2 + i / 64 for i in range(257)]

    def size(ratio: float) -> int:
        with torch.device("meta"):  # counting only: no weights are allocated
            return count_parameters(build_variant(attention_heads, ratio))

    low, high = 0, len(ratios) - 1  # the count grows with the ratio: bisect for the first one >= target
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if size(ratios[middle]) < target else (low, middle)
    candidates = ratios[max(low - 1, 0) : low + 1]
    return min(candidates, key=lambda r: abs(size(r) - target))


def _slug(name: str) -> str:
    return name.split(" (")[0].replace(" ", "-")


def run(out: Path, device: torch.device, *, seeds: int = 3, preset: str = "demo", epochs: int | None = None) -> dict:
    """Train every variant for every seed (reusing runs recorded in ``out/runs``); write the report into ``out``."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    epochs = epochs or PRESETS[preset]["epochs"]
    if epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    log = get_logger()
    cache = RunCache(out / "runs", __version__)
    loaders = digits_loaders(IMG_SIZE, BATCH_SIZE, seed=0, device=device)
    names = list(VARIANTS)
    target = count_parameters(build_variant(VARIANTS[names[0]]))
    ratios = {name: 4.0 if i == 0 else matched_mlp_ratio(VARIANTS[name], target) for i, name in enumerate(names)}
    scores: dict[str, list[float]] = {name: [] for name in names}
    started = time.monotonic()
    for seed in range(seeds):
        for name in names:
            kwargs = {"attention_heads": list(VARIANTS[name]), "mlp_ratio": ratios[name]}
            config = build_config("demo", seed=seed, epochs=epochs, batch_size=BATCH_SIZE, model_kwargs=kwargs)
            run_name = f"{_slug(name)}-seed{seed}"

            def train(config=config, run_name=run_name) -> dict:
                return fit(config, cache.fresh_folder(run_name), device, loaders=loaders, quiet=True)

            result = cache.run(run_name, {"config": config, "data_seed": 0}, train)
            scores[name].append(result["test_top1"])
            log.info(f"seed {seed} {name}: test top-1 {result['test_top1']:.2f}%")
    rows = []
    for name in names:
        model = build_variant(VARIANTS[name], ratios[name])
        split = " ".join(f"{b.attn.low_dim / (b.attn.low_dim + b.attn.high_dim):.2f}" for b in _blocks(model))
        rows.append([name, split, f"{ratios[name]:.3f}", f"{count_parameters(model):,}", format_mean_std(scores[name])])
    table = markdown_table(["mixer", "C_l/C per block", "MLP ratio", "parameters", "test top-1 (%)"], rows)
    ramp, attention, constant = (mean_std(scores[n])[0] for n in names)
    headline = (
        f"ramp {ramp:.2f}% vs attention-only {attention:.2f}% ({ramp - attention:+.2f}) vs constant split "
        f"{constant:.2f}% ({ramp - constant:+.2f}), {seeds} seed(s), digits 32x32"
    )
    figure = plot_bars(
        out / "results.png",
        [n.split(" (")[0] for n in names],
        {"test top-1": [scores[n] for n in names]},
        ylabel="test top-1 (%)",
        title=f"tiny iFormer on digits 32x32, matched parameters ({seeds} seed(s), {epochs} epochs)",
    )
    results = {
        "scores": scores,
        "mlp_ratios": ratios,
        "epochs": epochs,
        "preset": preset,
        "seeds": seeds,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_results(
        out,
        title="iformer-repro: frequency ramp vs ablations",
        table=table,
        headline=headline,
        results=results,
        notes=f"Released sizes:\n\n{size_table()}",
        figure=figure,
    )
    return {**results, "headline": headline}


def size_table() -> str:
    """Parameters and MACs at 224 of the released sizes (meta tensors: nothing is allocated)."""
    from iformer.bench import count_flops

    rows = []
    for name in ("iformer_small", "iformer_base", "iformer_large"):
        with torch.device("meta"):
            model = InceptionTransformer(**MODEL_CONFIGS[name])
        macs, _ = count_flops(model, 224, backend="torch")
        rows.append([name, f"{count_parameters(model):,}", f"{macs / 1e9:.3f}"])
    return markdown_table(["model", "parameters", "GMACs at 224 (torch counter, attention included)"], rows)


def _blocks(model: InceptionTransformer):
    return [block for _, _, blocks in model.stages for block in blocks]
