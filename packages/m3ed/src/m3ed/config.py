"""The run configuration of ``m3ed-train`` (one dataclass) and its presets.

``paper`` is the official MDI recipe (``codes/mdi/run_htrm.sh`` of the authors' code,
github.com/JinmingZhao/MEmoConv): the paper-size model, AdamW lr 3e-5 (eps 1e-6), cosine without warm-up,
32 dialogues per batch, 50 epochs, gradient clipping at 5, the test score taken at the epoch with the best
validation weighted F1. ``small`` is the reduced model (MDI d 256, 2 layers) for 20 epochs; ``demo`` the
CPU-sized model (MDI d 64) on the synthetic release, 15 epochs of 8 dialogues. The learning rate depends on
the preset and the model (official: MDI 3e-5, utterance MLP 1e-3, DialogueRNN 2e-4).

``task`` picks the target: ``single`` (the benchmark: final_main_emo, 7-way cross-entropy, selection on
weighted F1) or ``multi`` (the release's final_mul_emo labels as multi-hot targets, 7 sigmoids with BCE-with-logits,
selection on micro F1); the official code has only the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3ed.data import modality_letters, parse_modalities
from m3ed.models import BRANCHES, COMBINES, FUSIONS, MODELS
from shared.errors import UserError

#: single: final_main_emo (the official benchmark); multi: the release's blended emotions (final_mul_emo).
TASKS = ("single", "multi")

PRESETS: dict[str, dict[str, Any]] = {
    # The official MDI recipe (run_htrm.sh): 50 epochs, 32 dialogues per batch, clip 5, cosine, no warm-up.
    "paper": {"model": "mdi", "epochs": 50, "batch_size": 32},
    "small": {"model": "mdi", "epochs": 20, "batch_size": 32},
    # Demo-sized models on the synthetic release: well under a minute on a laptop CPU.
    "demo": {"model": "mdi", "epochs": 15, "batch_size": 8},
}
#: Learning rate by preset and model (official: MDI 3e-5, utterance MLP 1e-3, DialogueRNN 2e-4).
# DialogueGCN: 3e-4, the M3ED authors' run scripts; MMGCN: 3e-4, its official run.sh (IEMOCAP).
LEARNING_RATES = {
    "paper": {"mdi": 3e-5, "utt-mlp": 1e-3, "dialoguernn": 2e-4, "dialoguegcn": 3e-4, "mmgcn": 3e-4},
    "small": {"mdi": 1e-4, "utt-mlp": 1e-3, "dialoguernn": 5e-4, "dialoguegcn": 3e-4, "mmgcn": 3e-4},
    "demo": {"mdi": 1e-3, "utt-mlp": 1e-3, "dialoguernn": 1e-3, "dialoguegcn": 1e-3, "mmgcn": 1e-3},
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines an ``m3ed-train`` run (defaults: the official MDI recipe, all three modalities)."""

    model: str = "mdi"  # mdi or a baseline: utt-mlp, dialoguernn, dialoguegcn, mmgcn
    modalities: str = "avl"  # letters a (audio), v (visual), l (text), in this order
    data: Path | None = None  # release folder; None: the synthetic release
    features: str | None = None  # feature pickle inside ``data`` (default: the only one)
    annotations: str = "check"  # check: the pickle must agree with annotation.json; none: the pickle alone
    task: str = "single"  # single: final_main_emo, cross-entropy; multi: final_mul_emo, sigmoid BCE
    at_least_one: bool = False  # multi: also predict the top emotion of an utterance with no sigmoid > 0.5
    scale: str = "paper"  # model sizes: those of the paper, small or demo preset
    epochs: int = 50
    batch_size: int = 32  # dialogues per batch (per process)
    lr: float = 3e-5
    clip: float = 5.0  # gradient-norm clipping; 0 turns it off
    class_weights: bool = False  # inverse-frequency class weights in the loss (DialogueRNN's recipe)
    branches: tuple[str, ...] | None = None  # MDI interaction branches (default: by modality count)
    combine: str | None = None  # MDI branch combination, end or per_block (default: end)
    fusion: str | None = None  # MDI fusion, ecat, lcat, add or gate (default: ecat)
    freeze_fusion_projection: bool = False  # keep MDI's fusion Linear at init (the official runs' quirk)
    nodal_attention: bool = True  # DialogueGCN's nodal attention (paper eqs. 4-6; the M3ED runs use it)
    seed: int = 0
    amp: bool = False
    workers: int = 0

    @property
    def modality_names(self) -> tuple[str, ...]:
        """The modalities as names (``audio``, ``visual``, ``text``)."""
        return parse_modalities(self.modalities)

    @property
    def model_overrides(self) -> dict[str, Any]:
        """The ``MDIConfig`` fields (or baseline constructor arguments) this run changes."""
        if self.model == "dialoguegcn" and not self.nodal_attention:
            return {"nodal_attention": False}
        if self.model != "mdi":
            return {}
        overrides: dict[str, Any] = {}
        if self.branches:
            overrides["branches"] = tuple(self.branches)
        for key in ("combine", "fusion"):
            if getattr(self, key):
                overrides[key] = getattr(self, key)
        if self.freeze_fusion_projection:
            overrides["freeze_fusion_projection"] = True
        return overrides


