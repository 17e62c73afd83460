"""M3ED (ACL 2022): readers for the real release, a synthetic release in its layout, and the MDI model.

"M3ED: Multi-modal Multi-scene Multi-label Emotional Dialogue Database" (Zhao et al., ACL 2022).

The dataset: 990 dyadic dialogues from 56 Chinese TV series, 24,449 utterances, 7 emotions, text,
audio and visual features. The model: Multimodal Dialog-aware Interaction (MDI), with an utterance
MLP and DialogueRNN as baselines.
"""

from importlib.metadata import version

from m3ed.config import PRESETS, TrainConfig, build_config
from m3ed.data import Batch, DialogueDataset, collate_dialogues, open_release, parse_modalities
from m3ed.engine import evaluate_run, fit
from m3ed.models import MDI, DialogueRNN, MDIConfig, UtteranceMLP, build_model
from m3ed.release import EMOTIONS, FeatureBundle, M3EDRelease, load_annotation, load_feature_pickle, read_splits
from m3ed.synthetic import SyntheticConfig, make_synthetic_release

__version__ = version("reprozoo-m3ed")

__all__ = [
    "EMOTIONS",
    "MDI",
    "PRESETS",
    "Batch",
    "DialogueDataset",
    "DialogueRNN",
    "FeatureBundle",
    "M3EDRelease",
    "MDIConfig",
    "SyntheticConfig",
    "TrainConfig",
    "UtteranceMLP",
    "__version__",
    "build_config",
    "build_model",
    "collate_dialogues",
    "evaluate_run",
    "fit",
    "load_annotation",
    "load_feature_pickle",
    "make_synthetic_release",
    "open_release",
    "parse_modalities",
    "read_splits",
]
