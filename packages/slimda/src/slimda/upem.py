"""UPEM, the Unsupervised Performance Evaluation Metric, and architecture selection under a budget.

Slimmable Domain Adaptation (CVPR 2022) selects the architecture to deploy per budget with UPEM, without target
labels; its formula is unverified against the paper. The default ``ensemble_kl`` ranks an architecture by its
distance to a fixed bank ensemble p̄_bank (a better predictor than any member):
UPEM(a) = mean_x KL(p̄_bank(x) ‖ π_a(x)). Every score here is oriented so that *lower is better*:

- ``ensemble_kl``: mean KL(p̄_bank ‖ π_a);
- ``ensemble_agreement``: 1 − fraction of images with argmax π_a = argmax p̄_bank;
- ``entropy``: mean H(π_a).

A fourth alternative, ``source_val`` (error on a held-out labelled source split), is not offered: training
reads every source image, so no held-out split exists.

:func:`run_selection` scores the candidates of every budget on a trained bank and picks per budget
(:func:`select_by_upem`); :func:`select_file` does it for a saved bank (what ``slimda-select`` computes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shared.errors import UserError
from shared.logging import Progress
from shared.report import markdown_table
from slimda.config import TrainConfig
from slimda.engine import Evaluator, bank_widths, domains_of_run, load_bank, make_evaluator
from slimda.flops import count_macs, format_budget
from slimda.models import Arch, HeadOutputs, ModelBank, knowledge
from slimda.sampling import ArchSampler

KINDS = ("ensemble_kl", "ensemble_agreement", "entropy")


def bank_ensemble(predictions: Sequence[torch.Tensor]) -> torch.Tensor:
    """p̄_bank(x) = (1/M) Σ_m π_{a_m}(x) over the M reference architectures (order-invariant)."""
    return torch.stack(list(predictions)).mean(dim=0)


def upem_score(kind: str, prediction: torch.Tensor, reference: torch.Tensor | None = None) -> float:
    """The label-free score of one architecture from its predictions π_a (N×K); lower is better."""
    if kind == "ensemble_kl":
        kl = torch.special.xlogy(reference, reference) - reference * prediction.clamp_min(1e-12).log()
        return float(kl.sum(dim=1).mean())
    if kind == "ensemble_agreement":
        return 1.0 - float((prediction.argmax(dim=1) == reference.argmax(dim=1)).float().mean())
    if kind == "entropy":
        return float(-torch.special.xlogy(prediction, prediction).sum(dim=1).mean())
    raise UserError(f"unknown UPEM kind {kind!r}: choose from {KINDS}")


def candidate_architectures(
    sampler: ArchSampler,
    macs: Callable[[Arch], int],
    budget_macs: float,
    uniform_widths: Sequence[float],
    samples: int,
    seed: int = 0,
) -> list[Arch]:
    """Uniform widths within the budget, plus up to ``samples`` distinct random stage-wise ones within it.

    Rejection sampling on the grid; the whole space is enumerated when it is smaller.
    """
    within = [a for a in (Arch.uniform(w, sampler.groups) for w in uniform_widths) if macs(a) <= budget_macs]
    generator = torch.Generator().manual_seed(seed)
    random: list[Arch] = []
    tries = 0
    while len(random) < samples and tries < 50 * samples:
        tries += 1
        arch = sampler.random(generator)
        if arch not in random and arch not in within and macs(arch) <= budget_macs:
            random.append(arch)
    return within + random


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b (tie-corrected) rank correlation."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    dx, dy = dx[upper], dy[upper]
    denominator = np.sqrt(float((dx != 0).sum()) * float((dy != 0).sum()))
    return float((dx * dy).sum() / denominator) if denominator else float("nan")


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: Pearson correlation of the average ranks."""

    def ranks(values: np.ndarray) -> np.ndarray:
        order = values.argsort(kind="stable")
        rank = np.empty(len(values))
        rank[order] = np.arange(len(values))
        for value in np.unique(values):  # average the ranks of ties
            tied = values == value
            rank[tied] = rank[tied].mean()
        return rank

    rx, ry = ranks(np.asarray(x, dtype=float)), ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass
class Scored:
    """One candidate architecture: its MACs, UPEM score and (when labels exist) accuracy of the chosen head."""

    arch: Arch
    macs: int
    upem: float
    accuracy: float | None = None


def score_architectures(
    archs: Sequence[Arch],
    outputs: Callable[[Arch], HeadOutputs],
    macs: Callable[[Arch], int],
    kind: str,
    reference: torch.Tensor | None,
    knowledge_head: str = "folded",
    accuracy: Callable[[HeadOutputs], float] | None = None,
    progress: Callable[[Sequence[Arch]], Sequence[Arch]] = lambda items: items,
) -> list[Scored]:
    """UPEM (and accuracy, when labels exist) of every candidate; ``outputs(arch)`` BN-recalibrates first."""
    if kind not in KINDS:
        raise UserError(f"unknown UPEM kind {kind!r}: choose from {KINDS}")
    scored = []
    for arch in progress(archs):
        result = outputs(arch)
        score = upem_score(kind, knowledge(result, knowledge_head), reference)
        scored.append(Scored(arch, macs(arch), score, None if accuracy is None else accuracy(result)))
    return scored


def select_by_upem(scored: Sequence[Scored], budget_macs: float) -> tuple[Scored, Scored | None]:
    """The UPEM choice (lowest score) within the budget, and the oracle-best by accuracy when labels exist.

    Ties in UPEM go to the larger architecture.
    """
    within = [s for s in scored if s.macs <= budget_macs]
    if not within:
        raise UserError("no scored architecture fits the budget")
    chosen = min(within, key=lambda s: (s.upem, -s.macs))
    oracle = None if within[0].accuracy is None else max(within, key=lambda s: (s.accuracy, -s.macs))
    return chosen, oracle


