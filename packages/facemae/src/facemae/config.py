"""The run configurations of FaceMAE's two training stages and their presets (``paper``, ``small``, ``demo``).

Stage ``mae`` (:class:`MAEConfig`) trains the masked autoencoder with instance relation matching; stage ``fr``
(:class:`FRConfig`) trains a face recogniser on a (released) face set. :func:`build_config` fills a preset and
applies the options given. The paper's full text is not public, so the FaceMAE-specific values are ours:
the MAE recipe is facebookresearch/mae ``PRETRAIN.md`` (AdamW, base lr 1.5e-4 per 256 images, weight decay
0.05, warm-up then half-cycle cosine) and the recognition recipe is insightface ``arcface_torch``'s
CASIA-WebFace config (SGD, lr 0.1 for a batch of 512, momentum 0.9, weight decay 5e-4, 34 epochs, x0.1 at
20, 28 and 32).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from facemae.losses import IRM_KINDS, LOSS_ON
from facemae.models import COMPOSE_MODES, IRESNET_CONFIGS, MAE_CONFIGS, MARGINS
from shared.errors import UserError

STAGES = ("mae", "fr")
PRESETS = ("paper", "small", "demo")


@dataclass
class FRConfig:
    """Stage ``fr``: an IResNet with a margin-softmax head (defaults: arcface_torch on CASIA-WebFace)."""

    network: str = "iresnet50"
    face_size: int = 112
    margin: str = "arcface"
    s: float = 64.0
    m: float = 0.5  # the additive margin: m2 of ArcFace, m3 of CosFace
    epochs: int = 34
    lr_steps: list[int] = field(default_factory=lambda: [20, 28, 32])
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 512
    eval_every: int = 1  # epochs between verification passes (the last epoch is always evaluated)
    data: Path | None = None  # identity folders or a RecordIO pack; None: the synthetic faces
    val: list[Path] = field(default_factory=list)  # verification .bin files; none: the synthetic pairs (no data)
    seed: int = 0
    amp: bool = False

    @property
    def margins(self) -> tuple[float, float, float]:
        """The combined margin (m1, m2, m3) of ``margin`` with ``m`` in its place."""
        return (1.0, self.m, 0.0) if self.margin == "arcface" else (1.0, 0.0, self.m)


@dataclass
class MAEConfig:
    """Stage ``mae``: FaceMAE = MAE reconstruction + ``lambda_irm`` x IRM (defaults: the ``paper`` preset)."""

    model: str = "mae_vit_base_patch16"
    face_size: int = 112  # faces are read at this size and resized to the MAE's input (224 for base)
    mask_ratio: float = 0.75
    lambda_irm: float = 1.0
    irm: str = "kl"
    tau: float = 0.1
    compose: str = "paste"
    loss_on: str = "masked"
    epochs: int = 800
    warmup_epochs: int = 40
    identities_per_batch: int = 1024
    images_per_identity: int = 4
    blr: float = 1.5e-4  # lr = blr x batch / 256
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    phi_preset: str = "paper"  # the fr recipe of the frozen IRM encoder phi when it is trained here
    phi_epochs: int = 34
    phi_val: list[Path] = field(default_factory=list)  # verification .bin files for phi (as FRConfig.val)
    data: Path | None = None  # the source faces D_src; None: the synthetic faces
    weights: Path | None = None  # an MAE checkpoint to start from (official keys)
    irm_weights: Path | None = None  # a trained phi (an fr run's final.pt); None: trained on D_src
    seed: int = 0
    amp: bool = False

    @property
    def batch_size(self) -> int:
        return self.identities_per_batch * self.images_per_identity

    @property
    def lr(self) -> float:
        return self.blr * self.batch_size / 256


TrainConfig = MAEConfig | FRConfig

_MAE_PRESETS = {
    "paper": {},
    "small": {
        "model": "mae_vit_small_patch8",
        "epochs": 100,
        "warmup_epochs": 10,
        "identities_per_batch": 8,
        "phi_preset": "small",
        "phi_epochs": 20,
    },
    # A few hundred steps: MAE's base lr learns nothing in them (lr 2e-3 here). At lambda_irm = 1 IRM is 20-30x
    # L_rec on 32 px faces and stalls (a higher L_IRM than plain MAE on the training faces); 0.1 lowers it.
    "demo": {
        "model": "mae_vit_tiny_patch4",
        "face_size": 32,
        "epochs": 8,
        "warmup_epochs": 1,
        "blr": 1.6e-2,
        "lambda_irm": 0.1,
        "identities_per_batch": 8,
        "phi_preset": "demo",
        "phi_epochs": 6,
    },
}
_FR_PRESETS = {
    "paper": {},
    "small": {"network": "iresnet18", "epochs": 20, "lr_steps": [12, 16, 18], "batch_size": 128, "lr": 0.05},
    # s = 64, m = 0.5 does not converge on a few hundred tiny faces; s = 32, m = 0.3 does
    "demo": {
        "network": "iresnet_mini",
        "face_size": 32,
        "s": 32.0,
        "m": 0.3,
        "epochs": 8,
        "lr_steps": [6],
        "batch_size": 32,
        "lr": 0.05,
    },
}


def build_config(stage: str, preset: str = "demo", **overrides) -> TrainConfig:
    """The configuration of ``stage`` (``mae`` or ``fr``) at ``preset`` with ``overrides`` (None values ignored)."""
    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    kind, presets = (MAEConfig, _MAE_PRESETS) if stage == "mae" else (FRConfig, _FR_PRESETS)
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UserError(f"stage {stage} has no option {', '.join(unknown)}")
    values = presets[preset] | {key: value for key, value in overrides.items() if value is not None}
    if stage == "fr" and "epochs" in values and overrides.get("lr_steps") is None:  # the schedule, rescaled
        steps, epochs = presets[preset].get("lr_steps", FRConfig().lr_steps), presets[preset].get("epochs", 34)
        values["lr_steps"] = sorted({max(1, round(e * values["epochs"] / epochs)) for e in steps})
    if preset == "paper" and values.get("data") is None:
        raise UserError("--preset paper is the recipe for real faces at 112x112: pass --data (or use small/demo)")
    config = kind(**values)
    if stage == "mae":
        validate_mae(config)
    else:
        validate_fr(config)
    return config


def phi_config(config: MAEConfig) -> FRConfig:
    """The recipe of the frozen IRM encoder phi: a recogniser trained on D_src's originals (``phi_preset``)."""
    steps = [e for e in _FR_PRESETS[config.phi_preset].get("lr_steps", FRConfig().lr_steps) if e < config.phi_epochs]
    return build_config(
        "fr",
        config.phi_preset,
        face_size=config.face_size,
        epochs=config.phi_epochs,
        lr_steps=steps,
        batch_size=min(_FR_PRESETS[config.phi_preset].get("batch_size", FRConfig().batch_size), config.batch_size),
        data=config.data,
        val=config.phi_val,
        eval_every=config.phi_epochs,
        seed=config.seed,
        amp=config.amp,
    )


