"""Knowledge Factorization (Yang, Ye, Wang; ECCV 2022): factor networks, their assembly, and the builders.

A frozen teacher that solves N tasks is factorized into N factor networks. Factor network i is the
shared Common Knowledge Network (CKN), its own Task-Specific Network TSN_i and head h_i, with logits
h_i(z_c + z_i) (the official ``KFImageClassifier.simple_test``). Attribute names give the official
state_dict keys: ``student.CKN.*``, ``student.TSN.{i}.{encoder,fc}``, ``student.head.fc`` (``fcs.{i}`` for
several tasks), ``student.head_task.*``, ``teacher.{backbone,head}.*``, ``feat_fcs.{l}.{0,1,3}.*``.
``build_*`` make each model of a setting (:data:`knowfactor.config.CONFIGS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from knowfactor.backbones import SimpleGaussianConv64, build_backbone, feature_channels
from knowfactor.config import KFConfig
from knowfactor.losses import KD_LOSSES, batch_gaussian_stats, infomax_loss, infomin_loss, label_smooth_ce
from shared.errors import UserError


def task_targets(labels: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-task targets: the columns of (B, N) class indices, or per-task soft labels (B, K_i) after Mixup."""
    return list(labels.unbind(1)) if isinstance(labels, torch.Tensor) else list(labels)


