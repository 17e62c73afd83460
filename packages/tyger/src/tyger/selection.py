"""Batch selection for pool-based active learning: Tyger's embedding-only rule and the baselines.

Every selector takes ``labelled`` and ``candidates`` (indices into the pool arrays), the ``budget`` and its own
keyword inputs, and returns ``budget`` distinct candidate indices in pick order. :func:`select` calls one by
name (:data:`SELECTORS`) with whatever inputs the loop has, passing each selector only the ones it declares.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rdkit.SimDivFilters import rdSimDivPickers

from shared.errors import UserError

__all__ = [
    "CHUNK",
    "CLASSIFICATION",
    "SELECTORS",
    "kcenter_greedy",
    "select",
    "select_badge",
    "select_bald",
    "select_coreset",
    "select_entropy",
    "select_learning_loss",
    "select_margin",
    "select_maxmin_ecfp",
    "select_random",
    "select_scored",
    "select_tyger",
    "typicality",
]

#: Rows per block of a distance computation: at most CHUNK x CHUNK distances exist at once.
CHUNK = 4096
CLASSIFICATION = ("binary", "multilabel", "multiclass")


def _check(labelled: Sequence[int], candidates: Sequence[int], budget: int) -> tuple[list[int], list[int]]:
    candidates = sorted(set(int(i) for i in candidates))
    labelled = sorted(set(int(i) for i in labelled))
    if budget < 1:
        raise UserError(f"the budget must be at least 1, got {budget}")
    if budget > len(candidates):
        raise UserError(f"the budget {budget} is larger than the {len(candidates)} unlabelled molecules: lower it")
    if set(labelled) & set(candidates):
        raise ValueError("labelled and candidate indices overlap")
    return labelled, candidates


def _min_distances(points: torch.Tensor, centres: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """min_c ||p - c|| for every row p, in blocks of at most chunk x chunk distances."""
    out = torch.full((points.shape[0],), float("inf"), dtype=points.dtype, device=points.device)
    for i in range(0, points.shape[0], chunk):
        block = points[i : i + chunk]
        for j in range(0, centres.shape[0], chunk):
            d = torch.cdist(block, centres[j : j + chunk]).min(1).values
            out[i : i + chunk] = torch.minimum(out[i : i + chunk], d)
    return out


def kcenter_greedy(
    embeddings: torch.Tensor,
    labelled: Sequence[int],
    candidates: Sequence[int],
    budget: int,
    weights: torch.Tensor | None = None,
    chunk: int = CHUNK,
) -> tuple[list[int], list[float]]:
    """Greedy k-center (Sener & Savarese, ICLR 2018), optionally weighted: b times pick argmax_u d_u w_u,
    then d_u <- min(d_u, ||z_u - z_pick||). ``weights`` are over the candidates (in ascending index order).

    d_u is the distance to the nearest labelled point; with none labelled the first pick is the candidate
    farthest from the candidates' mean. Ties go to the lowest index. Memory O(|P| + chunk^2), time
    O(b |P| d). Returns the picks and their scores d_u w_u at pick time.
    """
    labelled, candidates = _check(labelled, candidates, budget)
    z = embeddings.detach().float()
    cand = z[candidates]
    w = torch.ones(len(candidates)) if weights is None else weights.detach().float().cpu()
    dist = (_min_distances(cand, z[labelled], chunk) if labelled else (cand - cand.mean(0)).norm(dim=1)).cpu()
    picks, scores = [], []
    taken = torch.zeros(len(candidates), dtype=torch.bool)
    for _ in range(budget):
        score = (dist * w).masked_fill(taken, float("-inf"))
        best = int(torch.argmax(score))  # the first maximum: the lowest index among ties
        picks.append(candidates[best])
        scores.append(float(score[best]))
        taken[best] = True
        new = (cand - cand[best]).norm(dim=1).cpu()
        dist = torch.minimum(dist, new) if labelled or len(picks) > 1 else new
    return picks, scores


def typicality(
    embeddings: torch.Tensor, points: Sequence[int], reference: Sequence[int], k: int = 20, chunk: int = CHUNK
) -> torch.Tensor:
    """TypiClust's typicality (Hacohen et al., ICML 2022) of ``embeddings[points]``: 1 / mean distance to the k
    nearest rows of ``embeddings[reference]``, a point never counting as its own neighbour; in blocks of at most
    ``chunk`` points against the reference."""
    points_t, reference_t = torch.as_tensor(list(points)), torch.as_tensor(list(reference))
    k = max(1, min(k, len(reference_t) - 1))
    ref = embeddings[reference_t]
    out = torch.empty(len(points_t), dtype=embeddings.dtype, device=embeddings.device)
    for i in range(0, len(points_t), chunk):
        block = points_t[i : i + chunk]
        d = torch.cdist(embeddings[block], ref)
        d = d.masked_fill(block[:, None].to(d.device) == reference_t[None].to(d.device), float("inf"))
        out[i : i + chunk] = 1.0 / d.topk(k, dim=1, largest=False).values.mean(1).clamp_min(1e-12)
    return out


def select_tyger(
    labelled: Sequence[int],
    candidates: Sequence[int],
    budget: int,
    *,
    embeddings: torch.Tensor,
    predicted_loss: torch.Tensor | None = None,
    beta: float = 1.0,
    eps: float = 0.05,
    gamma: float = 0.0,
    typicality_k: int = 20,
    typicality_reference: int = CHUNK,
    seed: int = 0,
    return_scores: bool = False,
) -> list[int] | tuple[list[int], list[float]]:
    """Tyger: k-center distance on the L2-normalised querying-module embeddings, times a_u^beta with a_u the
    predicted task-learner loss u(z_u) min-max normalised over the candidates and clipped to [eps, 1].
    Only embeddings and u(z) are used, never class probabilities, so every task type runs the same code.
    beta = 0 (or no ``predicted_loss``) is plain k-center on the embeddings. ``gamma`` > 0 (an option, not
    the spec's rule) also multiplies by (t_u / max t)^gamma, t_u the typicality of z_u among the pool (at most
    ``typicality_reference`` pool molecules, a seeded sample, as the reference), which steers k-center away
    from outliers. ``return_scores`` also returns each pick's score at pick time."""
    z = F.normalize(embeddings.detach().float(), dim=1)
    cand = sorted(set(int(i) for i in candidates))
    weights = torch.ones(len(cand))
    if predicted_loss is not None and beta != 0:
        loss = predicted_loss.detach().float().cpu()[cand]
        span = loss.max() - loss.min()
        a = (loss - loss.min()) / span if span > 0 else torch.ones_like(loss)
        weights = weights * a.clamp(eps, 1.0) ** beta
    if gamma != 0:
        reference = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))[:typicality_reference]
        t = typicality(z, cand, reference.tolist(), typicality_k).cpu()
        weights = weights * (t / t.max()) ** gamma
    picks, scores = kcenter_greedy(z, labelled, candidates, budget, weights)
    return (picks, scores) if return_scores else picks