def _mae_input(config: MAEConfig) -> tuple[int, int]:
    """(input size, patch size) of the configuration's MAE."""
    sizes = MAE_CONFIGS[config.model]
    return sizes["img_size"], sizes["patch_size"]


def validate_mae(config: MAEConfig) -> None:
    """Refuse impossible stage-``mae`` options."""
    if config.model not in MAE_CONFIGS:
        raise UserError(f"unknown MAE {config.model!r}: choose one of {', '.join(MAE_CONFIGS)}")
    if not 0 < config.mask_ratio < 1:
        raise UserError(f"--mask-ratio must lie in (0, 1), got {config.mask_ratio}")
    size, patch = _mae_input(config)
    if int(size // patch) ** 2 * (1 - config.mask_ratio) < 1:
        raise UserError(f"--mask-ratio {config.mask_ratio} leaves no visible patch of {(size // patch) ** 2}")
    for name, allowed in (("irm", IRM_KINDS), ("compose", COMPOSE_MODES), ("loss_on", LOSS_ON)):
        if getattr(config, name) not in allowed:
            raise UserError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}")
    if config.lambda_irm < 0 or config.tau <= 0:
        raise UserError("--lambda-irm must be >= 0 and --tau > 0")
    if config.epochs < 1 or not 0 <= config.warmup_epochs < config.epochs:
        raise UserError(f"need 0 <= --warmup-epochs < --epochs, got {config.warmup_epochs} and {config.epochs}")
    if config.identities_per_batch < 1 or config.images_per_identity < 1 or config.batch_size < 3:
        raise UserError("a batch needs >= 3 images (identities per batch x images per identity)")
    if config.blr <= 0 or config.min_lr < 0 or config.weight_decay < 0 or config.face_size < 16:
        raise UserError("--blr must be > 0, --min-lr and --weight-decay >= 0, --face-size >= 16")
    if config.phi_preset not in PRESETS or config.phi_epochs < 1:
        raise UserError(f"phi_preset must be one of {', '.join(PRESETS)} and phi_epochs >= 1")
    if config.lambda_irm > 0 and config.face_size % 16:
        raise UserError(f"the IRM encoder (IResNet) needs --face-size a multiple of 16, got {config.face_size}")
    if config.compose == "pred" and config.loss_on == "masked":
        warnings.warn(
            "--compose pred releases the decoder's visible patches too, which --loss-on masked leaves "
            "unsupervised: use --loss-on all with it",
            stacklevel=2,
        )


def validate_fr(config: FRConfig) -> None:
    """Refuse impossible stage-``fr`` options."""
    if config.network not in IRESNET_CONFIGS:
        raise UserError(f"unknown network {config.network!r}: choose one of {', '.join(IRESNET_CONFIGS)}")
    if config.margin not in MARGINS:
        raise UserError(f"--margin must be one of {', '.join(MARGINS)}, got {config.margin!r}")
    if config.face_size < 16 or config.face_size % 16:
        raise UserError(f"IResNet needs --face-size a positive multiple of 16, got {config.face_size}")
    if config.s <= 0 or config.m < 0 or config.lr <= 0 or config.momentum < 0 or config.weight_decay < 0:
        raise UserError("--s and --lr must be > 0, --m, --momentum and --weight-decay >= 0")
    if config.epochs < 1 or config.batch_size < 2 or config.eval_every < 1:
        raise UserError("--epochs and --eval-every must be >= 1, --batch-size >= 2")
    late = [e for e in config.lr_steps if not 0 < e <= config.epochs]
    if late:
        raise UserError(f"--lr-steps {late} lie outside the epochs 1..{config.epochs}")


def plain(config: TrainConfig) -> dict:
    """The configuration as JSON values (paths as strings), with its stage."""

    def value(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list | tuple):
            return [value(x) for x in v]
        return v

    stage = "mae" if isinstance(config, MAEConfig) else "fr"
    return {"stage": stage} | {k: value(v) for k, v in dataclasses.asdict(config).items()}
