"""M3ED (ACL 2022): readers for the real release, a synthetic release in its layout, and the MDI model.

The dataset: 990 dyadic dialogues from 56 Chinese TV series, 24,449 utterances, 7 emotions, text,
audio and visual features. The model: Multimodal Dialog-aware Interaction (MDI), with an utterance
MLP and DialogueRNN as baselines.
"""

from m3ed.data import Batch, DialogueDataset, collate_dialogues, parse_modalities
from m3ed.models import MDI, DialogueRNN, MDIConfig, UtteranceMLP, build_model
from m3ed.release import EMOTIONS, FeatureBundle, M3EDRelease, load_annotation, load_feature_pickle, read_splits
from m3ed.synthetic import SyntheticConfig, make_synthetic_release

__version__ = "0.1.0"

__all__ = [
    "EMOTIONS",
    "MDI",
    "Batch",
    "DialogueDataset",
    "DialogueRNN",
    "FeatureBundle",
    "M3EDRelease",
    "MDIConfig",
    "SyntheticConfig",
    "UtteranceMLP",
    "__version__",
    "build_model",
    "collate_dialogues",
    "load_annotation",
    "load_feature_pickle",
    "make_synthetic_release",
    "parse_modalities",
    "read_splits",
]
