"""The run configuration (one dataclass): LC-Booster's released configs, DivideMix's Table 7, CPU schedules.

A run is picked by a dataset, a noise setting (``sym20 sym50 sym80 sym90 asym40``), a method
(``ce dividemix lcbooster``) and a preset (``paper``: the full CIFAR recipe; ``small``/``demo``: the
embedded MNIST-5k or digits at CPU scale). :func:`build_config` turns them into one :class:`TrainConfig`;
command-line options override single fields. :data:`SETTINGS` names the paper's CIFAR settings
(``c10-sym90`` = CIFAR-10, 90% symmetric noise).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lcbooster.noise import check_noise_ratio
from shared.errors import UserError

METHODS = ("ce", "dividemix", "lcbooster")
NOISE_SETTINGS = ("sym20", "sym50", "sym80", "sym90", "asym40")
CIFAR = ("cifar10", "cifar100")
EMBEDDED = ("mnist5k", "digits")
#: ``paper``: the released recipe (CIFAR only); ``small`` / ``demo``: the embedded schedules, or the CIFAR recipe
#: on a compressed schedule (:data:`CIFAR_SCHEDULE_SCALE`).
PRESETS = ("paper", "small", "demo")
DATASETS = (*CIFAR, *EMBEDDED)
#: ``--setting`` shorthands: ``c10-<noise>`` / ``c100-<noise>`` -> (dataset, noise); no asymmetric CIFAR-100.
SETTINGS = {
    f"c{d.removeprefix('cifar')}-{n}": (d, n)
    for d in CIFAR
    for n in NOISE_SETTINGS
    if d == "cifar10" or "asym" not in n
}

# DivideMix Appendix B, Table 7 (λu); p_threshold is 0.5, or 0.6 at 90% noise. C100 20/50% are unverified.
TABLE7_LAMBDA_U = {
    "cifar10": {"sym20": 0.0, "sym50": 25.0, "sym80": 25.0, "sym90": 50.0, "asym40": 0.0},
    "cifar100": {"sym20": 25.0, "sym50": 150.0, "sym80": 150.0, "sym90": 150.0},
}
# LC-Booster's released relabel thresholds τ (sym20/sym50 were not released: τ of sym80, unverified).
RELABEL_THRESHOLD = {
    "cifar10": {"sym20": 0.8, "sym50": 0.8, "sym80": 0.8, "sym90": 0.8, "asym40": 0.6},
    "cifar100": {"sym20": 0.5, "sym50": 0.5, "sym80": 0.5, "sym90": 0.3},
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (defaults: LC-Booster, CIFAR-10 sym80)."""

    dataset: str = "cifar10"
    noise: str = "sym80"
    method: str = "lcbooster"
    model: str = "preact_resnet18"
    lambda_u: float = 25.0
    lambda_p: float = 1.0
    p_threshold: float = 0.5
    temperature: float = 0.5
    alpha: float = 4.0
    relabel_epochs: list[int] = field(default_factory=lambda: [101])
    relabel_threshold: float = 0.8
    relabel_scope: str = "all"  # or "unlabel": samples unlabelled in either division (official)
    views: str = "ww_ws"  # "dividemix" (w,w / w,w), "ww_ws" (C10), "wwss" (C100)
    strong_aug: str = "rand"  # "rand" RandAugmentMC(2,10)+Cutout, "auto" AutoAugment CIFAR, "digits", "none"
    pad_mode: str = "reflect"
    batch_size: int = 64
    unlabeled_ratio: int = 2
    warmup_batch_size: int = 128
    warmup_epochs: int = 10
    rampup_epochs: float = 16.0
    epochs: int = 300
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: list[int] = field(default_factory=lambda: [150])
    lr_gamma: float = 0.1
    lr_warmup_epochs: int = 0  # linear warm-up from 0.1 x lr (C100)
    gmm_avg_last: int = 5
    gmm_avg_min_ratio: float = 0.9
    drop_last: bool = True
    confidence_penalty: bool = False  # warm-up CE + negative entropy (asymmetric noise)
    faithful_bn_in_guess: bool = True  # trained net in train() mode while guessing (official quirk)
    reset_history_on_relabel: bool = False
    mixup_labeled_only_when_no_lu: bool = True  # λu = 0: LC-Booster mixes labelled rows only (SmoothCE)
    data: Path | None = None  # CIFAR pickles (or CIFAR-style pickles of another dataset); None: embedded
    noise_file: Path | None = None  # noisy labels (.npy (2, N) or DivideMix .json); None: drawn
    noise_seed: int | None = None  # seed of the noise draw; None: ``seed``
    weights: Path | None = None  # local ImageNet state_dict (resnet50)
    seed: int = 0
    amp: bool = False

    @property
    def noise_mode(self) -> str:
        return split_noise(self.noise)[0]

    @property
    def noise_ratio(self) -> float:
        return split_noise(self.noise)[1]


