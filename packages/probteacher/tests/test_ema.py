import pytest
import torch
from torch import nn

from probteacher.ema import copy_into, ema_update, make_teacher
from shared.errors import UserError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)  # float running stats + integer num_batches_tracked
        self.anchor_wh = nn.ParameterList([nn.Parameter(torch.rand(3, 2) * 32)])

    def forward(self, x):
        return self.bn(self.conv(x)).mean() + self.anchor_wh[0].sum()


def pair():
    student = Net()
    student(torch.rand(2, 3, 8, 8))  # moves the BN buffers away from their initial values
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student(torch.rand(2, 3, 8, 8))
    return teacher, student


def test_keep_rate_zero_copies_one_freezes_half_averages():
    teacher, student = pair()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 1.0)
    assert all(torch.equal(v, before[k]) or not v.is_floating_point() for k, v in teacher.state_dict().items())
    ema_update(teacher, student, 0.5)
    for k, v in teacher.state_dict().items():
        s = student.state_dict()[k]
        expected = 0.5 * before[k] + 0.5 * s if v.is_floating_point() else s
        assert torch.allclose(v, expected), k
    ema_update(teacher, student, 0.0)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in teacher.state_dict().items())
    assert teacher.state_dict()["bn.num_batches_tracked"] == 2  # integer buffers are copied


def test_copy_into_covers_anchors_and_buffers():
    teacher, student = pair()
    copy_into(teacher, student)
    for key in ("anchor_wh.0", "bn.running_mean", "bn.num_batches_tracked", "conv.weight"):
        assert torch.equal(teacher.state_dict()[key], student.state_dict()[key])
    assert teacher.anchor_wh[0] is not student.anchor_wh[0]


def test_teacher_never_gets_gradients():
    teacher, student = pair()
    assert not any(p.requires_grad for p in teacher.parameters())
    x = torch.rand(2, 3, 8, 8)
    (teacher(x) + student(x)).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    ema_update(teacher, student, 0.9)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_bad_keep_rate_and_mismatched_models():
    teacher, student = pair()
    with pytest.raises(UserError, match="keep rate"):
        ema_update(teacher, student, 1.5)
    with pytest.raises(ValueError, match="differ"):
        copy_into(nn.Linear(2, 2), student)
