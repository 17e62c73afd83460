"""Inception Transformer (iFormer, NeurIPS 2022): models that load the official checkpoints by name."""

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

__version__ = "0.1.0"

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
]
