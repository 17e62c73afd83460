import math

import pytest
import torch
from rdkit import Chem, DataStructs

from tyger.chem import ecfp4, ecfp4_bitvects
from tyger.losses import (
    dk_fingerprint_loss,
    feedback_rank_loss,
    feedback_relation_loss,
    standardize_targets,
    tanimoto,
    task_loss,
    translation_loss,
)


def _bce(logit: float, y: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_masked_bce_by_hand():
    out = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, False], [True, True]])
    per = task_loss(out, y, mask, "multilabel", reduction="none")
    assert per[0].item() == pytest.approx(_bce(2.0, 1))  # the missing label is ignored
    assert per[1].item() == pytest.approx((_bce(0.5, 0) + _bce(3.0, 1)) / 2)
    assert task_loss(out, y, mask, "multilabel").item() == pytest.approx(per.mean().item())
    # a changed value under a missing label changes nothing
    y2 = y.clone()
    y2[0, 1] = 1.0
    assert torch.equal(task_loss(out, y2, mask, "multilabel", reduction="none"), per)


def test_regression_standardised_and_multiclass():
    y = torch.tensor([[1.0], [3.0], [5.0]])
    mask = torch.ones(3, 1, dtype=torch.bool)
    mean, std = standardize_targets(y, mask)
    assert mean.item() == 3.0 and std.item() == 2.0
    out = torch.tensor([[0.0], [0.0], [1.0]])
    per = task_loss(out, y, mask, "regression", mean, std, reduction="none")
    assert per.tolist() == pytest.approx([1.0, 0.0, 0.0])
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    ce = task_loss(logits, torch.tensor([[1.0]]), torch.ones(1, 1, dtype=torch.bool), "multiclass")
    assert ce.item() == pytest.approx(-math.log(1 / (math.exp(2) + 2)))


def test_translation_loss_ignores_pad():
    logits = torch.randn(2, 4, 6)
    targets = torch.tensor([[4, 5, 2, 0], [3, 4, 5, 2]])
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    expected = (ce[0, :3].mean() + ce[1].mean()) / 2
    assert translation_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    logits2 = logits.clone()
    logits2[0, 3] = 100.0  # the pad position's prediction does not matter
    assert translation_loss(logits2, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_dk_fingerprint_loss_uses_tanimoto():
    mols = [Chem.MolFromSmiles(s) for s in ("CCO", "CCCO", "c1ccccc1")]
    bits = ecfp4(mols)
    rd = ecfp4_bitvects(mols)
    expected = torch.tensor([DataStructs.BulkTanimotoSimilarity(f, rd) for f in rd])
    assert torch.allclose(tanimoto(bits, bits), expected)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    s_z = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 1.0]])
    off = ~torch.eye(3, dtype=torch.bool)
    want = (s_z - expected)[off].pow(2).sum() / 6
    assert dk_fingerprint_loss(z, bits).item() == pytest.approx(want.item(), rel=1e-6)


def test_feedback_rank_loss_by_hand_and_detached():
    pred = torch.tensor([0.5, 0.0, 0.0, 2.0], requires_grad=True)
    target = torch.tensor([3.0, 1.0, 1.0, 0.5], requires_grad=True)
    # pairs (0, 2): l0 > l2, pred diff 0.5 -> max(0, -0.5 + 1) = 0.5; (1, 3): l1 > l3, diff -2 -> 3
    loss = feedback_rank_loss(pred, target)
    assert loss.item() == pytest.approx((0.5 + 3.0) / 2)
    loss.backward()
    assert pred.grad is not None and target.grad is None


def test_feedback_relation_loss_zero_when_relations_match():
    h = torch.randn(6, 8)
    assert feedback_relation_loss(h, h.clone()).item() == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(6, 8, requires_grad=True)
    h.requires_grad_(True)
    loss = feedback_relation_loss(h, z)
    loss.backward()
    assert loss.item() > 0 and z.grad is not None and h.grad is None