def select_coreset(
    labelled: Sequence[int],
    candidates: Sequence[int],
    budget: int,
    *,
    features: torch.Tensor,
    return_scores: bool = False,
) -> list[int] | tuple[list[int], list[float]]:
    """Core-set: greedy k-center on the task learner's pooled features (Sener & Savarese, ICLR 2018);
    ``return_scores`` also returns each pick's distance to its nearest centre at pick time."""
    picks, scores = kcenter_greedy(features, labelled, candidates, budget)
    return (picks, scores) if return_scores else picks


def select_random(labelled: Sequence[int], candidates: Sequence[int], budget: int, *, seed: int = 0) -> list[int]:
    """Uniform without replacement, seeded."""
    _, candidates = _check(labelled, candidates, budget)
    return [int(i) for i in np.random.default_rng(seed).choice(candidates, size=budget, replace=False)]


def _top(candidates: list[int], scores: np.ndarray, budget: int) -> list[int]:
    """The ``budget`` highest scores, ties to the lowest index."""
    order = np.argsort(-scores, kind="stable")
    return [candidates[i] for i in order[:budget]]


def _needs_classification(name: str, task_type: str) -> None:
    if task_type not in CLASSIFICATION:
        raise UserError(
            f"the {name!r} selector needs class probabilities and supports only {', '.join(CLASSIFICATION)} tasks, "
            f"not {task_type!r}: use tyger, random, coreset, bald, learning-loss or maxmin-ecfp"
        )


