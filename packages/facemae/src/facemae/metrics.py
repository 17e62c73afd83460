"""What FaceMAE is judged by: verification accuracy (utility), retrieval leak rates (privacy), image fidelity."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import UserError

__all__ = ["GALLERY_MODES", "fold_slices", "gaussian_window", "leak_rates", "psnr", "ssim", "verification_accuracy"]

#: ``all``: the gallery holds every original; ``exclude-source``: each probe's own source is left out, so an
#: identity leak must come from another photo of the person.
GALLERY_MODES = ("all", "exclude-source")

THRESHOLDS = np.arange(0, 4, 0.01)  # squared distances of unit vectors lie in [0, 4]
SIMILARITY_BLOCK = 1 << 26  # probe-gallery similarities computed at once (256 MB of float32)


def fold_slices(n: int, folds: int) -> list[slice]:
    """Contiguous folds, the first ``n % folds`` one longer (scikit-learn ``KFold(shuffle=False)``)."""
    sizes = np.full(folds, n // folds)
    sizes[: n % folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [slice(int(a), int(b)) for a, b in pairwise(bounds)]


def verification_accuracy(embeddings: torch.Tensor, issame: torch.Tensor, folds: int = 10) -> dict[str, float]:
    """k-fold verification accuracy of InsightFace ``eval/verification.py`` (``calculate_roc``).

    ``embeddings`` (2N, D): pair i is rows 2i and 2i+1 (sum each face's embedding with its flip's before
    calling, as InsightFace does). They are L2-normalised; a pair is called "same" when its squared
    distance is below the threshold. For each contiguous fold the threshold in 0.00..3.99 (step 0.01)
    most accurate on the other folds is applied to it. Returns the held-out accuracy's mean and
    (population) std over folds, and the mean chosen threshold.
    """
    pairs = issame.numel()
    if embeddings.shape[0] != 2 * pairs or pairs < folds:
        raise UserError(f"need 2N embeddings for N >= {folds} pairs, got {embeddings.shape[0]} for {pairs} pairs")
    unit = F.normalize(embeddings.detach().double().cpu(), dim=1).numpy()
    dist = ((unit[0::2] - unit[1::2]) ** 2).sum(1)
    same = issame.cpu().numpy().astype(bool)
    correct = (dist[None, :] < THRESHOLDS[:, None]) == same[None, :]  # (thresholds, pairs)
    accuracies, thresholds = [], []
    for fold in fold_slices(pairs, folds):
        train = np.ones(pairs, dtype=bool)
        train[fold] = False
        best = int(np.argmax(correct[:, train].mean(1)))
        accuracies.append(correct[best, fold].mean())
        thresholds.append(THRESHOLDS[best])
    return {
        "accuracy": float(np.mean(accuracies)),
        "std": float(np.std(accuracies)),
        "threshold": float(np.mean(thresholds)),
    }


def leak_rates(
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    probes: torch.Tensor,
    sources: torch.Tensor,
    topk: Sequence[int] = (1, 5),
    mode: str = "all",
) -> dict[str, float]:
    """How often retrieval finds a released face's source (FaceMAE's privacy leakage, by cosine similarity).

    ``gallery`` (N, D) embeds the originals, ``gallery_labels`` (N,) their identities; ``probes`` (P, D)
    embed the released images, ``sources`` (P,) each one's original. For each k: ``instance@k``, the share
    of probes whose source is among the k nearest originals (always over the whole gallery);
    ``identity@k``, the share with a top-k original of the same identity (``mode`` picks the gallery);
    their chance levels when the ranking is random; and ``mean_cosine`` between probe and source.
    """
    if mode not in GALLERY_MODES:
        raise UserError(f"gallery must be one of {', '.join(GALLERY_MODES)}, got {mode!r}")
    n = gallery.shape[0]
    delta = int(mode == "exclude-source")
    if not 1 <= max(topk) <= n - delta:
        raise UserError(f"top-k must lie in 1..{n - delta} for a gallery of {n} originals, got {list(topk)}")
    gallery = F.normalize(gallery.detach().float(), dim=1)
    probes = F.normalize(probes.detach().float(), dim=1)
    labels, sources = gallery_labels.long(), sources.long()
    kmax = max(topk)
    block = max(1, SIMILARITY_BLOCK // n)  # probes per block of similarities
    instance = {k: 0 for k in topk}
    identity = {k: 0 for k in topk}
    for start in range(0, probes.shape[0], block):
        rows = slice(start, start + block)
        sims = probes[rows] @ gallery.T
        own = sources[rows]
        ranked = sims.topk(kmax, dim=1).indices
        hit_source = ranked == own[:, None]
        if delta:
            sims[torch.arange(sims.shape[0]), own] = -math.inf
            ranked_others = sims.topk(kmax, dim=1).indices
        else:
            ranked_others = ranked
        hit_identity = labels[ranked_others] == labels[own][:, None]
        for k in topk:
            instance[k] += int(hit_source[:, :k].any(1).sum())
            identity[k] += int(hit_identity[:, :k].any(1).sum())
    total = probes.shape[0]
    sizes = Counter(torch.bincount(labels)[labels[sources]].tolist())  # originals of each probe's identity
    report = {"mean_cosine": float((probes * gallery[sources]).sum(1).mean())}
    for k in topk:
        report[f"instance@{k}"] = instance[k] / total
        report[f"identity@{k}"] = identity[k] / total
        report[f"instance_chance@{k}"] = min(k / n, 1.0)
        # k originals drawn at random from the n - delta candidates miss all n_y - delta of the identity
        misses = sum(math.comb(n - c, k) * times for c, times in sizes.items()) / math.comb(n - delta, k) / total
        report[f"identity_chance@{k}"] = 1.0 - misses
    return report


def psnr(images: torch.Tensor, references: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (B, C, H, W); ``data_range`` 2 for images in [-1, 1]."""
    mse = (images.float() - references.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    """A normalised ``size`` x ``size`` Gaussian kernel for a depthwise ``conv2d`` over ``channels``."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    gauss = torch.exp(-(coords**2) / (2 * sigma**2))
    gauss = gauss / gauss.sum()
    return (gauss[:, None] * gauss[None, :]).expand(channels, 1, size, size)


def ssim(images: torch.Tensor, references: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Structural similarity per image (Wang et al., IEEE TIP 2004): 11x11 Gaussian window of sigma 1.5,
    K1 = 0.01, K2 = 0.03, valid positions only, averaged over channels and positions."""
    channels = images.shape[1]
    if min(images.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {tuple(images.shape[-2:])}")
    window = gaussian_window(11, 1.5, channels).to(images.device)
    x, y = images.float(), references.float()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(1)
