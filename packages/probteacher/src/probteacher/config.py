"""The run configuration (one dataclass) of Probabilistic Teacher training, its tasks, presets and :func:`build_config`.

Defaults are the official recipe (Chen et al., ICML 2022; ``configs/pt/final_*.yaml`` over
``Guassian-RCNN-VGG.yaml`` and detectron2's defaults, run by ``train.sh``): VGG-16 Faster R-CNN with Gaussian heads,
SGD lr 0.016, momentum 0.9, weight decay 1e-4, linear warm-up over 400 iterations from 0.001, 30,000 iterations of
16 source + 16 target images, burn-in 4,000, EMA keep rate 0.9996, grad-norm clip 10, tau 0.5/0.5 (what ``train.sh``
runs; the yaml says 0.25), EFL with lambda 0.5/0.5, learnable anchors, scale-down paste, a checkpoint every 4,000 and
an evaluation every 400 iterations. ``small`` is the tiny detector on the synthetic ``toy-fog`` pair (batch 4 + 4,
1,500 burn-in + 1,500 adaptation iterations, AdamW lr 1e-3, warm-up 100, EMA 0.99: 0.9996 would barely move the
teacher in a few hundred steps); ``demo`` the same detector on a smaller toy set, batch 2 + 2, lr 2e-3, 1,100
burn-in + 100 adaptation iterations (minutes on a CPU: the budget goes to a burn-in long enough for a source
detector above 0.8 AP50; an under-trained source-only baseline would flatter the adaptation).

The release differs from its own documentation in a few places; each is a field here. ``compat="official"`` switches
all of them to the release's behaviour, ``"correct"`` (the default) to the corrected one, and a field given
explicitly wins over either.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probteacher.models import SIZES, DetectorConfig
from probteacher.toy import DIGIT_CLASSES, FOG_LEVELS, OBJECT_KINDS, TOY_CLASSES
from shared.errors import UserError
from shared.report import plain_json

PRESETS = ("paper", "small", "demo")
METHODS = ("pt", "source-only")
METRICS = ("voc12", "voc07", "coco")
COMPAT = ("correct", "official")

#: The classes of the official tasks, in the official order (the index is the label; background is separate).
CITYSCAPES_CLASSES = ("truck", "car", "rider", "person", "train", "motorcycle", "bicycle", "bus")
CAR = ("car",)


@dataclass(frozen=True)
class Task:
    """One adaptation task: its class list, and for the synthetic pairs the generator's scale shift."""

    classes: tuple[str, ...]
    description: str
    toy: bool = False
    scale_shift: float = 1.0


TASKS: dict[str, Task] = {
    "c2f": Task(CITYSCAPES_CLASSES, "Cityscapes -> Foggy Cityscapes (all three fog densities, as the release)"),
    "c2f-0.02": Task(CITYSCAPES_CLASSES, "Cityscapes -> Foggy Cityscapes, densest fog (beta 0.02) only"),
    "c2b": Task(CITYSCAPES_CLASSES, "Cityscapes -> BDD100K (the release registers BDD with the 8 Cityscapes classes)"),
    "k2c": Task(CAR, "KITTI -> Cityscapes, car"),
    "s2c": Task(CAR, "Sim10K -> Cityscapes, car"),
    "toy-fog": Task(TOY_CLASSES, "synthetic shapes over photos -> the same under fog (generated once)", toy=True),
    "toy-fog-scale": Task(
        TOY_CLASSES, "toy-fog with target objects 1.8x larger (anchor adaptation)", toy=True, scale_shift=1.8
    ),
}

#: The values ``compat="official"`` / ``"correct"`` give the flags (see :class:`TrainConfig`).
COMPAT_VALUES: dict[str, dict[str, Any]] = {
    "official": {
        "rpn_bg_prob": "official",
        "rpn_sigma_rescore": "official",
        "teacher_var_space": "official",
        "anchor_weight_decay": 1e-4,
        "scale_down_paste": True,
    },
    "correct": {
        "rpn_bg_prob": "correct",
        "rpn_sigma_rescore": "correct",
        "teacher_var_space": "rescaled",
        "anchor_weight_decay": 0.0,
        "scale_down_paste": True,
    },
}

