"""The run configuration of one simulated active-learning run (:class:`LoopConfig`) and its presets.

The paper's body is not public (arXiv 2205.11279, abstract only), so every value here is this package's
reconstruction: ``paper`` is the common molecular-GNN recipe (5 x 300 GINE, Adam 1e-3, 10% initial labels,
5% per round, 6 rounds), ``small`` a CPU scale for a few thousand molecules, ``demo`` minutes on a laptop CPU.
Sizes of the networks come from :data:`tyger.models.MODEL_CONFIGS` under the same preset name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from shared.errors import UserError
from tyger.data import EMBEDDED, TASK_TYPES
from tyger.losses import DK_KINDS, FB_KINDS
from tyger.models import MODEL_CONFIGS
from tyger.selection import SELECTORS

PRESETS = ("paper", "small", "demo")
SPLITS = ("scaffold", "random")
INITS = ("random", "kcenter")
#: Embedded sets that are one congeneric series: a scaffold split would put nearly all of it on one side.
CONGENERIC = ("chembl-reg", "chembl-bin")


@dataclass
class LoopConfig:
    """One pool-based active-learning run (defaults: the ``paper`` preset).

    ``init_size`` and ``budget`` below 1 are fractions of the pool, 1 or more are molecule counts; both are
    raised to at least ``min_batch`` molecules.
    """

    dataset: str | None = "chembl-reg"  # an embedded set (tyger.data.EMBEDDED); ignored when ``data`` is given
    data: Path | None = None  # a MoleculeNet-style CSV / CSV.gz / SDF
    limit: int | None = None  # keep the first rows of the embedded set (tests)
    smiles_col: str | None = None
    targets: tuple[str, ...] | None = None
    task_type: str | None = None  # None: inferred from the labels
    split: str | None = None  # None: random for the congeneric embedded sets, scaffold otherwise
    selector: str = "tyger"
    beta: float = 1.0  # exponent of the informativeness weight; 0 = k-center on z
    eps: float = 0.05
    gamma: float = 0.0  # exponent of a typicality weight on the k-center distance (an option; 0 = the spec's rule)
    dk: str = "fingerprint"
    fb: str = "loss-rank"
    lambda_dk: float = 1.0
    lambda_fb: float = 1.0
    translation: bool = True  # False: the encoder is trained by L_DK + L_FB only (ablation)
    init: str = "random"
    init_size: float = 0.10
    budget: float = 0.05
    min_batch: int = 0
    rounds: int = 6
    pretrain_epochs: int = 50
    finetune_epochs: int = 10
    task_epochs: int = 100
    patience: int = 20
    # Measurement, not method: each round's test metric is the mean over this many task learners trained on the
    # same labels from different initialisations; the first one alone drives the selection, so the picks do not
    # change. 1 is the usual protocol; more lowers the noise of the learning curve (tyger-repro uses 3).
    eval_repeats: int = 1
    task_batch_size: int = 32
    query_batch_size: int = 64
    lr: float = 1e-3
    clip: float = 5.0  # gradient-norm clip on the SMILES decoder
    mc_samples: int = 20
    max_tokens: int = 128
    model: str = "paper"  # sizes: tyger.models.MODEL_CONFIGS
    seed: int = 0
    preset: str = "paper"

    @property
    def resolved_split(self) -> str:
        if self.split is not None:
            return self.split
        return "random" if self.data is None and self.dataset in CONGENERIC else "scaffold"

    def source(self) -> str:
        """What the run reads, for messages and cache keys."""
        return str(self.data) if self.data is not None else f"{self.dataset}{f'[:{self.limit}]' if self.limit else ''}"


_PRESETS: dict[str, dict] = {
    "paper": {},
    "small": {
        "init_size": 0.05,
        "budget": 0.05,
        "min_batch": 32,
        "pretrain_epochs": 20,
        "finetune_epochs": 5,
        "task_epochs": 60,
        "patience": 15,
        "model": "small",
    },
    "demo": {
        "init_size": 32,
        "budget": 32,
        "rounds": 4,
        "pretrain_epochs": 5,
        "finetune_epochs": 2,
        "task_epochs": 30,
        "patience": 10,
        "model": "demo",
    },
}
#: One line per preset for --help.
PRESET_HELP = {
    "paper": "5x300 GINE, 10% initial labels, 5% per round, 6 rounds, 50/10/100 epochs (GPU, MoleculeNet)",
    "small": "3x128 GINE, 5% (>= 32) initial and per round, 6 rounds, 20/5/60 epochs (CPU, <= 8k molecules)",
    "demo": "2x64 GINE, 32 initial, 32 per round, 4 rounds, 5/2/30 epochs (CPU, minutes)",
}


def preset_values(preset: str) -> dict:
    """The values a preset sets (on top of the :class:`LoopConfig` defaults)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return dict(_PRESETS[preset])


