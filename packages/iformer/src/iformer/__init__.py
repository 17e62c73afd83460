"""Inception Transformer (iFormer, NeurIPS 2022): models that load the official checkpoints by name."""

from importlib.metadata import version

from iformer.models import (
    MODEL_CONFIGS,
    InceptionTransformer,
    create_model,
    iformer_base,
    iformer_base_384,
    iformer_large,
    iformer_large_384,
    iformer_small,
    iformer_small_384,
    list_models,
)
from iformer.weights import load_weights

__version__ = version("reprozoo-iformer")

__all__ = [
    "MODEL_CONFIGS",
    "InceptionTransformer",
    "__version__",
    "create_model",
    "iformer_base",
    "iformer_base_384",
    "iformer_large",
    "iformer_large_384",
    "iformer_small",
    "iformer_small_384",
    "list_models",
    "load_weights",
]