OPTIMIZERS = ("sgd", "adamw")
#: The CPU scale of the toy presets: AdamW (random-init networks learn far faster than with the release's SGD;
#: the anchors keep their own step in pixels), EMA 0.99 (0.9996 would barely move the teacher in a few hundred
#: steps), 128 sampled ROIs per image (at most 5 objects per toy image).
_TOY_SCALE: dict[str, Any] = {
    "task": "toy-fog",
    "detector": "tiny",
    "detector_overrides": {"roi_batch_size_per_image": 128},
    "optimizer": "adamw",
    "lr": 1e-3,
    "anchor_lr": 0.05,
    "warmup_iters": 100,
    "ema_keep_rate": 0.99,
}
_PRESET_VALUES: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {
        **_TOY_SCALE,
        "batch_source": 4,
        "batch_target": 4,
        "burn_in": 1500,
        "iterations": 3000,
        "eval_every": 500,
        "checkpoint_every": 500,
    },
    "demo": {
        **_TOY_SCALE,
        "batch_source": 2,
        "batch_target": 2,
        "lr": 2e-3,
        "burn_in": 1100,
        "iterations": 1200,
        "eval_every": 0,
        "checkpoint_every": 200,
        "toy_source_train": 600,
        "toy_target_train": 600,
        "toy_test": 150,
    },
}
PRESET_HELP = {
    "paper": "the official recipe (VGG-16, 30k iterations, burn-in 4k, batch 16+16, lr 0.016) on --task's data",
    "small": "tiny detector on toy-fog (1,500 images per train split): burn-in 1,500 + 1,500 adaptation iterations, "
    "batch 4+4",
    "demo": "tiny detector on a smaller toy-fog (600 per train split): burn-in 1,100 + 100 adaptation iterations, "
    "batch 2+2, lr 2e-3 (minutes on a CPU)",
}