def _bernoulli_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))  # 0 log 0 = 0


def _categorical_entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.xlogy(p, p).sum(-1)


def select_entropy(
    labelled: Sequence[int], candidates: Sequence[int], budget: int, *, probs: torch.Tensor, task_type: str
) -> list[int]:
    """Top predictive entropy: binary -p log p - (1-p) log(1-p), multilabel the mean over labels,
    multiclass -sum_c p_c log p_c. ``probs`` (N, K) are probabilities (sigmoid or softmax)."""
    _needs_classification("entropy", task_type)
    _, cand = _check(labelled, candidates, budget)
    p = probs.detach().float().cpu()[cand]
    h = _categorical_entropy(p) if task_type == "multiclass" else _bernoulli_entropy(p).mean(1)
    return _top(cand, h.numpy(), budget)


def select_margin(
    labelled: Sequence[int], candidates: Sequence[int], budget: int, *, probs: torch.Tensor, task_type: str
) -> list[int]:
    """Smallest margin: top-1 minus top-2 probability (multiclass), |2p - 1| (binary; mean over labels)."""
    _needs_classification("margin", task_type)
    _, cand = _check(labelled, candidates, budget)
    p = probs.detach().float().cpu()[cand]
    if task_type == "multiclass":
        top2 = p.topk(2, dim=1).values
        margin = top2[:, 0] - top2[:, 1]
    else:
        margin = (2 * p - 1).abs().mean(1)
    return _top(cand, -margin.numpy(), budget)


def select_bald(
    labelled: Sequence[int], candidates: Sequence[int], budget: int, *, mc_outputs: torch.Tensor, task_type: str
) -> list[int]:
    """BALD (Gal et al., ICML 2017) on MC-dropout samples ``mc_outputs`` (T, N, K): I = H(mean p) - mean H(p),
    summed over labels (probabilities for classification; softmax over K for multiclass). For regression the
    samples are predicted values and the score is the mean predictive variance over targets."""
    _, cand = _check(labelled, candidates, budget)
    s = mc_outputs.detach().float().cpu()[:, cand]
    if task_type == "regression":
        score = s.var(0, unbiased=False).mean(1)
    elif task_type == "multiclass":
        score = _categorical_entropy(s.mean(0)) - _categorical_entropy(s).mean(0)
    elif task_type in CLASSIFICATION:
        score = (_bernoulli_entropy(s.mean(0)) - _bernoulli_entropy(s).mean(0)).sum(1)
    else:
        raise UserError(f"unknown task type {task_type!r}")
    return _top(cand, score.numpy(), budget)


def select_learning_loss(
    labelled: Sequence[int], candidates: Sequence[int], budget: int, *, predicted_loss: torch.Tensor
) -> list[int]:
    """Learning loss (Yoo & Kweon, CVPR 2019): the candidates with the highest predicted loss."""
    _, cand = _check(labelled, candidates, budget)
    return _top(cand, predicted_loss.detach().float().cpu()[cand].numpy(), budget)


def select_maxmin_ecfp(
    labelled: Sequence[int], candidates: Sequence[int], budget: int, *, fingerprints: Sequence, seed: int = 0
) -> list[int]:
    """RDKit's MaxMinPicker on ECFP4 Tanimoto distance, seeded with the labelled molecules (chemistry-only
    diversity). ``fingerprints`` are RDKit bit vectors for the whole pool."""
    labelled, cand = _check(labelled, candidates, budget)
    order = labelled + cand
    fps = [fingerprints[i] for i in order]
    picker = rdSimDivPickers.MaxMinPicker()
    picks = picker.LazyBitVectorPick(fps, len(fps), len(labelled) + budget, list(range(len(labelled))), seed=seed)
    chosen = [order[i] for i in list(picks)[len(labelled) :]]
    if len(chosen) != budget or set(chosen) & set(labelled):
        raise RuntimeError("MaxMinPicker returned an unexpected selection")
    return chosen


