"""``iformer-repro``: does the frequency ramp help, at CPU scale?

The paper's claim (Inception mixer with a high-to-low frequency ramp beats attention-only mixing at a
similar size) is an ImageNet claim. Here, on the embedded digits at 32x32, the ``tiny_test`` iFormer
(the ramp: the attention share C_l/C grows with depth) is trained against two ablations of the same
macro-architecture, each at a matched parameter count (the MLP ratio is adjusted to match):

- attention only: every channel goes to the low-frequency (attention) branch, C_h = 0;
- constant split: half the channels to each branch in every block, no ramp.

Same recipe, data and seeds for all; the reported score is the test accuracy after the last epoch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from iformer.data import digits_loaders
from iformer.engine import build_optimizer, evaluate, learning_rate, set_learning_rate, train_one_epoch
from iformer.models import MODEL_CONFIGS, InceptionTransformer, create_model
from shared import cli
from shared.data import set_epoch
from shared.device import resolve_device, seed_everything
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import format_mean_std, markdown_table, mean_std, write_results

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
RECIPE = {"lr": 2e-3, "min_lr": 1e-5, "warmup_lr": 1e-6, "warmup_epochs": 0, "weight_decay": 0.05}


def build_variant(attention_heads: Sequence[int], mlp_ratio: float = 4.0) -> InceptionTransformer:
    return InceptionTransformer(
        **{**TINY, "attention_heads": attention_heads, "mlp_ratio": mlp_ratio, "num_classes": 10, "img_size": 32}
    )


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_mlp_ratio(attention_heads: Sequence[int], target: int) -> float:
    """The MLP ratio (on a 1/64 grid in [2, 6]) whose parameter count is closest to ``target``."""
    ratios = [2 + i / 64 for i in range(257)]

    def size(ratio: float) -> int:
        with torch.device("meta"):  # counting only: no weights are allocated
            return _count(build_variant(attention_heads, ratio))

    low, high = 0, len(ratios) - 1  # the count grows with the ratio: bisect for the first one >= target
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if size(ratios[middle]) < target else (low, middle)
    candidates = ratios[max(low - 1, 0) : low + 1]
    return min(candidates, key=lambda r: abs(size(r) - target))


def train_variant(
    attention_heads: Sequence[int], mlp_ratio: float, seed: int, epochs: int, loaders, device: torch.device
) -> float:
    """Train one model with the demo recipe; returns the test top-1 (%) after the last epoch."""
    train_loader, eval_loader, _, prepare = loaders
    seed_everything(seed)
    model = build_variant(attention_heads, mlp_ratio).to(device)
    optimizer = build_optimizer(model, RECIPE["lr"], RECIPE["weight_decay"])
    schedule = {k: RECIPE[k] for k in ("lr", "min_lr", "warmup_lr", "warmup_epochs")}
    for epoch in range(epochs):
        set_epoch(train_loader, epoch)
        set_learning_rate(optimizer, learning_rate(epoch, epochs=epochs, **schedule))
        train_one_epoch(model, train_loader, optimizer, device, prepare=prepare, desc=f"epoch {epoch + 1}")
    return evaluate(model, eval_loader, device, prepare=prepare)["top1"]


def _size_table() -> str:
    from iformer.bench import count_flops

    rows = []
    for name in ("iformer_small", "iformer_base", "iformer_large"):
        with torch.device("meta"):  # shapes only: no weights are allocated
            model = create_model(name)
        macs, _ = count_flops(model, 224, backend="torch")
        rows.append([name, f"{_count(model):,}", f"{macs / 1e9:.3f}"])
    return markdown_table(["model", "parameters", "GMACs at 224 (torch counter, attention included)"], rows)


def _plot(out: Path, names: list[str], scores: dict[str, list[float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    means = [mean_std(scores[n])[0] for n in names]
    stds = [mean_std(scores[n])[1] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(range(len(names)), means, yerr=stds, capsize=4, color=["tab:blue", "tab:gray", "tab:orange"])
    ax.set_xticks(range(len(names)), [n.split(" (")[0] for n in names])
    ax.set_ylim(min(means) - 3 * max([*stds, 0.5]), 100)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("tiny iFormer on digits 32x32, matched parameters")
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    plt.close(fig)


def repro(argv: Sequence[str] | None = None) -> dict:
    parser = cli.ArgumentParser(
        prog="iformer-repro",
        description="The frequency ramp vs attention-only and constant-split mixers at matched parameter count, "
        "tiny iFormer on the embedded digits (32x32), several seeds.",
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per run")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/iformer-repro/<time>)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        raise UserError("--seeds and --epochs must be >= 1")
    device = resolve_device(args.device)
    out = cli.run_dir(args.out, "iformer-repro", resume=False)
    log = get_logger()
    loaders = digits_loaders(32, args.batch_size, seed=0, device=device)
    target = _count(build_variant(VARIANTS["iFormer (frequency ramp)"]))
    names = list(VARIANTS)
    ratios = {name: 4.0 if i == 0 else matched_mlp_ratio(VARIANTS[name], target) for i, name in enumerate(names)}
    scores: dict[str, list[float]] = {name: [] for name in names}
    started = time.monotonic()
    for seed in range(args.seeds):
        for name in names:
            score = train_variant(VARIANTS[name], ratios[name], seed, args.epochs, loaders, device)
            scores[name].append(score)
            log.info(f"seed {seed} {name}: test top-1 {score:.2f}%")
    rows = []
    for name in names:
        model = build_variant(VARIANTS[name], ratios[name])
        split = " ".join(f"{b.attn.low_dim / (b.attn.low_dim + b.attn.high_dim):.2f}" for b in _blocks(model))
        rows.append([name, split, f"{ratios[name]:.3f}", f"{_count(model):,}", format_mean_std(scores[name])])
    table = markdown_table(["mixer", "C_l/C per block", "MLP ratio", "parameters", "test top-1 (%)"], rows)
    ramp, attention, constant = (mean_std(scores[n])[0] for n in names)
    headline = (
        f"ramp {ramp:.2f}% vs attention-only {attention:.2f}% ({ramp - attention:+.2f}) vs constant split "
        f"{constant:.2f}% ({ramp - constant:+.2f}), {args.seeds} seed(s), digits 32x32"
    )
    sizes = _size_table()
    print(f"{table}\n\n{headline}\n\n{sizes}", flush=True)
    results = {
        "scores": scores,
        "mlp_ratios": ratios,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_results(
        out,
        title="iformer-repro: frequency ramp vs ablations",
        table=table,
        headline=headline,
        results=results,
        notes=f"Released sizes:\n\n{sizes}",
    )
    _plot(out, names, scores)
    return results


def _blocks(model: InceptionTransformer):
    return [block for _, _, blocks in model.stages for block in blocks]
