"""The training recipe: the loss, class weights, the schedule, and that an epoch learns."""

import math

import pytest
import torch

from m3ed.data import Batch
from m3ed.engine import (
    build_optimizer,
    class_weights,
    cosine_schedule,
    multilabel_loss,
    multilabel_predictions,
    train_epoch,
    utterance_loss,
)
from m3ed.models import build_model
from shared.device import AmpScaler


def _nll(row: list[float], label: int) -> float:
    return math.log(sum(math.exp(x) for x in row)) - row[label]


def test_utterance_loss_by_hand_on_a_padded_time_major_batch():
    # (n=3, B=2, 3 classes): dialogue 0 has 3 utterances, dialogue 1 one, then 2 padding steps whose extreme
    # logits would dominate the loss if they were counted
    rows = [
        [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        [[0.0, 0.0, 3.0], [60.0, -60.0, 0.0]],
        [[1.0, 2.0, 0.0], [-60.0, 0.0, 60.0]],
    ]
    logits = torch.tensor(rows, requires_grad=True)
    labels = torch.tensor([[0, 1], [2, -1], [1, -1]])
    real = [((0, 0), 0), ((0, 1), 1), ((1, 0), 2), ((2, 0), 1)]
    nll = [_nll(rows[t][b], y) for (t, b), y in real]
    loss = utterance_loss(logits, labels)
    assert loss.item() == pytest.approx(sum(nll) / 4, rel=1e-6)
    loss.backward()
    assert logits.grad[1:, 1].abs().max() == 0 and logits.grad[:, 0].abs().min() > 0
    weight = torch.tensor([1.0, 2.0, 0.5])
    w = [float(weight[y]) for _, y in real]
    expected = sum(wi * li for wi, li in zip(w, nll, strict=True)) / sum(w)
    assert utterance_loss(logits, labels, weight).item() == pytest.approx(expected, rel=1e-6)


def _bce(logit: float, target: float) -> float:
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]."""
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_multilabel_loss_by_hand_ignores_padding():
    # (n=2, B=2, 3 emotions): dialogue 1 is one utterance long; its padding step has extreme logits and targets
    rows = [
        [[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]],
        [[-0.5, 3.0, 1.0], [80.0, -80.0, 80.0]],
    ]
    targets = [
        [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
        [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]],
    ]
    logits = torch.tensor(rows, requires_grad=True)
    labels = torch.tensor([[0, 1], [1, -1]])
    real = [(0, 0), (0, 1), (1, 0)]
    terms = [_bce(rows[t][b][c], targets[t][b][c]) for t, b in real for c in range(3)]
    loss = multilabel_loss(logits, torch.tensor(targets), labels)
    assert loss.item() == pytest.approx(sum(terms) / 9, rel=1e-6)
    loss.backward()
    assert logits.grad[1, 1].abs().max() == 0 and logits.grad[0].abs().min() > 0


def test_multilabel_predictions_threshold_and_at_least_one():
    logits = torch.tensor([[0.3, -1.0, 2.0], [-0.2, -3.0, -0.1], [-1.0, 0.0, -2.0]])
    assert multilabel_predictions(logits).tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 0]]  # sigmoid(0) = 0.5: no
    assert multilabel_predictions(logits, at_least_one=True).tolist() == [[1, 0, 1], [0, 0, 1], [0, 1, 0]]


def test_class_weights_are_inverse_frequencies():
    weights = class_weights([0, 0, 0, 1], num_classes=3)
    # total / (count * classes): 4 / 9 and 4 / 3; an absent class weighs 0
    assert weights.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])


def test_cosine_schedule_without_warmup():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = cosine_schedule(optimizer, total_steps=10)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1) and rates[5] == pytest.approx(0.05)
    assert rates[3] == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.3)))
    assert rates[10] == rates[11] == pytest.approx(0.0)


def test_epochs_with_one_scaler_lower_the_loss():
    torch.manual_seed(0)
    n, size = 6, 4
    features = torch.randn(n, size, 5)
    labels = (features[..., 0] > 0).long()
    labels[-1, 0] = -1  # one padded step
    batch = Batch({"text": features}, torch.zeros(n, size, dtype=torch.long), (labels == -1).t(), labels, list("abcd"))
    model = build_model("utt-mlp", ("text",), {"text": 5}, preset="demo", dropout=0.0)
    optimizer = build_optimizer(model, 1e-2)
    scheduler = cosine_schedule(optimizer, total_steps=1000)
    scaler = AmpScaler(torch.device("cpu"), enabled=False)
    losses = [
        train_epoch(model, [batch], optimizer, scheduler, scaler, torch.device("cpu"), desc="test") for _ in range(30)
    ]
    assert losses[-1] < 0.5 * losses[0]
