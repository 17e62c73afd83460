"""The run configuration of ``knowfactor-train`` (one dataclass), its presets, and the paper's settings.

A *setting* (:data:`CONFIGS`, ``--config``) is one experiment of the official release
(github.com/Adamdad/KnowledgeFactor, ``cls/configs/{cifar10,imagenet}-kf/`` and the disentanglement config
``cls/configs/multi_task/simplecnn64_simplecnn64_1x128_dsprite.py``): the teacher, the CKN with the stages whose
pooled features enter the InfoMax term, the TSN encoder, the losses and their weights and the optimiser recipe;
CPU-scale settings of ours join them. A :class:`TrainConfig` is one run: what to train (the teacher, the KF
factor networks or the KD baseline), on which setting and data, and the values that override the setting's.

Presets: ``paper`` is the CIFAR-10 setting (WRN-28-2 teacher, ResNet-18 CKN) with the release's 200-epoch
recipe; ``small`` the same shortened to 30 epochs; ``demo`` the tiny CNNs on the embedded dSprites-lite, where
``kf`` and ``kd`` without a teacher train one first; ``dsprites_official`` and ``shape3d_official`` the
release's disentanglement recipes (SimpleConv64 CKN, per-sample Gaussian TSNs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    optimizer: str = "sgd"  # sgd, or adam (betas 0.9, 0.999; momentum unused) as the disentanglement configs


@dataclass(frozen=True)
class KFConfig:
    """One setting: the architectures, the stages the InfoMax term reads, the loss weights and the recipe."""

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
    label_smoothing: float = 0.1  # of the cross-entropies (mmcls LabelSmoothLoss); 0: plain CrossEntropyLoss
    kd_loss: str = "soft_target"  # soft_target (SoftTarget, T) or logits (Logits, MSE), knowfactor.losses.KD_LOSSES
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

_SIMPLECNN = {
    "dataset": "dsprites",
    "teacher": "simpleconv64",
    "teacher_levels": (0,),
    "ckn": "simpleconv64",
    "ckn_levels": (0,),
    "tsn": "simplegaussianconv64",
    "tsn_level": 0,
    "label_smoothing": 0.0,
    "kd_loss": "logits",
}
_SIMPLECNN_RECIPE = Recipe(
    lr=1e-4, weight_decay=1e-4, epochs=20, milestones=(10, 15), batch_size=128, clip=None, optimizer="adam"
)
_SIMPLECNN_TINY_RECIPE = Recipe(
    lr=3e-3, weight_decay=1e-4, epochs=12, milestones=(6, 9), batch_size=64, clip=None, optimizer="adam"
)
_TINY_WIDTHS = (16, 16, 32, 32, 64, 64)


def _simplecnn_kwargs(channels: int, widths: tuple[int, ...] | None = None) -> dict:
    """SimpleConv64 for every role, latent 10; ``widths`` (ours) narrows them, the TSNs to half of it."""
    kwargs = {"in_channels": channels, "latent": 10}
    if widths is None:
        return dict.fromkeys(("teacher", "ckn", "tsn"), kwargs)
    return {
        "teacher": kwargs | {"widths": widths},
        "ckn": kwargs | {"widths": widths},
        "tsn": kwargs | {"widths": tuple(w // 2 for w in widths)},
    }


#: The settings of the release's KF configs (``cls/configs/{cifar10,imagenet}-kf/``) and the CPU-scale ones.
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
    # The release's disentanglement configs (cls/configs/multi_task/simplecnn64_simplecnn64_1x128_dsprite.py, and
    # its Shape3D counterpart on the simplecnn64_1x128_shape3d.py recipe): SimpleConv64 teacher and CKN,
    # SimpleGaussianConv64 TSNs (d = latent 10), Logits (MSE) distillation, plain cross-entropy, Adam.
    "dsprites_simplecnn": KFConfig(**_SIMPLECNN, recipe=_SIMPLECNN_RECIPE, backbone_kwargs=_simplecnn_kwargs(1)),
    "shape3d_simplecnn": KFConfig(
        **_SIMPLECNN | {"dataset": "shapes3d"},
        recipe=dataclasses.replace(_SIMPLECNN_RECIPE, epochs=5, milestones=(3,), batch_size=256),
        backbone_kwargs=_simplecnn_kwargs(3),
    ),
    # CPU scale (ours): the dSprites recipe with narrower convolutions on the embedded dSprites-lite (64x64),
    # with the per-sample (VIB) bottleneck of the release or the batch-moment one of TSN_backbone.
    "dsprites_simplecnn_tiny": KFConfig(
        **_SIMPLECNN, recipe=_SIMPLECNN_TINY_RECIPE, backbone_kwargs=_simplecnn_kwargs(1, _TINY_WIDTHS)
    ),
    "dsprites_simplecnn_tiny_moment": KFConfig(
        **_SIMPLECNN | {"tsn": "simpleconv64"},
        recipe=_SIMPLECNN_TINY_RECIPE,
        backbone_kwargs=_simplecnn_kwargs(1, _TINY_WIDTHS),
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
    """The setting ``name`` of :data:`CONFIGS`; an unknown name is a UserError listing them."""
    if name not in CONFIGS:
        raise UserError(f"unknown config {name!r}: choose from {', '.join(CONFIGS)}")
    return CONFIGS[name]


#: The CPU-scale settings (ours): with them, the demo preset trains a missing teacher first.
CPU_SCALE_CONFIGS = (
    "dsprites_tiny",
    "mnist_tiny",
    "digits_tiny",
    "dsprites_simplecnn_tiny",
    "dsprites_simplecnn_tiny_moment",
)

METHODS = ("kf", "kd", "teacher")
#: The KD baseline: ``release`` as the release's ``KDImageClassifier`` (plain cross-entropy, no gradient clipping);
#: ``matched`` with the KF runs' label smoothing 0.1 and gradient clipping.
KD_VARIANTS = ("release", "matched")
PRESETS: dict[str, dict[str, Any]] = {
    # The release's CIFAR-10 KF setting with its recipe (200 epochs, batch 128, SGD 0.1).
    "paper": {"config": "cifar10_wrn28_2_to_r18"},
    # The same setting shortened to 30 epochs (the milestones scale with it).
    "small": {"config": "cifar10_wrn28_2_to_r18", "epochs": 30},
    # Tiny CNNs on the embedded dSprites-lite at 32x32: about a minute on a laptop CPU.
    "demo": {"config": "dsprites_tiny"},
    # The release's disentanglement recipes: dSprites (its .npz; without --data the embedded dSprites-lite) and
    # 3dshapes (its .h5), 5 and 6 factor tasks.
    "dsprites_official": {"config": "dsprites_simplecnn"},
    "shape3d_official": {"config": "shape3d_simplecnn"},
}
#: Presets in which kf and kd without a teacher train one first (into ``out/teacher``), with a CPU-scale config.
TEACHER_FIRST = ("demo",)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a ``knowfactor-train`` run (defaults: KF in the ``paper`` setting).

    :func:`build_config` fills the recipe and the loss weights from the setting where no option sets them.
    """

    method: str = "kf"  # kf: factorize the teacher; kd: the Hinton-KD baseline; teacher: train the teacher
    config: str = "cifar10_wrn28_2_to_r18"  # the setting, a key of CONFIGS
    data: Path | None = None  # the dataset in its real format; None: the setting's embedded data
    tasks: tuple[str, ...] | None = None  # the tasks to learn, in this order; None: every task of the dataset
    teacher: Path | None = None  # a trained teacher (kf and kd)
    train_teacher: bool = False  # kf and kd without a teacher: train one first into out/teacher
    kd_variant: str = "release"  # the KD baseline, one of KD_VARIANTS
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    temperature: float = 10.0  # KD temperature T
    lambda_kd: float = 0.1  # weight of the KD term
    lambda_feat: float = 1.0  # weight of the InfoMax term
    beta: float = 1e-3  # weight of the InfoMin bottleneck on the task features
    official_teacher_bn: bool = False  # the release's teacher BatchNorms on batch statistics
    seed: int = 0
    amp: bool = False

    @property
    def setting(self) -> KFConfig:
        """The setting :attr:`config` names."""
        return get_config(self.config)

    @property
    def grad_clip(self) -> float | None:
        """The gradient-norm clip of the run: the setting's, none for the release's KD baseline."""
        return None if self.method == "kd" and self.kd_variant == "release" else self.setting.recipe.clip

    @property
    def kd_label_smoothing(self) -> float:
        """Label smoothing of the KD baseline's cross-entropy: none in the release, the KF runs' when matched."""
        return self.setting.label_smoothing if self.kd_variant == "matched" else 0.0