def parse_branches(text: str) -> tuple[str, ...]:
    """``"global,intra"`` -> ``("global", "intra")``, checked against MDI's four branches."""
    branches = tuple(b.strip() for b in text.split(",") if b.strip())
    if not branches or set(branches) - set(BRANCHES):
        raise UserError(f"--branches {text!r}: choose from {', '.join(BRANCHES)}")
    return branches


def build_config(preset: str = "demo", **overrides: Any) -> TrainConfig:
    """The configuration of ``preset`` with ``overrides`` (None values ignored), checked.

    The model sizes are the preset's; the learning rate, unless given, is the preset's for the model.
    ``modalities`` takes any letters of a, v, l (or t) and ``branches`` a comma-separated string or a tuple.
    """
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    values = {"scale": preset, **PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    if values["model"] not in MODELS:
        raise UserError(f"unknown model {values['model']!r}: choose one of {', '.join(MODELS)}")
    values.setdefault("lr", LEARNING_RATES[preset][values["model"]])
    values["modalities"] = modality_letters(parse_modalities(values.get("modalities", TrainConfig.modalities)))
    branches = values.get("branches")
    if branches is not None:
        values["branches"] = parse_branches(branches if isinstance(branches, str) else ",".join(branches))
    if values.get("data") is not None:
        values["data"] = Path(values["data"])
    config = TrainConfig(**values)
    check(config)
    return config


def check(config: TrainConfig) -> None:
    """Refuse impossible values with one line naming the option."""
    checks = [
        (config.scale in PRESETS, f"scale must be one of {', '.join(PRESETS)}, got {config.scale!r}"),
        (config.epochs >= 1, f"--epochs must be >= 1, got {config.epochs}"),
        (config.batch_size >= 1, f"--batch-size must be >= 1, got {config.batch_size}"),
        (config.lr > 0, f"--lr must be > 0, got {config.lr}"),
        (config.clip >= 0, f"--clip must be >= 0 (0: off), got {config.clip}"),
        (config.combine in (None, *COMBINES), f"--combine must be one of {', '.join(COMBINES)}"),
        (config.fusion in (None, *FUSIONS), f"--fusion must be one of {', '.join(FUSIONS)}"),
        (config.workers >= 0, f"--workers must be >= 0, got {config.workers}"),
        (config.task in TASKS, f"--task must be one of {', '.join(TASKS)}, got {config.task!r}"),
        (
            config.task == "single" or config.annotations == "check",
            "--task multi needs annotation.json's final_mul_emo (the feature pickle holds main labels only): "
            "drop --annotations none",
        ),
        (config.task == "single" or not config.class_weights, "--class-weights applies to --task single only"),
        (config.task == "multi" or not config.at_least_one, "--at-least-one applies to --task multi only"),
        (
            config.nodal_attention or config.model == "dialoguegcn",
            "--no-nodal-attention applies to --model dialoguegcn only",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