def split_noise(noise: str) -> tuple[str, float]:
    """A noise setting ``sym<percent>`` or ``asym<percent>`` (any percentage 0..100) as (mode, ratio)."""
    mode = noise.rstrip("0123456789")
    digits = noise.removeprefix(mode)
    if mode not in ("sym", "asym") or not digits:
        raise UserError(f"noise setting {noise!r} is not sym<percent> or asym<percent> (e.g. sym90, asym40)")
    return mode, check_noise_ratio(int(digits) / 100.0)


def parse_noise(noise: str) -> str:
    """Check a noise setting (see :func:`split_noise`) and return it."""
    split_noise(noise)
    return noise


def _paper(dataset: str, noise: str, method: str) -> dict:
    """The full recipe: LC-Booster's released config, or DivideMix's Table 7 values."""
    c100 = dataset == "cifar100"
    ratio = split_noise(noise)[1]
    values: dict = {
        "model": "preact_resnet18",
        "lambda_u": TABLE7_LAMBDA_U[dataset].get(noise, 25.0 if not c100 else 150.0),
        "p_threshold": 0.6 if ratio >= 0.9 else 0.5,
        "warmup_epochs": 30 if c100 else 10,
        "epochs": 300,
        "lr_milestones": [150],
        "confidence_penalty": noise.startswith("asym"),
    }
    if method == "lcbooster":
        values |= {
            "relabel_threshold": RELABEL_THRESHOLD[dataset].get(noise, 0.8 if not c100 else 0.5),
            "views": "wwss" if c100 else "ww_ws",
            "strong_aug": "auto" if c100 else "rand",
            "pad_mode": "reflect",
        }
        if c100:
            values |= {"epochs": 400, "lr_milestones": [300], "lr_warmup_epochs": 30}
        if noise.startswith("asym"):
            values |= {"batch_size": 128, "unlabeled_ratio": 1, "lr_milestones": [250]}
    else:
        values |= {"views": "dividemix", "strong_aug": "none", "pad_mode": "constant", "unlabeled_ratio": 1}
        values |= {"relabel_epochs": [], "drop_last": False}
    return values


# CPU schedules on the embedded data: the same algorithm, fewer and shorter epochs. The correction and the lr
# drop keep the paper's places within the co-training phase (epochs 11..300): the correction after 91 of its 290
# epochs (epoch 101), the drop after 141 (epoch 151), so about a sixth of the co-training epochs separate them
# and half of them follow the drop. MNIST-5k's demo is shorter than the digits' (2.8x the images per epoch) so
# that ``lcbooster-train`` stays minutes.
EMBEDDED_SCHEDULES = {
    ("digits", "demo"): {"warmup_epochs": 10, "epochs": 40},
    ("mnist5k", "demo"): {"warmup_epochs": 5, "epochs": 20},
    ("digits", "small"): {"warmup_epochs": 10, "epochs": 70, "rampup_epochs": 16.0},
    ("mnist5k", "small"): {"warmup_epochs": 10, "epochs": 40, "rampup_epochs": 16.0},
}
#: Where the correction and the lr drop fall, as fractions of the co-training epochs (the paper's 91/290, 141/290).
RELABEL_AT, LR_DROP_AT = 91 / 290, 141 / 290


def embedded_epoch(fraction: float, warmup_epochs: int, epochs: int) -> int:
    """The epoch ``fraction`` of the way through co-training (epochs ``warmup_epochs + 1 .. epochs``), >= 1 in."""
    return warmup_epochs + max(1, round(fraction * (epochs - warmup_epochs)))


def _embedded(dataset: str, noise: str, method: str, preset: str, epochs: int | None, warmup: int | None) -> dict:
    """The CPU schedule of ``epochs`` (default: the preset's): correction and lr drop at the paper's places."""
    values = _paper("cifar10", noise, method)
    schedule = EMBEDDED_SCHEDULES[(dataset, "demo" if preset == "demo" else "small")]
    epochs = schedule["epochs"] if epochs is None else epochs
    warmup = schedule["warmup_epochs"] if warmup is None else warmup
    values |= {"rampup_epochs": 5.0, "batch_size": 32, "warmup_batch_size": 64} | schedule
    values |= {"epochs": epochs, "warmup_epochs": warmup, "model": "small_cnn", "confidence_penalty": False}
    values["lr_milestones"] = [embedded_epoch(LR_DROP_AT, warmup, epochs)]
    if method == "lcbooster":  # the paper's weak/strong views: translate + cutout + jitter for 8x8 / 28x28 digits
        values |= {"relabel_epochs": [embedded_epoch(RELABEL_AT, warmup, epochs)], "strong_aug": "digits"}
        values["pad_mode"] = "constant"
    return values


