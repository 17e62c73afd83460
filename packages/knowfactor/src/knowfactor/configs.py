"""The official KF settings (spec 2.6 and 4) and the CPU-scale ones, and the builders of each model.

A config names the teacher, the CKN (with the stages whose pooled features enter the InfoMax term),
the TSN encoder, the loss weights and the optimisation recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from knowfactor.backbones import build_backbone, feature_channels
from knowfactor.models import KDModel, KFModel, KFStudent, MultiTaskClassifier, TaskSpecificNet
from shared.errors import UserError


@dataclass(frozen=True)
class Recipe:
    """SGD with momentum; the rate drops ×0.1 at each milestone (mmcv step policy) or follows a cosine."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 200
    milestones: tuple[int, ...] = (100, 150)
    batch_size: int = 128
    clip: float | None = 35.0
    cosine: bool = False


@dataclass(frozen=True)
class KFConfig:
    dataset: str
    teacher: str
    teacher_levels: tuple[int, ...]
    ckn: str
    ckn_levels: tuple[int, ...]
    tsn: str
    tsn_level: int
    temperature: float = 10.0
    lambda_kd: float = 0.1
    lambda_feat: float = 1.0
    beta: float = 1e-3
    w_task: float = 1.0
    recipe: Recipe = field(default_factory=Recipe)
    backbone_kwargs: dict = field(default_factory=dict)  # per backbone role: teacher, ckn, tsn
    image_size: int | None = None  # resize inputs (the CPU configs shrink 64x64 sprites to 32x32)


_CIFAR = {"dataset": "cifar10", "teacher": "wrn28_2", "teacher_levels": (0, 1, 2), "tsn": "mobilenetv2_x0.5_cifar"}
_IMAGENET_RECIPE = Recipe(lr=0.1, weight_decay=1e-4, epochs=150, milestones=(), batch_size=32, clip=None, cosine=True)
_TINY = {"ckn": "tiny_cnn", "ckn_levels": (0, 1, 2), "tsn": "tiny_cnn", "tsn_level": 2}
_TINY_GRAY = {  # small CNNs for 1-channel inputs
    "teacher": {"in_channels": 1, "widths": (16, 32, 64)},
    "ckn": {"in_channels": 1, "widths": (16, 32, 64)},
    "tsn": {"in_channels": 1, "widths": (8, 16, 32)},
}
_TINY_RECIPE = Recipe(lr=0.05, weight_decay=1e-4, epochs=8, milestones=(6,), batch_size=64, clip=35.0)

CONFIGS: dict[str, KFConfig] = {
    "cifar10_wrn28_2_to_r18": KFConfig(**_CIFAR, ckn="resnet18_cifar", ckn_levels=(1, 2, 3), tsn_level=7),
    "cifar10_wrn28_2_to_mbv2": KFConfig(**_CIFAR, ckn="mobilenetv2_cifar", ckn_levels=(5, 6, 7), tsn_level=7),
    "cifar10_wrn28_2_to_wrn28_2": KFConfig(**_CIFAR, ckn="wrn28_2", ckn_levels=(0, 1, 2), tsn_level=7),
    "imagenet_r18_to_r18": KFConfig(
        dataset="imagenet",
        teacher="resnet18",
        teacher_levels=(1, 2, 3),
        ckn="resnet18",
        ckn_levels=(1, 2, 3),
        tsn="mobilenetv2_x0.5",
        tsn_level=7,
        w_task=0.1,
        recipe=_IMAGENET_RECIPE,
    ),
    "imagenet_r18_to_mbv2": KFConfig(
        dataset="imagenet",
        teacher="resnet18",
        teacher_levels=(1, 2, 3),
        ckn="mobilenetv2",
        ckn_levels=(5, 6, 7),
        tsn="mobilenetv2_x0.5",
        tsn_level=7,
        temperature=2.0,
        w_task=0.1,
        recipe=Recipe(lr=0.05, weight_decay=4e-5, epochs=200, milestones=(), batch_size=32, clip=None, cosine=True),
    ),
    "imagenet_r50_to_r18": KFConfig(
        dataset="imagenet",
        teacher="resnet50",
        teacher_levels=(1, 2, 3),
        ckn="resnet18",
        ckn_levels=(1, 2, 3),
        tsn="mobilenetv2_x0.5",
        tsn_level=7,
        recipe=_IMAGENET_RECIPE,
    ),
    # CPU scale (ours): the embedded dSprites-lite (5 factor tasks) at 32x32, MNIST-5k one-vs-rest, digits.
    "dsprites_tiny": KFConfig(
        dataset="dsprites",
        teacher="tiny_cnn",
        teacher_levels=(0, 1, 2),
        **_TINY,
        recipe=_TINY_RECIPE,
        backbone_kwargs=_TINY_GRAY,
        image_size=32,
    ),
    "mnist_tiny": KFConfig(
        dataset="mnist",
        teacher="tiny_cnn",
        teacher_levels=(0, 1, 2),
        **_TINY,
        recipe=_TINY_RECIPE,
        backbone_kwargs=_TINY_GRAY,
    ),
    "digits_tiny": KFConfig(
        dataset="digits",
        teacher="tiny_cnn",
        teacher_levels=(0, 1, 2),
        **_TINY,
        recipe=_TINY_RECIPE,
        backbone_kwargs={"tsn": {"widths": (8, 16, 32)}},
    ),
}


def get_config(name: str) -> KFConfig:
    if name not in CONFIGS:
        raise UserError(f"unknown config {name!r}: choose from {', '.join(CONFIGS)}")
    return CONFIGS[name]


def _backbone(config: KFConfig, role: str, out_indices: Sequence[int]):
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
    tsns = []
    for _ in task_classes:
        encoder = _backbone(config, "tsn", (config.tsn_level,))
        tsns.append(TaskSpecificNet(encoder, feature_channels(encoder)[-1], dim))
    return KFStudent(ckn, tsns, dim, task_classes)


def build_kf(config: KFConfig, teacher: MultiTaskClassifier, task_classes: Sequence[int], **overrides) -> KFModel:
    """The KF training model around ``teacher``; ``overrides`` change loss weights (beta, lambda_feat, ...)."""
    student = build_student(config, task_classes)
    weights = {k: getattr(config, k) for k in ("temperature", "lambda_kd", "lambda_feat", "beta", "w_task")}
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


def build_kd(config: KFConfig, teacher: MultiTaskClassifier, task_classes: Sequence[int]) -> KDModel:
    """The KD baseline: Hinton KD of ``teacher`` into :func:`build_kd_student`."""
    student = build_kd_student(config, task_classes)
    return KDModel(student, teacher, temperature=config.temperature, lambda_kd=config.lambda_kd)
