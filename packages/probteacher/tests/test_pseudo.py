import torch
from torch import nn

from probteacher.pseudo import teacher_pseudo_labels


class FakeTeacher(nn.Module):
    """Returns fixed teacher-mode detections; records the mode and whether autograd was on."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, images, mode="inference"):
        self.calls.append((mode, torch.is_grad_enabled()))
        boxes = torch.tensor([[0.0, 0, 10, 10], [5, 5, 5.5, 20], [20, 20, 40, 30]]) * self.w
        logits = torch.tensor([[0.0, 3, 0, 0], [0, 0, 3, 0], [4, 1, 0, 0]]) * self.w
        det = {
            "boxes": boxes,
            "scores": torch.tensor([0.3, 0.8, 0.95]),  # rescored scores, unlike the class probabilities
            "labels": torch.tensor([1, 2, 1]),
            "logits": logits,
            "sigma_raw": torch.arange(12.0).view(3, 4) * self.w,
        }
        empty = {k: v[:0] for k, v in det.items()}
        return [det, empty][: len(images)]


def test_soft_pseudo_labels_drop_degenerate_boxes_and_keep_payload():
    teacher = FakeTeacher()
    out = teacher_pseudo_labels(teacher, [torch.rand(3, 8, 8), torch.rand(3, 8, 8)])
    assert teacher.calls == [("teacher", False)]
    first, empty = out
    assert set(first) == {"boxes", "labels", "soft_logits", "sigma_raw"}
    assert first["boxes"].tolist() == [[0, 0, 10, 10], [20, 20, 40, 30]]  # the 0.5-px wide box is dropped
    assert first["labels"].tolist() == [1, 0]  # argmax of the logits, background allowed
    assert first["sigma_raw"].tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert not any(v.requires_grad for v in first.values())
    assert empty["boxes"].shape == (0, 4) and empty["soft_logits"].shape == (0, 4) and empty["labels"].numel() == 0


def test_hard_threshold_gives_ground_truth_style_targets():
    """The threshold reads the class probability (0.87 for the first box, 0.05 for the third), not the score."""
    first, empty = teacher_pseudo_labels(FakeTeacher(), [torch.rand(3, 8, 8)] * 2, hard_threshold=0.7)
    assert set(first) == {"boxes", "labels"}
    assert first["boxes"].tolist() == [[0, 0, 10, 10]] and first["labels"].tolist() == [1]
    assert first["labels"].dtype == torch.int64 and empty["boxes"].shape == (0, 4)


def test_pseudo_labels_from_the_real_detector_feed_the_unsupervised_branch():
    from probteacher.ema import make_teacher
    from probteacher.models import DetectorConfig, build_detector

    student = build_detector(DetectorConfig(backbone="tiny", num_classes=3))
    teacher = make_teacher(student)
    images = [torch.rand(3, 96, 128), torch.rand(3, 128, 112)]
    pseudo = teacher_pseudo_labels(teacher, images)
    assert len(pseudo) == 2 and sum(len(p["boxes"]) for p in pseudo) > 0
    for p, img in zip(pseudo, images, strict=True):
        n = len(p["boxes"])
        assert p["soft_logits"].shape == (n, 4) and p["sigma_raw"].shape == (n, 4) and p["labels"].shape == (n,)
        assert torch.equal(p["labels"], p["soft_logits"].argmax(1))
        assert (p["boxes"][:, 2:] - p["boxes"][:, :2] >= 1).all()
        assert (p["boxes"][:, 2] <= img.shape[2] + 1e-3).all() and (p["boxes"][:, 3] <= img.shape[1] + 1e-3).all()
        assert not any(v.requires_grad for v in p.values())
    losses = student(images, pseudo, mode="unsupervised")
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    hard = teacher_pseudo_labels(teacher, images, hard_threshold=0.2)
    assert all(set(h) == {"boxes", "labels"} and (h["labels"] >= 1).all() for h in hard)
    assert all(len(h["boxes"]) <= len(p["boxes"]) for h, p in zip(hard, pseudo, strict=True))
