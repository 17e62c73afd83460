"""PromptDFD: data-free distillation of a text classifier through a reinforced topic prompter
(Ma et al., "Prompting to Distill: Boosting Data-Free Knowledge Distillation via Reinforced Prompt", IJCAI 2022).

A frozen language model writes ``[topic prompt] + [content]`` pseudo sentences; a class-conditioned prompter,
trained by REINFORCE to make the teacher recognise the prompted class, steers it; the student learns the
teacher's outputs on those sentences, never seeing the original training text.

    from promptdfd import build_config, fit
    results = fit(build_config("demo", method="promptdfd"), "runs/pd", torch.device("cpu"))
"""

from importlib.metadata import version

from .config import METHODS, PRESETS, DistillConfig, build_config
from .engine import evaluate_file, fit, prepare_assets
from .losses import disagreement_reward, kd_loss, topic_reward
from .models import CausalLM, GRUPrompter, TextClassifier, build_classifier, build_generator
from .reinforce import Reinforce

__version__ = version("reprozoo-promptdfd")

__all__ = [
    "METHODS",
    "PRESETS",
    "CausalLM",
    "DistillConfig",
    "GRUPrompter",
    "Reinforce",
    "TextClassifier",
    "__version__",
    "build_classifier",
    "build_config",
    "build_generator",
    "disagreement_reward",
    "evaluate_file",
    "fit",
    "kd_loss",
    "prepare_assets",
    "topic_reward",
]
