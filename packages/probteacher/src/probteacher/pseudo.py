"""Teacher pseudo-labels for the student's unsupervised branch.

Probabilistic Teacher is threshold-free: every detection the teacher keeps after its inference (score = p_c *
(1 - mean sigmoid(s_c)) above the 0.05 candidate threshold, class-wise NMS, top 100) becomes a soft target that
carries its proposal's full logit vector and its class's raw variances. ``hard_threshold`` gives the
conventional self-training ablation instead (Unbiased Teacher's rule: class probability >= threshold, hard
labels, no uncertainty). The threshold reads the class probability, not the rescored score: early in training
the variances are large (sigmoid(s) near 0.5), so rescored scores stay below 0.7 and no box would ever pass.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["teacher_pseudo_labels"]


@torch.no_grad()
def teacher_pseudo_labels(
    teacher: nn.Module, images: list[torch.Tensor], *, hard_threshold: float | None = None, min_size: float = 1.0
) -> list[dict[str, torch.Tensor]]:
    """Run ``teacher`` in mode "teacher" on ``images`` (the weak views) and return one dict per image.

    Soft (default): {"boxes" (n, 4), "labels" (n,) = argmax of the logits (0 = background allowed),
    "soft_logits" (n, K+1), "sigma_raw" (n, 4)}. With ``hard_threshold``: {"boxes", "labels"} of the detections
    whose class probability softmax(logits)[label] >= threshold (labels >= 1), a ground-truth-style target.
    Boxes narrower or lower than ``min_size`` pixels are dropped (degenerate boxes make the box encoding
    infinite).
    """
    detections = teacher(images, mode="teacher")
    pseudo = []
    for det in detections:
        boxes = det["boxes"]
        keep = ((boxes[:, 2:] - boxes[:, :2]) >= min_size).all(dim=1)
        if hard_threshold is not None:
            probability = det["logits"].softmax(dim=1).gather(1, det["labels"][:, None])[:, 0]
            keep &= probability >= hard_threshold
            pseudo.append({"boxes": boxes[keep], "labels": det["labels"][keep]})
            continue
        logits = det["logits"][keep]
        pseudo.append(
            {
                "boxes": boxes[keep],
                "labels": logits.argmax(dim=1),
                "soft_logits": logits,
                "sigma_raw": det["sigma_raw"][keep],
            }
        )
    return pseudo