def pooled(maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Global average pooling of every stage map (vectors pass through): the official GAP neck."""
    return [m.mean(dim=(2, 3)) if m.ndim == 4 else m for m in maps]


class TaskHeads(nn.Module):
    """One linear classifier per task: key ``fc`` for a single task (mmcls LinearClsHead), ``fcs.{i}`` otherwise."""

    def __init__(self, dim: int, task_classes: Sequence[int]) -> None:
        super().__init__()
        self.task_classes = list(task_classes)
        if len(self.task_classes) == 1:
            self.fc = nn.Linear(dim, self.task_classes[0])
        else:
            self.fcs = nn.ModuleList(nn.Linear(dim, k) for k in self.task_classes)

    def layers(self) -> list[nn.Linear]:
        return [self.fc] if len(self.task_classes) == 1 else list(self.fcs)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per-task logits from per-task features (a single shared feature may be given as a 1-list)."""
        layers = self.layers()
        if len(features) == 1 and len(layers) > 1:
            features = list(features) * len(layers)
        return [layer(z) for layer, z in zip(layers, features, strict=True)]


class TaskSpecificNet(nn.Module):
    """TSN (official ``TSN_backbone``): encoder -> GAP -> bias-free Linear to the CKN width d."""

    def __init__(self, encoder: nn.Module, in_channels: int, dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(in_channels, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled(self.encoder(x))[-1])

    def bottleneck(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z and the Gaussian of the bottleneck term: the batch mean and log variance of z (``TSN_backbone``)."""
        z = self(x)
        return z, *batch_gaussian_stats(z)


class GaussianTaskNet(nn.Module):
    """TSN with a per-sample variational bottleneck (the release's ``SimpleGaussianConv64`` task networks):
    the encoder's z ~ q(z | x) = N(μ, σ²) feeds the head (μ in eval mode); its latent is the CKN width d."""

    def __init__(self, encoder: SimpleGaussianConv64) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[0]

    def bottleneck(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z and the per-sample μ, log σ² whose KL to N(0, I) is the bottleneck term."""
        return self.encoder(x)


class Projector(nn.Sequential):
    """g_l of the InfoMax term: Linear -> BatchNorm1d -> ReLU -> Linear (keys 0, 1, 3)."""

    def __init__(self, teacher_dim: int, student_dim: int) -> None:
        super().__init__(
            nn.Linear(teacher_dim, student_dim),
            nn.BatchNorm1d(student_dim),
            nn.ReLU(inplace=True),
            nn.Linear(student_dim, student_dim),
        )


class MultiTaskClassifier(nn.Module):
    """Backbone -> GAP -> one head per task: the teacher, and the KD baseline student (mmcls layout)."""

    def __init__(self, backbone: nn.Module, dim: int, task_classes: Sequence[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = TaskHeads(dim, task_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pooled features of every output stage."""
        return pooled(self.backbone(x))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.head([self.features(x)[-1]])


class KFStudent(nn.Module):
    """The factorized student: one CKN, one TSN + head (+ task-only head) per task."""

    def __init__(self, ckn: nn.Module, tsns: Sequence[nn.Module], dim: int, task_classes: Sequence[int]) -> None:
        super().__init__()
        if len(tsns) != len(task_classes):
            raise ValueError(f"{len(tsns)} TSNs for {len(task_classes)} tasks")
        self.CKN = ckn
        self.TSN = nn.ModuleList(tsns)
        self.head = TaskHeads(dim, task_classes)
        self.head_task = TaskHeads(dim, task_classes)

    @property
    def num_tasks(self) -> int:
        return len(self.TSN)

    def forward_all(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Pooled CKN levels z_c^(1..L) and the task features z_1..z_N."""
        return pooled(self.CKN(x)), [tsn(x) for tsn in self.TSN]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-task logits h_i(z_c + z_i)."""
        common, tasks = self.forward_all(x)
        return self.head([common[-1] + z for z in tasks])


class KFModel(nn.Module):
    """Student, frozen teacher and the InfoMax projectors, with the official training objective.

    ``forward_train`` returns the five terms of the official ``KFImageClassifier.forward_train``
    (``loss_infomax``, ``loss_kd``, ``loss_cls``, ``loss_task``, ``loss_infomin``); their sum is the
    objective. Several tasks sum their per-task terms (the release crashes for N > 1). The bottleneck term is
    the KL of each TSN's ``bottleneck``: the batch Gaussian of a :class:`TaskSpecificNet`, the per-sample one of a
    :class:`GaussianTaskNet`. ``kd_loss`` names the distillation term (:data:`knowfactor.losses.KD_LOSSES`). The
    teacher runs in eval mode unless ``official_teacher_bn=True`` reproduces the release, whose teacher BatchNorms
    use batch statistics.
    """

    def __init__(
        self,
        student: KFStudent,
        teacher: MultiTaskClassifier,
        teacher_dims: Sequence[int],
        student_dims: Sequence[int],
        *,
        temperature: float = 10.0,
        lambda_kd: float = 0.1,
        lambda_feat: float = 1.0,
        beta: float = 1e-3,
        w_task: float = 1.0,
        label_smoothing: float = 0.1,
        kd_loss: str = "soft_target",
        infomax_mode: str = "official",
        official_teacher_bn: bool = False,
    ) -> None:
        super().__init__()
        if len(teacher_dims) != len(student_dims):
            raise ValueError("the teacher and the CKN need the same number of feature levels")
        self.student = student
        self.teacher = teacher
        self.feat_fcs = nn.ModuleList(Projector(t, s) for t, s in zip(teacher_dims, student_dims, strict=True))
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.temperature = temperature
        self.lambda_kd = lambda_kd
        self.lambda_feat = lambda_feat
        self.beta = beta
        self.w_task = w_task
        self.label_smoothing = label_smoothing
        self.kd_loss = KD_LOSSES[kd_loss]
        self.infomax_mode = infomax_mode
        self.official_teacher_bn = official_teacher_bn

    def train(self, mode: bool = True) -> KFModel:
        super().train(mode)
        self.teacher.train(mode and self.official_teacher_bn)
        return self

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        """Per-task logits, or with ``labels`` the loss terms (so DDP wraps training too)."""
        return self.student(x) if labels is None else self.forward_train(x, labels)

    def forward_train(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms for images ``x`` and per-task labels ``labels`` (B, N)."""
        with torch.no_grad():
            teacher_levels = self.teacher.features(x)
            teacher_logits = self.teacher.head([teacher_levels[-1]])
        common = pooled(self.student.CKN(x))
        bottlenecks = [tsn.bottleneck(x) for tsn in self.student.TSN]
        tasks = [z for z, _, _ in bottlenecks]
        logits = self.student.head([common[-1] + z for z in tasks])
        task_logits = self.student.head_task(tasks)
        levels = list(zip(self.feat_fcs, teacher_levels[-len(common) :], common, strict=True))
        infomax = sum(infomax_loss(g(t), c, mode=self.infomax_mode) for g, t, c in levels) / len(levels)
        smooth = self.label_smoothing
        columns = task_targets(labels)
        return {
            "loss_infomax": self.lambda_feat * infomax,
            "loss_kd": self.lambda_kd
            * sum(self.kd_loss(s, t, self.temperature) for s, t in zip(logits, teacher_logits, strict=True)),
            "loss_cls": sum(label_smooth_ce(s, y, smooth) for s, y in zip(logits, columns, strict=True)),
            "loss_task": self.w_task
            * sum(label_smooth_ce(s, y, smooth) for s, y in zip(task_logits, columns, strict=True)),
            "loss_infomin": self.beta * sum(infomin_loss(mu, logvar) for _, mu, logvar in bottlenecks),
        }


class KDModel(nn.Module):
    """The KD baseline (Hinton et al.) as the release's ``KDImageClassifier``: cross-entropy plus the distillation
    term ``kd_loss``; ``label_smoothing`` > 0 smooths the cross-entropy as the KF runs do (ours)."""

    def __init__(
        self,
        student: MultiTaskClassifier,
        teacher: MultiTaskClassifier,
        *,
        temperature: float = 10.0,
        lambda_kd: float = 0.1,
        label_smoothing: float = 0.0,
        kd_loss: str = "soft_target",
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.temperature = temperature
        self.lambda_kd = lambda_kd
        self.label_smoothing = label_smoothing
        self.kd_loss = KD_LOSSES[kd_loss]

    def train(self, mode: bool = True) -> KDModel:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        return self.student(x) if labels is None else self.forward_train(x, labels)

    def forward_train(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        logits = self.student(x)
        pairs = list(zip(logits, teacher_logits, task_targets(labels), strict=True))
        return {
            "loss_kd": self.lambda_kd * sum(self.kd_loss(s, t, self.temperature) for s, t, _ in pairs),
            "loss_cls": sum(label_smooth_ce(s, y, self.label_smoothing) for s, _, y in pairs),
        }


class ClassifierModel(nn.Module):
    """Plain supervised training of a :class:`MultiTaskClassifier` (the teacher), label-smoothed CE per task."""

    def __init__(self, classifier: MultiTaskClassifier, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.classifier = classifier
        self.label_smoothing = label_smoothing

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        return self.classifier(x) if labels is None else self.forward_train(x, labels)

    def forward_train(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(x)
        targets = task_targets(labels)
        loss = sum(label_smooth_ce(s, y, self.label_smoothing) for s, y in zip(logits, targets, strict=True))
        return {"loss_cls": loss}


class FactorNetwork(nn.Module):
    """One stand-alone factor network: CKN + TSN_i + h_i, all a single task needs."""

    def __init__(self, ckn: nn.Module, tsn: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.CKN = ckn
        self.TSN = tsn
        self.head = head

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_c, z_i)."""
        return pooled(self.CKN(x))[-1], self.TSN(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        common, task = self.features(x)
        return self.head(common + task)


def factor_network(student: KFStudent, task: int) -> FactorNetwork:
    """The factor network of ``task`` (shares modules with the student: export copies its state_dict)."""
    if not 0 <= task < student.num_tasks:
        raise UserError(f"task index {task} out of range: the student has {student.num_tasks} tasks")
    return FactorNetwork(student.CKN, student.TSN[task], student.head.layers()[task])


class AssembledNetwork(nn.Module):
    """Factor networks plugged together with no fine-tuning: one CKN forward, one TSN + head per task."""

    def __init__(self, ckn: nn.Module, tsns: Sequence[nn.Module], heads: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.CKN = ckn
        self.TSN = nn.ModuleList(tsns)
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        common = pooled(self.CKN(x))[-1]
        return [head(common + tsn(x)) for tsn, head in zip(self.TSN, self.heads, strict=True)]


def assemble(factors: Sequence[FactorNetwork]) -> AssembledNetwork:
    """Combine factor networks of one factorization; their CKNs must be identical (checked, bit for bit)."""
    if not factors:
        raise UserError("assemble needs at least one factor network")
    reference = factors[0].CKN.state_dict()
    for index, factor in enumerate(factors[1:], start=1):
        other = factor.CKN.state_dict()
        if other.keys() != reference.keys() or any(not torch.equal(other[k], reference[k]) for k in reference):
            raise UserError(
                f"factor network {index} has another CKN than factor network 0: they come from different "
                "factorizations and cannot be assembled without fine-tuning"
            )
    return AssembledNetwork(factors[0].CKN, [f.TSN for f in factors], [f.head for f in factors])


# --- the models of a setting -------------------------------------------------------------------------------------


def _backbone(config: KFConfig, role: str, out_indices: Sequence[int]) -> nn.Module:
    name = {"teacher": config.teacher, "ckn": config.ckn, "tsn": config.tsn}[role]
    kwargs = {"out_indices": tuple(out_indices), **config.backbone_kwargs.get(role, {})}
    return build_backbone(name, **kwargs)


def build_teacher(config: KFConfig, task_classes: Sequence[int]) -> MultiTaskClassifier:
    """The teacher: its backbone at the InfoMax levels, a head per task on the last one."""
    backbone = _backbone(config, "teacher", config.teacher_levels)
    return MultiTaskClassifier(backbone, feature_channels(backbone)[-1], task_classes)


def build_student(config: KFConfig, task_classes: Sequence[int]) -> KFStudent:
    """CKN + one TSN per task (width d = the CKN's last level) + heads."""
    ckn = _backbone(config, "ckn", config.ckn_levels)
    dim = feature_channels(ckn)[-1]
    tsns: list[nn.Module] = []
    for _ in task_classes:
        if config.tsn == "simplegaussianconv64":  # z, mu, logvar: the per-sample bottleneck
            encoder = _backbone(config, "tsn", (0, 1, 2))
            if encoder.latent != dim:
                raise ValueError(f"the Gaussian TSN's latent ({encoder.latent}) must equal the CKN width d ({dim})")
            tsns.append(GaussianTaskNet(encoder))
        else:
            encoder = _backbone(config, "tsn", (config.tsn_level,))
            tsns.append(TaskSpecificNet(encoder, feature_channels(encoder)[-1], dim))
    return KFStudent(ckn, tsns, dim, task_classes)


def build_kf(config: KFConfig, teacher: MultiTaskClassifier, task_classes: Sequence[int], **overrides) -> KFModel:
    """The KF training model around ``teacher``; ``overrides`` change loss weights (beta, lambda_feat, ...)."""
    student = build_student(config, task_classes)
    keys = ("temperature", "lambda_kd", "lambda_feat", "beta", "w_task", "label_smoothing", "kd_loss")
    weights = {k: getattr(config, k) for k in keys}
    return KFModel(
        student,
        teacher,
        feature_channels(teacher.backbone),
        feature_channels(student.CKN),
        **{**weights, **overrides},
    )


def build_kd_student(config: KFConfig, task_classes: Sequence[int]) -> MultiTaskClassifier:
    """The KD baseline's student: the CKN's architecture with a head per task."""
    ckn = _backbone(config, "ckn", config.ckn_levels)
    return MultiTaskClassifier(ckn, feature_channels(ckn)[-1], task_classes)


def build_kd(config: KFConfig, teacher: MultiTaskClassifier, task_classes: Sequence[int], **overrides) -> KDModel:
    """The KD baseline: Hinton KD of ``teacher`` into :func:`build_kd_student`; ``overrides`` change
    ``temperature``, ``lambda_kd`` and ``label_smoothing``."""
    student = build_kd_student(config, task_classes)
    weights = {"temperature": config.temperature, "lambda_kd": config.lambda_kd, "kd_loss": config.kd_loss}
    return KDModel(student, teacher, **weights | overrides)