@dataclass
class TrainConfig:
    """Everything that defines a PT training run (defaults: the official C2F recipe)."""

    # data: a task (classes, or the synthetic pair) and dataset specs "voc:ROOT:SPLIT" / "coco:JSON:IMAGES"
    task: str = "c2f"
    source: str | None = None  # labelled source train
    target: str | None = None  # unlabelled target train (its labels are never read for training)
    target_test: str | None = None
    source_test: str | None = None
    classes: tuple[str, ...] | None = None  # None: the task's
    # the synthetic pair of the toy tasks (probteacher.toy.make_toy_fog), generated once into the cache
    toy_source_train: int = 1500
    toy_target_train: int = 1500
    toy_test: int = 300
    toy_size: int = 128
    toy_objects: str = "shapes"
    toy_fog_level: str = "dense"
    toy_seed: int = 0
    # detector: a size of probteacher.models.SIZES plus DetectorConfig field overrides
    detector: str = "vgg16"
    detector_overrides: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None  # local backbone weights (vgg16_caffe.pth or torchvision's); None: random init
    learnable_anchors: bool = True  # the release's DifferentiableAnchorGenerator (train.sh)
    efl: bool = True
    efl_lambda: tuple[float, float] = (0.5, 0.5)  # (classification, localisation)
    tau: tuple[float, float] = (0.5, 0.5)  # temperatures (classification, localisation) of the teacher's targets
    model_type: str = "gaussian"
    # method: "pt", or "source-only" (the burn-in recipe for all iterations); hard_threshold: the ablation that
    # trains the student on teacher boxes with class probability >= threshold, as ground truth (no soft targets)
    method: str = "pt"
    hard_threshold: float | None = None
    # the release's behaviour where it departs from its documentation (see COMPAT_VALUES)
    compat: str = "correct"
    rpn_bg_prob: str = "correct"  # official: the student's unsupervised RPN background prob is sigmoid(1 - o)
    rpn_sigma_rescore: str = "correct"  # official: sigma of the first N anchors, logit (not prob) rescored
    teacher_var_space: str = "rescaled"  # official: the ROI-space teacher variance reused for RPN deltas
    anchor_weight_decay: float = 0.0  # official 1e-4: decay shrinks the anchors while their gradient is zero
    scale_down_paste: bool = True
    # solver (SGD, linear warm-up, then constant: the release's only lr step sits at MAX_ITER)
    optimizer: str = "sgd"  # "sgd" (the release) or "adamw" (the toy presets: random-init networks learn faster)
    lr: float = 0.016
    anchor_lr: float | None = None  # lr of the learnable anchors (pixels); None: lr
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 400
    warmup_factor: float = 0.001
    grad_clip: float = 10.0
    # schedule
    iterations: int = 30_000
    burn_in: int = 4000
    ema_keep_rate: float = 0.9996
    source_weight: float = 1.0
    target_weight: float = 1.0
    batch_source: int = 16  # images per iteration over all processes
    batch_target: int = 16
    # evaluation, logging, checkpoints
    eval_every: int = 400  # iterations between evaluations; 0 = only at the end
    eval_batch_size: int = 8
    eval_metric: str = "voc12"
    log_every: int = 20
    checkpoint_every: int = 4000
    keep_checkpoints: int = 2
    workers: int = 0  # data-loading worker processes per training stream
    seed: int = 0
    amp: bool = False

    @property
    def task_info(self) -> Task:
        return TASKS[self.task]

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes of the run: ``classes``, else the task's (the toy digits: ten digit names)."""
        if self.classes is not None:
            return tuple(self.classes)
        if self.task_info.toy and self.toy_objects == "digits":
            return tuple(DIGIT_CLASSES)
        return self.task_info.classes

    def detector_config(self) -> DetectorConfig:
        """The detector of the run: the ``detector`` size, this run's PT switches and ``detector_overrides``."""
        values = {
            "num_classes": len(self.class_names),
            "learnable_anchors": self.learnable_anchors,
            "efl": self.efl,
            "efl_lambda_cls": self.efl_lambda[0],
            "efl_lambda_loc": self.efl_lambda[1],
            "tau_cls": self.tau[0],
            "tau_loc": self.tau[1],
            "model_type": self.model_type,
            "rpn_bg_prob": self.rpn_bg_prob,
            "rpn_sigma_rescore": self.rpn_sigma_rescore,
            "teacher_var_space": self.teacher_var_space,
            "weights": str(self.weights) if self.weights is not None else None,
        }
        return DetectorConfig(backbone=self.detector, **{**values, **self.detector_overrides})


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with paths as ``Path`` and sequences as tuples (from the CLI or from JSON)."""
    values = dict(values)
    if values.get("weights") is not None:
        values["weights"] = Path(values["weights"])
    for name in ("classes", "efl_lambda", "tau"):
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, int | float):
            value = (value, value)
        values[name] = tuple(value)
    for name in ("source", "target", "target_test", "source_test"):
        if values.get(name) is not None:
            values[name] = str(values[name])
    return values


def build_config(preset: str = "paper", **overrides: Any) -> TrainConfig:
    """The configuration of ``preset`` with ``overrides`` (None = not given); impossible values: UserError.

    ``compat`` fills the flags of :data:`COMPAT_VALUES` that are not given explicitly; ``tau`` and ``efl_lambda``
    take one number (both) or a (classification, localisation) pair.
    """
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise UserError(f"unknown configuration field(s): {', '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    compat = given.get("compat", "correct")
    if compat not in COMPAT:
        raise UserError(f"unknown --compat {compat!r}: choose correct or official")
    values = {**_PRESET_VALUES[preset], **COMPAT_VALUES[compat], **given}
    config = TrainConfig(**_typed(values))
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Refuse impossible options with a one-line :class:`UserError`."""
    if config.task not in TASKS:
        raise UserError(f"unknown task {config.task!r}: choose one of {', '.join(TASKS)}")
    if config.method not in METHODS:
        raise UserError(f"unknown method {config.method!r}: choose pt or source-only")
    if config.iterations < 1:
        raise UserError(f"--iterations must be at least 1 (a run without a training step), got {config.iterations}")
    if config.burn_in < 0:
        raise UserError(f"--burn-in must be >= 0, got {config.burn_in}")
    if config.method == "pt" and config.burn_in >= config.iterations:
        raise UserError(
            f"--burn-in {config.burn_in} leaves no adaptation iteration of --iterations {config.iterations}: "
            "lower --burn-in, raise --iterations, or use --method source-only"
        )
    if config.batch_source < 1 or config.batch_target < 1 or config.eval_batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if config.optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {config.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if config.anchor_lr is not None and config.anchor_lr <= 0:
        raise UserError(f"--anchor-lr must be > 0, got {config.anchor_lr}")
    if config.lr <= 0 or config.momentum < 0 or config.weight_decay < 0 or config.anchor_weight_decay < 0:
        raise UserError("--lr must be > 0; momentum and weight decays >= 0")
    if config.warmup_iters < 0 or not 0 < config.warmup_factor <= 1:
        raise UserError("warm-up iterations must be >= 0 and the warm-up factor in (0, 1]")
    if config.grad_clip <= 0:
        raise UserError(f"the gradient clip norm must be > 0, got {config.grad_clip}")
    if not 0 <= config.ema_keep_rate <= 1:
        raise UserError(f"--ema-keep-rate must be in [0, 1], got {config.ema_keep_rate}")
    if config.source_weight < 0 or config.target_weight < 0:
        raise UserError("the source and target loss weights must be >= 0")
    if config.hard_threshold is not None and not 0 < config.hard_threshold < 1:
        raise UserError(f"--hard-threshold must be in (0, 1), got {config.hard_threshold}")
    if config.hard_threshold is not None and config.method != "pt":
        raise UserError("--hard-threshold is a pseudo-labelling ablation: use it with --method pt")
    if len(config.tau) != 2 or min(config.tau) <= 0:
        raise UserError(f"--tau takes one or two temperatures > 0, got {list(config.tau)}")
    if len(config.efl_lambda) != 2 or min(config.efl_lambda) < 0:
        raise UserError(f"--efl-lambda takes one or two exponents >= 0, got {list(config.efl_lambda)}")
    if config.eval_every < 0 or config.log_every < 1 or config.checkpoint_every < 1 or config.keep_checkpoints < 1:
        raise UserError("eval_every must be >= 0; log_every, checkpoint_every and keep_checkpoints >= 1")
    if config.workers < 0:
        raise UserError(f"--workers must be >= 0, got {config.workers}")
    if config.eval_metric not in METRICS:
        raise UserError(f"unknown metric {config.eval_metric!r}: choose one of {', '.join(METRICS)}")
    if config.compat not in COMPAT:
        raise UserError(f"unknown --compat {config.compat!r}: choose correct or official")
    if config.detector not in SIZES:
        raise UserError(f"unknown detector {config.detector!r}: choose one of {', '.join(SIZES)}")
    fields = {f.name for f in dataclasses.fields(DetectorConfig)} - {"backbone", "num_classes"}
    bad = sorted(set(config.detector_overrides) - fields)
    if bad:
        raise UserError(f"unknown detector field(s) {', '.join(bad)}")
    config.detector_config().resolved()
    if config.weights is not None and not Path(config.weights).is_file():
        raise UserError(f"--weights {config.weights} is not a file: pass a local backbone state_dict (.pth)")
    if config.classes is not None and (not config.classes or len(set(config.classes)) != len(config.classes)):
        raise UserError("--classes must be a non-empty list of distinct names")
    if config.task_info.toy:
        _validate_toy(config)
    else:
        missing = [n for n in ("source", "target_test") if getattr(config, n) is None]
        if config.method == "pt" and config.target is None:
            missing.insert(1, "target")
        if missing:
            flags = " ".join(f"--{n.replace('_', '-')} SPEC" for n in missing)
            raise UserError(
                f"task {config.task} reads local data: pass {flags} (voc:ROOT:SPLIT or coco:JSON:IMAGES), "
                "or --task toy-fog for the embedded synthetic pair"
            )
    for name in ("source", "target", "target_test", "source_test"):
        spec = getattr(config, name)
        if spec is not None and (spec.split(":", 1)[0] not in ("voc", "coco") or spec.count(":") < 2):
            raise UserError(f"--{name.replace('_', '-')} {spec!r} is not voc:ROOT:SPLIT or coco:JSON:IMAGES")


def _validate_toy(config: TrainConfig) -> None:
    if any(getattr(config, n) is not None for n in ("source", "target", "target_test", "source_test")):
        raise UserError(f"task {config.task} generates its data: drop --source/--target/... or pick a real --task")
    if min(config.toy_source_train, config.toy_target_train, config.toy_test) < 1:
        raise UserError("the toy pair needs at least one image per split")
    if not 64 <= config.toy_size <= 1024:
        raise UserError(f"toy images must be 64..1024 px, got {config.toy_size}")
    if config.toy_objects not in OBJECT_KINDS:
        raise UserError(f"unknown toy objects {config.toy_objects!r}: choose shapes or digits")
    if config.toy_fog_level not in FOG_LEVELS:
        raise UserError(f"unknown fog level {config.toy_fog_level!r}: choose one of {', '.join(FOG_LEVELS)}")
    if config.classes is not None:
        raise UserError(f"task {config.task} fixes its classes: drop --classes")


def to_plain(config: TrainConfig) -> dict[str, Any]:
    """The configuration as JSON-able plain values (paths as strings, tuples as lists)."""
    return plain_json(config)


def from_plain(values: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`to_plain` (a saved run's configuration; not validated again)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**_typed({k: v for k, v in values.items() if k in names}))