def select_badge(
    labelled: Sequence[int],
    candidates: Sequence[int],
    budget: int,
    *,
    probs: torch.Tensor,
    features: torch.Tensor,
    task_type: str,
    seed: int = 0,
) -> list[int]:
    """BADGE (Ash et al., ICLR 2020): k-means++ seeding on the last-layer gradient embeddings g = a (x) h for the
    hard pseudo-label, a = p - onehot(argmax p) (multiclass) or p - [p > 0.5] per label, h the penultimate
    features. Distances use ||a (x) h|| identities, so the (N, K * H) embeddings are never built. The first
    pick is the largest gradient norm, the rest are sampled with probability proportional to D^2 (seeded)."""
    _needs_classification("badge", task_type)
    _, cand = _check(labelled, candidates, budget)
    p = probs.detach().double().cpu()[cand]
    h = features.detach().double().cpu()[cand]
    hard = F.one_hot(p.argmax(1), p.shape[1]).double() if task_type == "multiclass" else (p > 0.5).double()
    a = p - hard
    sq = (a * a).sum(1) * (h * h).sum(1)  # ||a (x) h||^2 = ||a||^2 ||h||^2
    rng = np.random.default_rng(seed)
    first = int(torch.argmax(sq))
    picks, d2 = [first], torch.full_like(sq, float("inf"))
    while len(picks) < budget:
        c = picks[-1]
        # ||a_u (x) h_u - a_c (x) h_c||^2 = ||g_u||^2 + ||g_c||^2 - 2 (a_u . a_c)(h_u . h_c)
        d2 = torch.minimum(d2, (sq + sq[c] - 2 * (a @ a[c]) * (h @ h[c])).clamp_min(0))
        weights = d2.numpy().copy()
        weights[picks] = 0.0
        if weights.sum() <= 0:  # every remaining point coincides with a centre: uniform over the rest
            weights = np.ones(len(cand))
            weights[picks] = 0.0
        picks.append(int(rng.choice(len(cand), p=weights / weights.sum())))
    return [cand[i] for i in picks]


SELECTORS: dict[str, Callable[..., list[int]]] = {
    "tyger": select_tyger,
    "random": select_random,
    "coreset": select_coreset,
    "entropy": select_entropy,
    "badge": select_badge,
    "margin": select_margin,
    "bald": select_bald,
    "learning-loss": select_learning_loss,
    "maxmin-ecfp": select_maxmin_ecfp,
}


def select(name: str, labelled: Sequence[int], candidates: Sequence[int], budget: int, **inputs) -> list[int]:
    """Run the selector ``name`` with the inputs it declares, taken from ``inputs`` (the rest are ignored)."""
    return _call(name, labelled, candidates, budget, inputs)


def select_scored(
    name: str, labelled: Sequence[int], candidates: Sequence[int], budget: int, **inputs
) -> tuple[list[int], list[float | None]]:
    """:func:`select` with each pick's score where the rule has one (the k-center rules: tyger, coreset), else None."""
    out = _call(name, labelled, candidates, budget, inputs | {"return_scores": True})
    return out if isinstance(out, tuple) else (out, [None] * len(out))


def _call(name: str, labelled: Sequence[int], candidates: Sequence[int], budget: int, inputs: dict):
    if name not in SELECTORS:
        raise UserError(f"unknown selector {name!r}: choose one of {', '.join(SELECTORS)}")
    fn = SELECTORS[name]
    params = inspect.signature(fn).parameters
    wanted = {k: v for k, v in inputs.items() if k in params and params[k].kind is inspect.Parameter.KEYWORD_ONLY}
    missing = [
        k
        for k, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty and k not in wanted
    ]
    if missing:
        raise ValueError(f"selector {name!r} needs {', '.join(missing)}")
    return fn(labelled, candidates, budget, **wanted)