def check_budgets(bank: ModelBank, config: TrainConfig, budgets: Sequence[float]) -> None:
    """A budget below the smallest architecture's MACs is refused, naming that architecture."""
    full = count_macs(bank, bank.full_arch(), config.crop)
    smallest = Arch.uniform(min(config.grid), bank.num_groups)
    need = count_macs(bank, smallest, config.crop)
    for budget in budgets:
        if budget * full < need:
            raise UserError(
                f"no architecture meets budget {budget:.4g} ({budget * full / 1e6:.2f} MMACs): the smallest, "
                f"{smallest}, needs {need / 1e6:.2f} MMACs = 1/{full / need:.1f} of the full model"
            )


def run_selection(
    bank: ModelBank,
    config: TrainConfig,
    evaluator: Evaluator,
    budgets: Sequence[float],
    kind: str,
    samples: int,
    reference_archs: int,
    seed: int,
    progress: bool = False,
) -> dict:
    """Score candidates of every budget once (UPEM, accuracy) and pick per budget; rank correlations over all.

    The reference ensemble p̄_bank is the largest architecture and ``reference_archs`` - 1 random distinct ones.
    """
    sampler = ArchSampler(bank.num_groups, config.grid, 2, "stagewise", True, seed)

    def macs(arch: Arch) -> int:
        return count_macs(bank, arch, config.crop)

    full = macs(bank.full_arch())
    generator = torch.Generator().manual_seed(seed + 1)
    references = [bank.full_arch()]
    while len(references) < min(reference_archs, sampler.space_size()):
        arch = sampler.random(generator)
        if arch not in references:
            references.append(arch)
    cache: dict[Arch, HeadOutputs] = {}

    def outputs(arch: Arch) -> HeadOutputs:
        if arch not in cache:
            cache[arch] = evaluator.outputs(arch)
        return cache[arch]

    reference = None
    if kind in ("ensemble_kl", "ensemble_agreement"):
        reference = bank_ensemble([knowledge(outputs(a), config.seed_source_head) for a in references])
    candidates: list[Arch] = []
    for budget in budgets:
        for arch in candidate_architectures(sampler, macs, budget * full, bank_widths(config), samples, seed):
            if arch not in candidates:
                candidates.append(arch)
    wrap = (lambda items: Progress(items, desc="slimda-select")) if progress else (lambda items: items)
    has_labels = evaluator.labels is not None
    scored = score_architectures(
        candidates,
        outputs,
        macs,
        kind,
        reference,
        config.seed_source_head,
        accuracy=(lambda o: evaluator.accuracy(o)[config.head]) if has_labels else None,
        progress=wrap,
    )
    rows = []
    for budget in budgets:
        chosen, oracle = select_by_upem(scored, budget * full)
        row = {
            "budget": budget,
            "arch": str(chosen.arch),
            "macs": chosen.macs,
            "macs_fraction": chosen.macs / full,
            "upem": chosen.upem,
            "candidates": sum(s.macs <= budget * full for s in scored),
        }
        if oracle is not None:
            row |= {
                "accuracy": chosen.accuracy,
                "oracle_arch": str(oracle.arch),
                "oracle_accuracy": oracle.accuracy,
                "gap": oracle.accuracy - chosen.accuracy,
            }
        rows.append(row)
    results = {
        "upem": kind,
        "head": config.head,
        "reference_archs": [str(a) for a in references],
        "selection": rows,
        "candidates": [{"arch": str(s.arch), "macs": s.macs, "upem": s.upem, "accuracy": s.accuracy} for s in scored],
    }
    if has_labels:
        upem, acc = [-s.upem for s in scored], [s.accuracy for s in scored]
        results |= {
            "kendall_tau": kendall_tau(upem, acc),
            "spearman_rho": spearman_rho(upem, acc),
            "num_candidates": len(scored),
        }
    return results


def select_file(
    weights: str | os.PathLike,
    device: torch.device,
    *,
    budgets: Sequence[float],
    kind: str = "ensemble_kl",
    samples: int = 500,
    reference_archs: int = 16,
    max_images: int | None = 2000,
    seed: int = 0,
    data: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict:
    """:func:`run_selection` on the bank saved in ``weights`` (``final.pt``), on its run's target images."""
    bank, config, meta = load_bank(weights)
    check_budgets(bank, config, budgets)
    source, target = domains_of_run(config, meta, data)
    evaluator = make_evaluator(bank.to(device), config, source, target, device, max_images)
    results = run_selection(bank, config, evaluator, budgets, kind, samples, reference_archs, seed, progress)
    return {**results, "weights": str(weights)}


def selection_table(results: dict) -> str:
    """The per-budget choice of :func:`run_selection` as a markdown table (with accuracy where labels exist)."""
    headers = ["budget", "UPEM choice", "MACs fraction", "UPEM"]
    labelled = "kendall_tau" in results
    if labelled:
        headers += ["accuracy", "oracle-best", "oracle accuracy", "gap"]
    rows = []
    for r in results["selection"]:
        row = [format_budget(r["budget"]), r["arch"], f"{r['macs_fraction']:.4f}", f"{r['upem']:.4f}"]
        if labelled:
            row += [f"{r['accuracy']:.2f}", r["oracle_arch"], f"{r['oracle_accuracy']:.2f}", f"{r['gap']:.2f}"]
        rows.append(row)
    text = markdown_table(headers, rows)
    if labelled:
        text += (
            f"\n\nUPEM ({results['upem']}) vs target accuracy over {results['num_candidates']} architectures: "
            f"Kendall τ {results['kendall_tau']:.3f}, Spearman ρ {results['spearman_rho']:.3f}"
        )
    return text
