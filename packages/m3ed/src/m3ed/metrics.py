"""Evaluation of M3ED runs as the official code scores them: weighted F1 as sklearn computes it
(``codes/mdi/trainer.py`` of github.com/JinmingZhao/MEmoConv), run aggregation (``codes/get_results.py``),
the benchmark table; and the multi-label measures of the release's blended emotions, for which the
official code has none."""

from __future__ import annotations

import numpy as np

from shared.report import markdown_table, mean_std

MODALITY_COLUMNS = ("A", "V", "L", "A+V", "A+L", "V+L", "A+V+L")


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (sklearn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 7) -> dict:
    """Weighted / macro F1, accuracy, UAR (macro recall), per-class F1 and confusion matrix.

    Weighted F1 is the official selection metric (sklearn ``f1_score(average="weighted")``). Macro averages
    run over the classes present in ``y_true`` or ``y_pred``, as sklearn's do; absent classes score 0.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64).ravel(), np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError("y_true and y_pred must be non-empty and of equal length")
    if min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); drop padding (-1) first")
    confusion = np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(1), confusion.sum(0)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * tp, support + predicted)
    present = (support + predicted) > 0
    return {
        "weighted_f1": float((f1 * support).sum() / support.sum()),
        "macro_f1": float(f1[present].mean()),
        "accuracy": float(tp.sum() / y_true.size),
        "uar": float(recall[present].mean()),
        "per_class_f1": f1.tolist(),
        "confusion": confusion.tolist(),
    }


def multilabel_report(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 7, zero_division: float = 0.0) -> dict:
    """Micro / macro F1, per-class F1, Hamming loss and subset accuracy of (N, classes) 0/1 label matrices.

    A class's F1 is ``2 tp / (2 tp + fp + fn)``; a class neither true nor predicted in any row (0 / 0) scores
    ``zero_division`` and still counts in the macro average over all ``num_classes``, as does micro F1 when no
    label is true or predicted. Equal to sklearn's ``f1_score(average="micro"|"macro", zero_division=...)``,
    ``hamming_loss`` and ``accuracy_score`` (exact match) on indicator matrices.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 2 or y_true.shape[1] != num_classes or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty (N, {num_classes}) matrices of equal shape")
    if not (np.isin(y_true, (0, 1)).all() and np.isin(y_pred, (0, 1)).all()):
        raise ValueError("multi-label matrices must hold 0 or 1 only")
    truth, predicted = y_true.astype(bool), y_pred.astype(bool)
    tp = (truth & predicted).sum(0).astype(np.float64)
    wrong = (truth ^ predicted).sum(0)  # fp + fn per class
    denominator = 2 * tp + wrong
    f1 = np.divide(2 * tp, denominator, out=np.full(num_classes, float(zero_division)), where=denominator > 0)
    return {
        "micro_f1": float(2 * tp.sum() / denominator.sum()) if denominator.sum() else float(zero_division),
        "macro_f1": float(f1.mean()),
        "per_class_f1": f1.tolist(),
        "hamming_loss": float(wrong.sum() / truth.size),
        "subset_accuracy": float((truth == predicted).all(1).mean()),
    }


def aggregate_runs(
    runs: list[dict],
    key_val: str = "val_weighted_f1",
    key_test: str = "test_weighted_f1",
    drop_worst_val: bool = True,
) -> dict:
    """Aggregate repeated runs as the official ``get_results.py``: drop the worst-validation run, average the rest.

    Returns ``val_mean``, ``val_std``, ``test_mean``, ``test_std`` (sample std over the kept runs, 0 for one)
    and ``kept`` (indices into ``runs``).
    """
    if not runs:
        raise ValueError("aggregate_runs needs at least one run")
    kept = list(range(len(runs)))
    if drop_worst_val and len(runs) > 1:
        kept.remove(min(kept, key=lambda i: runs[i][key_val]))
    val_mean, val_std = mean_std([runs[i][key_val] for i in kept])
    test_mean, test_std = mean_std([runs[i][key_test] for i in kept])
    return {"val_mean": val_mean, "val_std": val_std, "test_mean": test_mean, "test_std": test_std, "kept": kept}


def benchmark_table(results: dict[tuple[str, str], dict], digits: int = 2) -> str:
    """Markdown benchmark table: rows = models, columns = modality combination × (val, test).

    ``results`` maps ``(model, modalities)`` (modalities as in ``MODALITY_COLUMNS``, e.g. ``"A+V+L"``) to an
    :func:`aggregate_runs` result; missing cells print ``-``.
    """
    unknown = {mods for _, mods in results} - set(MODALITY_COLUMNS)
    if unknown:
        raise ValueError(f"unknown modality columns {sorted(unknown)}; use {MODALITY_COLUMNS}")
    models = list(dict.fromkeys(model for model, _ in results))
    headers = ["model"] + [f"{mods} {split}" for mods in MODALITY_COLUMNS for split in ("val", "test")]

    def cell(model: str, mods: str, split: str) -> str:
        agg = results.get((model, mods))
        if agg is None:
            return "-"
        return f"{agg[f'{split}_mean']:.{digits}f} ± {agg[f'{split}_std']:.{digits}f}"

    rows = [[model] + [cell(model, m, s) for m in MODALITY_COLUMNS for s in ("val", "test")] for model in models]
    return markdown_table(headers, rows)
