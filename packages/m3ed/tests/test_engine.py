"""The training recipe: the loss, class weights, the schedule, and that an epoch learns."""

import math

import pytest
import torch

from m3ed.data import Batch
from m3ed.engine import build_optimizer, class_weights, cosine_schedule, train_epoch, utterance_loss
from m3ed.models import build_model
from shared.device import AmpScaler


def test_utterance_loss_by_hand_ignores_padding_and_weighs_classes():
    logits = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], [[5.0, -5.0, 0.0]]])  # (n=3, B=1, 3 classes)
    labels = torch.tensor([[0], [2], [-1]])
    log_p = logits.log_softmax(-1)
    nll = [-log_p[0, 0, 0], -log_p[1, 0, 2]]
    assert utterance_loss(logits, labels) == pytest.approx(float((nll[0] + nll[1]) / 2))
    weight = torch.tensor([1.0, 1.0, 3.0])
    assert utterance_loss(logits, labels, weight) == pytest.approx(float((nll[0] + 3 * nll[1]) / 4))


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
