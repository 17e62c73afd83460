"""UPEM, the Unsupervised Performance Evaluation Metric, and architecture selection under a budget (spec §2.6).

The formula is [UNVERIFIED]; the default ``ensemble_kl`` ranks an architecture by its distance to a fixed
bank ensemble p̄_bank (a better predictor than any member): UPEM(a) = mean_x KL(p̄_bank(x) ‖ π_a(x)).
Every score here is oriented so that *lower is better*:

- ``ensemble_kl``: mean KL(p̄_bank ‖ π_a);
- ``ensemble_agreement``: 1 − fraction of images with argmax π_a = argmax p̄_bank;
- ``entropy``: mean H(π_a).

The spec's fourth alternative, ``source_val`` (error on a held-out labelled source split), is not offered:
training reads every source image, so no held-out split exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shared.errors import UserError
from slimda.models import Arch, HeadOutputs, knowledge
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

    Rejection sampling on the grid (spec §2.6 step 1); the whole space is enumerated when it is smaller.
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


def select(scored: Sequence[Scored], budget_macs: float) -> tuple[Scored, Scored | None]:
    """The UPEM choice (lowest score) within the budget, and the oracle-best by accuracy when labels exist.

    Ties in UPEM go to the larger architecture.
    """
    within = [s for s in scored if s.macs <= budget_macs]
    if not within:
        raise UserError("no scored architecture fits the budget")
    chosen = min(within, key=lambda s: (s.upem, -s.macs))
    oracle = None if within[0].accuracy is None else max(within, key=lambda s: (s.accuracy, -s.macs))
    return chosen, oracle
