"""The run configuration of ``iformer-train`` (one dataclass) and its presets.

``paper`` is the official ImageNet recipe (timm 0.5.4's ``train.py`` with the released ``args.yaml``: AdamW
1e-3, batch 128 on 8 GPUs, 300 + 10 cooldown epochs, RandAugment, mixup/cutmix, label smoothing, random
erasing); ``small`` the same recipe shortened for an ImageFolder subset; ``demo`` the ``tiny_test`` model on
the embedded digits at 32x32. Per-size values of the release (drop path, final learning rate, gradient
clipping) fill whatever the preset and the user leave unset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iformer.models import MODEL_CONFIGS
from shared.errors import UserError

#: Per-size values of the released ``args.yaml``; used when no option sets them.
SIZE_RECIPES = {
    "small": {"drop_path": 0.2, "min_lr": 1e-6, "clip_grad": None},
    "base": {"drop_path": 0.4, "min_lr": 1e-5, "clip_grad": 1.0},
    "large": {"drop_path": 0.5, "min_lr": 1e-5, "clip_grad": 1.0},
}
_OTHER_SIZES = {"drop_path": 0.0, "min_lr": 1e-6, "clip_grad": None}
_IMAGENET_RECIPE = {
    "lr": 1e-3,
    "warmup_lr": 1e-6,
    "warmup_epochs": 5,
    "cooldown_epochs": 10,
    "weight_decay": 0.05,
    "mixup": 0.8,
    "cutmix": 1.0,
    "smoothing": 0.1,
    "aa": "rand-m9-mstd0.5-inc1",
    "reprob": 0.25,
    "img_size": 224,
}
PRESETS: dict[str, dict[str, Any]] = {
    # 300 + 10 cooldown epochs, 128 images per GPU on 8 GPUs (global batch 1024), as released.
    "paper": {"model": "iformer_small", "epochs": 300, "batch_size": 128, **_IMAGENET_RECIPE},
    # The same recipe shortened for an ImageFolder subset.
    "small": {"model": "iformer_small", "epochs": 100, "batch_size": 64, **_IMAGENET_RECIPE},
    # tiny_test on the embedded digits at 32x32: seconds on a laptop CPU.
    "demo": {
        "model": "tiny_test",
        "epochs": 8,
        "batch_size": 64,
        "lr": 2e-3,
        "min_lr": 1e-5,
        "warmup_lr": 1e-6,
        "warmup_epochs": 0,
        "cooldown_epochs": 0,
        "weight_decay": 0.05,
        "mixup": 0.0,
        "cutmix": 0.0,
        "smoothing": 0.0,
        "aa": "none",
        "reprob": 0.0,
        "img_size": 32,
        "drop_path": 0.0,
    },
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines an ``iformer-train`` run (defaults: the ``paper`` recipe of iFormer-S)."""

    model: str = "iformer_small"
    data: Path | None = None  # ImageFolder root with train/ and val/; None: the embedded digits
    img_size: int = 224
    crop_pct: float = 0.9
    epochs: int = 300
    cooldown_epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_lr: float = 1e-6
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    decay_pos_embed: bool = True  # the release decays pos_embed1..4 (its no_weight_decay names none of them)
    drop_path: float = 0.2
    clip_grad: float | None = None
    mixup: float = 0.8
    cutmix: float = 1.0
    smoothing: float = 0.1
    aa: str = "rand-m9-mstd0.5-inc1"
    reprob: float = 0.25
    weights: Path | None = None  # initial weights (official .pth or a checkpoint), new head
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # architecture overrides (e.g. mlp_ratio)
    seed: int = 0
    amp: bool = False
    workers: int = 0
    eval_every: int = 1
    keep_checkpoints: int = 2

    @property
    def total_epochs(self) -> int:
        """Training epochs plus the cooldown epochs at ``min_lr``."""
        return self.epochs + self.cooldown_epochs

    @property
    def auto_augment(self) -> str | None:
        return None if self.aa in (None, "none") else self.aa


def size_family(model: str) -> str | None:
    """``small``, ``base`` or ``large`` for the released sizes, None for ``tiny_test``."""
    family = model.removeprefix("iformer_").removesuffix("_384")
    return family if family in SIZE_RECIPES else None


def build_config(preset: str = "demo", **overrides: Any) -> TrainConfig:
    """The configuration of ``preset`` with ``overrides`` (None values ignored), then the size recipe, checked."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    model = values.get("model", TrainConfig.model)
    if model not in MODEL_CONFIGS:
        raise UserError(f"unknown model {model!r}: choose one of {', '.join(MODEL_CONFIGS)}")
    family = size_family(model)
    for key, value in (SIZE_RECIPES[family] if family else _OTHER_SIZES).items():
        values.setdefault(key, value)
    config = TrainConfig(**values)
    check(config)
    return config


def check(config: TrainConfig) -> None:
    """Refuse impossible values with one line naming the option."""
    checks = [
        (config.epochs >= 1, f"--epochs must be >= 1, got {config.epochs}"),
        (config.cooldown_epochs >= 0, f"--cooldown-epochs must be >= 0, got {config.cooldown_epochs}"),
        (config.batch_size >= 1, f"--batch-size must be >= 1, got {config.batch_size}"),
        (config.lr > 0, f"--lr must be > 0, got {config.lr}"),
        (0 <= config.drop_path < 1, f"--drop-path must be in [0, 1), got {config.drop_path}"),
        (0 <= config.smoothing < 1, f"--smoothing must be in [0, 1), got {config.smoothing}"),
        (config.mixup >= 0 and config.cutmix >= 0, "--mixup and --cutmix must be >= 0"),
        (config.img_size >= 16, f"--img-size must be >= 16, got {config.img_size}"),
        (config.eval_every >= 1, f"--eval-every must be >= 1, got {config.eval_every}"),
        (config.workers >= 0, f"--workers must be >= 0, got {config.workers}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