#: CIFAR ``small`` / ``demo``: the paper's schedule compressed uniformly (ours): every epoch count (warm-up,
#: correction, lr drop, λu ramp) times this factor, so the correction still comes at 1/3 and the drop at 1/2.
CIFAR_SCHEDULE_SCALE = {"paper": 1.0, "small": 1 / 3, "demo": 1 / 15}


def _compressed(values: dict, scale: float) -> dict:
    """The schedule of ``values`` with every epoch count times ``scale`` (at least 1 epoch each)."""
    if scale == 1.0:
        return values
    base = TrainConfig(**values)

    def epochs(count: float) -> int:
        return max(1, round(count * scale))

    return values | {
        "epochs": epochs(base.epochs),
        "warmup_epochs": epochs(base.warmup_epochs),
        "lr_milestones": [epochs(e) for e in base.lr_milestones],
        "relabel_epochs": [epochs(e) for e in base.relabel_epochs],
        "lr_warmup_epochs": round(base.lr_warmup_epochs * scale),
        "rampup_epochs": base.rampup_epochs * scale,
    }


def build_config(dataset: str, noise: str, method: str, preset: str, **overrides) -> TrainConfig:
    """The configuration of (dataset, noise, method, preset) with ``overrides`` (None values ignored)."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if preset == "paper" and dataset in EMBEDDED:
        raise UserError("--preset paper is the CIFAR recipe: pass --setting c10-sym90 (or --dataset) and --data")
    parse_noise(noise)
    if noise.startswith("asym") and dataset == "cifar100":
        raise UserError("there is no asymmetric-noise protocol for CIFAR-100: use a sym setting")
    if dataset in CIFAR:
        values = _compressed(_paper(dataset, noise, method), CIFAR_SCHEDULE_SCALE[preset])
    else:
        values = _embedded(dataset, noise, method, preset, overrides.get("epochs"), overrides.get("warmup_epochs"))
    values |= {key: value for key, value in overrides.items() if value is not None}
    config = TrainConfig(dataset=dataset, noise=noise, method=method, **values)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Refuse impossible options; warn when λu disagrees with DivideMix's Table 7 (a common pitfall)."""
    if config.epochs < 1 or config.warmup_epochs < 0 or config.batch_size < 1 or config.unlabeled_ratio < 1:
        raise UserError("--epochs and --batch-size must be >= 1, --warmup-epochs >= 0, --unlabeled-ratio >= 1")
    if config.warmup_epochs >= config.epochs and config.method != "ce":
        raise UserError(f"--warmup-epochs {config.warmup_epochs} leaves no co-training epoch of {config.epochs}")
    if not 0.0 <= config.p_threshold <= 1.0 or not 0.0 <= config.relabel_threshold <= 1.0:
        raise UserError("--p-threshold and --relabel-threshold must lie in [0, 1]")
    if config.lr <= 0 or config.temperature <= 0 or config.alpha < 0 or config.lambda_u < 0:
        raise UserError("--lr and --temperature must be > 0, --alpha and --lambda-u >= 0")
    never = [e for e in config.relabel_epochs if not config.warmup_epochs < e <= config.epochs]
    if config.method == "lcbooster" and never:
        raise UserError(
            f"the correction at epoch {', '.join(map(str, never))} never fires: co-training runs epochs "
            f"{config.warmup_epochs + 1}..{config.epochs}; pass --relabel-epochs within them"
        )
    if config.relabel_scope not in ("all", "unlabel"):
        raise UserError(f"--relabel-scope must be all or unlabel, not {config.relabel_scope!r}")
    dataset = "cifar10" if config.dataset in EMBEDDED else config.dataset
    expected = TABLE7_LAMBDA_U.get(dataset, {}).get(config.noise)
    if config.method != "ce" and expected is not None and config.lambda_u != expected:
        warnings.warn(
            f"lambda_u={config.lambda_u:g} differs from DivideMix Table 7 ({expected:g} for {dataset} "
            f"{config.noise}); per-setting values matter (see the official DivideMix repository's issues)",
            stacklevel=2,
        )
