"""The run configuration (one dataclass) of TBVS training, its presets and :func:`build_config`.

Defaults are the official recipe (Zhao et al., CVPR 2022, ``hyper_para.py`` stage 1 and ``model/model.py``):
Adam without weight decay at lr 2e-5 for 30,000 iterations, x0.1 at iterations 25,000 and 28,000, batch 8
clips of 3 frames at 320x320, references up to 5 frames away, BERT-base text features and ImageNet ResNet
backbones. ``small`` is the synthetic-tiny learning experiment (input 96, tiny CNN backbones and text
encoder, Adam 1e-3 for 2,000 iterations, x0.1 at 80%, as random-init networks need a larger step than the
fine-tuning lr of the paper); ``demo`` the same network made narrower and trained for fewer iterations, so
that a run takes minutes on a CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import UserError
from shared.report import plain_json
from tbvs.data import PREPARE_FLOWS
from tbvs.models import ARCHS, TBVSArch, build_arch, variant_overrides

PRESETS = ("paper", "small", "demo")
DATASETS = ("a2d", "jhmdb")
TEXT_ENCODERS = ("tiny", "hf-bert")
BINARIZE = ("relative", "absolute")

#: Where the lr drops, as fractions of the iterations: the official 25k and 28k of 30k; 80% at CPU scale.
MILESTONE_FRACTIONS = {"paper": (25_000 / 30_000, 28_000 / 30_000), "small": (0.8,), "demo": (0.8,)}

_CPU_SCALE: dict[str, Any] = {
    "input_size": 96,
    "max_ref_offset": 3,
    "max_tokens": 12,
    "text_encoder": "tiny",
    "lr": 1e-3,
    "batch_size": 8,
}
_PRESET_VALUES: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {**_CPU_SCALE, "arch": "small", "iterations": 2000, "eval_every": 500, "checkpoint_every": 250},
    "demo": {**_CPU_SCALE, "arch": "demo", "iterations": 600, "eval_every": 0, "checkpoint_every": 200},
}
PRESET_HELP = {
    "paper": "the official A2D recipe (ResNet-101/34, BERT, 320 px, 30k iterations at lr 2e-5)",
    "small": "synthetic-tiny: 96 px, tiny backbones and text encoder, 2,000 iterations at lr 1e-3",
    "demo": "the narrower synthetic-tiny network for 600 iterations (minutes on a CPU)",
}


@dataclass
class TrainConfig:
    """Everything that defines a TBVS training run (defaults: the official A2D recipe)."""

    # data: a prepared TBVS layout, or a raw A2D Sentences folder to prepare; neither = the synthetic set
    data: Path | None = None
    raw: Path | None = None
    dataset: str = "a2d"
    flow: str = "farneback"  # flow of the synthetic set (or of --raw): farneback, horn_schunck, oracle, none
    synthetic_train_videos: int = 160
    synthetic_test_videos: int = 40
    synthetic_size: int = 96
    synthetic_frames: int = 9
    synthetic_seed: int = 0
    # model
    variant: str = "B+M+T+L+A"
    arch: str = "paper"  # a size of tbvs.models.ARCHS
    arch_overrides: dict[str, Any] = field(default_factory=dict)  # TBVSArch fields
    input_size: int = 320
    clip_len: int = 3
    max_ref_offset: int = 5
    color_jitter: tuple[float, ...] = (0.1, 0.05, 0.05, 0.0)
    text_encoder: str = "hf-bert"
    text_model: Path | None = None  # local BERT directory for hf-bert
    text_layers: int = 1  # TinyTextEncoder depth
    max_tokens: int = 20
    rgb_weights: Path | None = None
    flow_weights: Path | None = None
    vf_pixels: int | None = None  # None: the full P x P vision-flow affinity of the official loss
    # faithful quirks of the release (True / 'rgb'): 1e-9 attention-mask fill, RGB-sourced LGFF flow attention,
    # frozen BERT word/position embeddings
    faithful_mask: bool = True
    flow_attn_source: str = "rgb"
    freeze_text_embeddings: bool = True
    # optimisation
    lr: float = 2e-5
    iterations: int = 30_000
    milestones: tuple[int, ...] = (25_000, 28_000)
    gamma: float = 0.1
    batch_size: int = 8  # clips per optimizer step, over all processes
    # evaluation, logging, checkpoints
    eval_every: int = 2000  # iterations between test evaluations; 0 = only at the end
    eval_batch_size: int = 8
    binarize: str = "relative"
    log_every: int = 25
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    workers: int = 0
    seed: int = 0
    amp: bool = False

    def build_arch(self, text_dim: int) -> TBVSArch:
        """The network's :class:`TBVSArch`: the ``arch`` size, the ``variant`` and this run's fields."""
        values = {
            "input_size": self.input_size,
            "vf_pixels": self.vf_pixels,
            "faithful_mask": self.faithful_mask,
            "flow_attn_source": self.flow_attn_source,
            "text_dim": text_dim,
        }
        clip = variant_overrides(self.variant).get("clip_len", self.clip_len)
        return build_arch(self.arch, self.variant, clip_len=clip, **{**values, **self.arch_overrides})

    @property
    def synthetic(self) -> bool:
        """Whether the run trains on the generated synthetic set."""
        return self.data is None and self.raw is None


def milestones_for(preset: str, iterations: int) -> tuple[int, ...]:
    """The lr milestones of ``preset`` scaled to ``iterations`` (the official 25k/28k at 30k)."""
    return tuple(max(1, round(f * iterations)) for f in MILESTONE_FRACTIONS[preset])


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with paths as ``Path`` and sequences as tuples (from the CLI or from JSON)."""
    values = dict(values)
    for name in ("data", "raw", "text_model", "rgb_weights", "flow_weights"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    for name in ("milestones", "color_jitter"):
        if name in values:
            values[name] = tuple(values[name])
    return values


def build_config(preset: str = "paper", **overrides: Any) -> TrainConfig:
    """The configuration of ``preset`` with ``overrides`` (None = not given); impossible values: UserError.

    Without explicit ``milestones`` the lr drops stay at the preset's fractions of ``iterations``.
    """
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise UserError(f"unknown configuration field(s): {', '.join(unknown)}")
    values = dict(_PRESET_VALUES[preset])
    values |= {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("milestones") is None:
        values["milestones"] = milestones_for(preset, values.get("iterations", TrainConfig.iterations))
    config = TrainConfig(**_typed(values))
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Refuse impossible options with a one-line :class:`UserError`."""
    if config.iterations < 1:
        raise UserError(f"--iterations must be at least 1, got {config.iterations}")
    if config.batch_size < 1 or config.eval_batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if config.lr <= 0 or not 0 < config.gamma <= 1:
        raise UserError("--lr must be > 0 and the lr decay gamma in (0, 1]")
    if any(m < 1 for m in config.milestones) or list(config.milestones) != sorted(config.milestones):
        raise UserError(f"lr milestones must be increasing positive iterations, got {list(config.milestones)}")
    if config.eval_every < 0 or config.log_every < 1 or config.checkpoint_every < 1 or config.keep_checkpoints < 1:
        raise UserError("eval_every must be >= 0; log_every, checkpoint_every and keep_checkpoints >= 1")
    if config.workers < 0:
        raise UserError(f"--workers must be >= 0, got {config.workers}")
    if config.dataset not in DATASETS:
        raise UserError(f"unknown dataset {config.dataset!r}: choose a2d or jhmdb")
    if config.dataset == "jhmdb":
        raise UserError(
            "J-HMDB Sentences has no training split (the protocol evaluates the A2D model): train on A2D and "
            "evaluate with tbvs-eval --dataset jhmdb"
        )
    if config.data is not None and config.raw is not None:
        raise UserError("pass either --data (a prepared folder) or --raw (raw A2D Sentences to prepare), not both")
    if config.flow not in PREPARE_FLOWS:
        raise UserError(f"unknown flow {config.flow!r}: choose one of {', '.join(PREPARE_FLOWS)}")
    if config.synthetic:
        if config.synthetic_train_videos < 1 or config.synthetic_test_videos < 1:
            raise UserError("the synthetic set needs at least one train and one test video")
        if not 32 <= config.synthetic_size <= 320 or config.synthetic_frames < 5:
            raise UserError("synthetic videos must be 32..320 px and at least 5 frames long")
    if config.arch not in ARCHS:
        raise UserError(f"unknown architecture {config.arch!r}: choose one of {', '.join(ARCHS)}")
    try:
        variant_overrides(config.variant)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    bad = sorted(set(config.arch_overrides) - {f.name for f in dataclasses.fields(TBVSArch)})
    if bad:
        raise UserError(f"unknown architecture field(s) {', '.join(bad)}")
    if config.input_size < 32 or config.input_size % 16:
        raise UserError(f"--input-size must be a multiple of 16 (output stride 16), >= 32; got {config.input_size}")
    if config.clip_len not in (1, 3):
        raise UserError(f"clip length must be 1 or 3, got {config.clip_len}")
    if config.max_ref_offset < 1 or config.max_tokens < 3:
        raise UserError("max_ref_offset must be >= 1 and max_tokens >= 3")
    if config.text_encoder not in TEXT_ENCODERS:
        raise UserError(f"unknown text encoder {config.text_encoder!r}: choose tiny or hf-bert")
    if config.text_encoder == "hf-bert" and config.text_model is None:
        raise UserError(
            "the paper's text encoder is BERT-base: pass --text-model DIR (a local BERT directory), "
            "or --preset small/demo for the offline tiny encoder"
        )
    if config.text_encoder == "tiny" and config.text_model is not None:
        raise UserError("--text-model is read by the hf-bert encoder only: drop it or use --text-encoder hf-bert")
    if config.binarize not in BINARIZE:
        raise UserError(f"unknown binarisation {config.binarize!r}: choose relative or absolute")
    if config.flow_attn_source not in ("rgb", "flow"):
        raise UserError(f"flow_attn_source must be rgb or flow, got {config.flow_attn_source!r}")
    if config.vf_pixels is not None and config.vf_pixels < 2:
        raise UserError(f"--vf-pixels must be at least 2, got {config.vf_pixels}")
    try:
        arch = config.build_arch(64)
    except (ValueError, TypeError) as exc:
        raise UserError(f"impossible architecture: {exc}") from None
    for name, path in (("--rgb-weights", config.rgb_weights), ("--flow-weights", config.flow_weights)):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{name} {path} is not a file: pass a local ImageNet .pth")
    if config.rgb_weights is not None and arch.rgb_backbone == "tiny":
        raise UserError("--rgb-weights loads ImageNet ResNet-101 weights: use --preset paper (tiny backbone here)")
    if config.flow_weights is not None and not arch.flow_backbone.startswith("resnet"):
        raise UserError("--flow-weights loads ImageNet ResNet-34 weights: use --preset paper (tiny backbone here)")


def to_plain(config: TrainConfig) -> dict[str, Any]:
    """The configuration as JSON-able plain values (paths as strings, tuples as lists)."""
    return plain_json(config)


def from_plain(values: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`to_plain` (a saved run's configuration; not validated again)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in values.items() if k in names}
    return TrainConfig(**_typed(values))
