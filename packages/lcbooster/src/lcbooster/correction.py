"""LC-Booster's reliable label correction: one confident hard relabelling from both networks.

"Reliable Label Correction is a Good Booster When Learning with Extremely Noisy Labels" (Wang et al., 2022),
as its official code's ``relabel`` (``train_ww_ws.py``) performs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CorrectionResult:
    """The corrected label vector and what the pass did (accuracies need the ground truth, else None)."""

    targets: torch.Tensor
    overwritten: torch.Tensor  # bool (N,): confidence >= τ (label set to the prediction, maybe unchanged)
    changed: torch.Tensor  # bool (N,): label actually different afterwards
    relabel_accuracy: float | None  # accuracy of the overwritten labels against the truth
    label_accuracy_before: float | None
    label_accuracy_after: float | None
    correct_per_class_before: list[int] | None = None  # correct labels of each true class
    correct_per_class_after: list[int] | None = None

    @property
    def count(self) -> int:
        return int(self.overwritten.sum())

    def summary(self) -> dict:
        return {
            "relabel_overwritten": self.count,
            "relabel_changed": int(self.changed.sum()),
            "relabel_accuracy": self.relabel_accuracy,
            "label_accuracy_before": self.label_accuracy_before,
            "label_accuracy_after": self.label_accuracy_after,
            "correct_per_class_before": self.correct_per_class_before,
            "correct_per_class_after": self.correct_per_class_after,
        }


def reliable_label_correction(
    mean_logits: torch.Tensor,
    targets: torch.Tensor,
    threshold: float,
    indices: torch.Tensor | None = None,
    clean: torch.Tensor | None = None,
) -> CorrectionResult:
    """cur_targets[i] <- argmax p_i wherever max p_i >= τ, with p = softmax of the two networks' mean logits.

    ``indices`` restricts the pass (``retype='unlabel'``); by default every sample may be corrected. Hard
    overwrite: no soft labels, no reversion.
    """
    probs = torch.softmax(mean_logits.float(), dim=1)
    confidence, prediction = probs.max(dim=1)
    overwritten = confidence >= threshold
    if indices is not None:
        scope = torch.zeros_like(overwritten)
        scope[indices] = True
        overwritten &= scope
    corrected = torch.where(overwritten, prediction, targets)
    accuracy = None if clean is None else _accuracy(corrected[overwritten], clean[overwritten])
    return CorrectionResult(
        targets=corrected,
        overwritten=overwritten,
        changed=corrected != targets,
        relabel_accuracy=accuracy,
        label_accuracy_before=None if clean is None else _accuracy(targets, clean),
        label_accuracy_after=None if clean is None else _accuracy(corrected, clean),
        correct_per_class_before=None if clean is None else _correct_per_class(targets, clean, probs.shape[1]),
        correct_per_class_after=None if clean is None else _correct_per_class(corrected, clean, probs.shape[1]),
    )


def _accuracy(labels: torch.Tensor, truth: torch.Tensor) -> float | None:
    return float((labels == truth).float().mean()) if len(labels) else None


def _correct_per_class(labels: torch.Tensor, truth: torch.Tensor, classes: int) -> list[int]:
    return torch.bincount(truth[labels == truth], minlength=classes).tolist()