def build_config(preset: str = "demo", **overrides) -> LoopConfig:
    """The configuration at ``preset`` with ``overrides`` applied (None values mean "not given")."""
    names = {f.name for f in dataclasses.fields(LoopConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UserError(f"no option {', '.join(unknown)}")
    values = preset_values(preset) | {"preset": preset}
    values |= {k: v for k, v in overrides.items() if v is not None}
    if values.get("data") is not None:
        values["data"] = Path(values["data"])
    if values.get("targets") is not None:
        values["targets"] = tuple(values["targets"])
    config = LoopConfig(**values)
    validate(config)
    return config


def validate(config: LoopConfig) -> None:
    """Refuse impossible values (the pool size is checked when the data is read, in the engine)."""
    if config.data is None and config.dataset not in EMBEDDED:
        raise UserError(f"unknown dataset {config.dataset!r}: choose one of {', '.join(EMBEDDED)} or pass --data")
    for name, allowed in (
        ("selector", tuple(SELECTORS)),
        ("dk", DK_KINDS),
        ("fb", FB_KINDS),
        ("init", INITS),
        ("model", tuple(MODEL_CONFIGS)),
    ):
        if getattr(config, name) not in allowed:
            raise UserError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}")
    if config.split is not None and config.split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, got {config.split!r}")
    if config.task_type is not None and config.task_type not in TASK_TYPES:
        raise UserError(f"--task-type must be one of {', '.join(TASK_TYPES)}, got {config.task_type!r}")
    for name in ("init_size", "budget"):
        value = getattr(config, name)
        if not (0 < value < 1 or (value >= 1 and value == int(value))):
            raise UserError(f"--{name.replace('_', '-')} must be a fraction in (0, 1) or a whole count, got {value}")
    if config.rounds < 0 or config.min_batch < 0:
        raise UserError("--rounds and min_batch must be >= 0")
    if min(config.task_epochs, config.patience, config.task_batch_size - 1, config.query_batch_size - 1) < 1:
        raise UserError("--task-epochs and --patience must be >= 1, batch sizes >= 2")
    if config.eval_repeats < 1:
        raise UserError(f"--eval-repeats must be >= 1, got {config.eval_repeats}")
    if config.pretrain_epochs < 0 or config.finetune_epochs < 0:
        raise UserError("--pretrain-epochs and --finetune-epochs must be >= 0")
    if config.lr <= 0 or config.clip <= 0 or config.mc_samples < 2 or config.max_tokens < 2:
        raise UserError("--lr and --clip must be > 0, --mc-samples >= 2")
    if config.beta < 0 or config.gamma < 0 or not 0 <= config.eps <= 1 or config.lambda_dk < 0 or config.lambda_fb < 0:
        raise UserError("--beta, --gamma, --lambda-dk and --lambda-fb must be >= 0, --eps in [0, 1]")
    if config.selector == "tyger" and not config.translation and config.dk == "none" and config.fb == "none":
        raise UserError("--no-translation with --dk none and --fb none leaves the querying module no objective")
    if config.limit is not None and config.limit < 10:
        raise UserError(f"limit must be >= 10 molecules, got {config.limit}")


def size_of(value: float, pool: int, minimum: int = 0) -> int:
    """A fraction of the pool (value < 1) or a count, at least ``minimum``."""
    n = round(value * pool) if value < 1 else int(value)
    return max(n, minimum, 1)


def plain(config: LoopConfig) -> dict:
    """The configuration as JSON values."""
    out = dataclasses.asdict(config)
    out["data"] = None if config.data is None else str(config.data)
    out["targets"] = None if config.targets is None else list(config.targets)
    return out


def from_plain(values: dict) -> LoopConfig:
    """The configuration a ``config.json`` holds."""
    return build_config(values.get("preset", "paper"), **{k: v for k, v in values.items() if k != "preset"})