def build_config(preset: str = "demo", **overrides: Any) -> TrainConfig:
    """The configuration of ``preset`` with ``overrides`` (None values ignored), the rest from the setting, checked."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    given = {key: value for key, value in overrides.items() if value is not None}
    values = {**PRESETS[preset], **given}
    return _complete({"train_teacher": preset in TEACHER_FIRST and values["config"] in CPU_SCALE_CONFIGS, **values})


def teacher_config(config: TrainConfig) -> TrainConfig:
    """The teacher :func:`knowfactor.engine.fit` trains first for ``config`` (kf or kd without a teacher):
    the same setting, data, tasks and seed, with the setting's recipe."""
    return _complete(
        {"method": "teacher", "config": config.config, "data": config.data, "tasks": config.tasks, "seed": config.seed}
    )


def _complete(values: dict[str, Any]) -> TrainConfig:
    setting = get_config(values.get("config", TrainConfig.config))
    recipe = setting.recipe
    defaults = {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "lr": recipe.lr}
    defaults |= {key: getattr(setting, key) for key in ("temperature", "lambda_kd", "lambda_feat", "beta")}
    values = {**defaults, **values}
    for key in ("data", "teacher"):
        values[key] = Path(values[key]) if values.get(key) is not None else None
    if values.get("tasks") is not None:
        values["tasks"] = tuple(values["tasks"])
    config = TrainConfig(**values)
    check(config)
    return config


def check(config: TrainConfig) -> None:
    """Refuse impossible values with one line naming the option."""
    checks = [
        (config.method in METHODS, f"--method must be one of {', '.join(METHODS)}, got {config.method!r}"),
        (config.kd_variant in KD_VARIANTS, f"--kd-variant must be one of {', '.join(KD_VARIANTS)}"),
        (config.epochs >= 1, f"--epochs must be >= 1, got {config.epochs}"),
        (config.batch_size >= 1, f"--batch-size must be >= 1, got {config.batch_size}"),
        (config.lr > 0, f"--lr must be > 0, got {config.lr}"),
        (config.temperature > 0, f"--temperature must be > 0, got {config.temperature}"),
        (
            min(config.lambda_kd, config.lambda_feat, config.beta) >= 0,
            "--lambda-kd, --lambda-feat and --beta must be >= 0",
        ),
        (
            config.method == "teacher" or config.teacher is not None or config.train_teacher,
            f"--method {config.method} needs --teacher PATH (train one with --method teacher; only the demo "
            f"preset with a CPU-scale config, {', '.join(CPU_SCALE_CONFIGS)}, trains its own)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
