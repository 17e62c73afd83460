"""The training recipe: schedule, weight-decay groups, losses, and that training learns."""

import math

import pytest
import torch
import torch.nn.functional as F

from iformer import create_model
from iformer.engine import build_optimizer, evaluate, learning_rate, soft_target_cross_entropy, train_one_epoch
from shared.device import AmpScaler

SCHEDULE = {"lr": 1e-3, "min_lr": 1e-6, "warmup_lr": 1e-6, "warmup_epochs": 5, "epochs": 300}


def test_learning_rate_schedule_matches_timm_cosine():
    assert learning_rate(0, **SCHEDULE) == pytest.approx(1e-6)
    assert learning_rate(2, **SCHEDULE) == pytest.approx(1e-6 + 2 * (1e-3 - 1e-6) / 5)
    # no warm-up prefix: the cosine is evaluated at the absolute epoch, as timm 0.5.4 does
    assert learning_rate(5, **SCHEDULE) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * 5 / 300)))
    assert learning_rate(150, **SCHEDULE) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))
    assert learning_rate(300, **SCHEDULE) == learning_rate(309, **SCHEDULE) == 1e-6  # cooldown


def test_weight_decay_groups_reproduce_the_release():
    model = create_model("tiny_test")
    names = {id(p): n for n, p in model.named_parameters()}

    def groups(**kwargs):
        optimizer = build_optimizer(model, 1e-3, 0.05, **kwargs)
        decayed, exempt = ({names[id(p)] for p in g["params"]} for g in optimizer.param_groups)
        assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
        return decayed, exempt

    decayed, exempt = groups()
    assert {"pos_embed1", "blocks1.0.mlp.fc1.weight", "patch_embed.proj1.weight"} <= decayed
    assert {"blocks1.0.mlp.fc1.bias", "norm.weight", "blocks3.0.layer_scale_1"} <= exempt
    decayed, exempt = groups(decay_pos_embed=False)
    assert "pos_embed1" in exempt and "pos_embed1" not in decayed
    assert len(decayed) + len(exempt) == len(names)


def test_soft_target_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([[0.7, 0.2, 0.1]])
    log_p = logits.log_softmax(-1)[0]
    expected = -(0.7 * log_p[0] + 0.2 * log_p[1] + 0.1 * log_p[2])
    assert soft_target_cross_entropy(logits, target) == pytest.approx(float(expected))
    labels = torch.tensor([2, 0])
    two = torch.randn(2, 3)
    assert soft_target_cross_entropy(two, F.one_hot(labels, 3).float()) == pytest.approx(
        float(F.cross_entropy(two, labels))
    )


def test_a_few_epochs_lower_the_loss_and_evaluate_counts():
    torch.manual_seed(0)
    images = torch.randn(64, 3, 16, 16)
    labels = (images[:, 0].mean(dim=(1, 2)) > 0).long()  # a learnable rule
    batches = [(images[i : i + 16], labels[i : i + 16]) for i in range(0, 64, 16)]
    model = create_model("tiny_test", num_classes=2, img_size=16)
    optimizer = build_optimizer(model, 2e-3, 0.05)
    device = torch.device("cpu")
    scaler = AmpScaler(device)
    first = train_one_epoch(model, batches, optimizer, scaler, device)
    for _ in range(6):
        last = train_one_epoch(model, batches, optimizer, scaler, device)
    assert last < first
    metrics = evaluate(model, batches, device)
    assert metrics["top5"] == 100.0 and 50.0 <= metrics["top1"] <= 100.0
    predictions = torch.cat([model(x).argmax(1) for x, _ in batches])
    assert metrics["top1"] == pytest.approx(100 * float((predictions == labels).float().mean()))
