"""Loading official iFormer checkpoints (and this package's own) into a model, by name.

Accepted files: a raw state_dict (the released ``iformer_*.pth``), a training checkpoint holding
``state_dict`` / ``model`` / ``state_dict_ema`` (timm's CheckpointSaver, or ``iformer-train``), with
or without DDP's ``module.`` prefix. Positional tables on another grid are resized bilinearly
(align_corners=False), as the model does at run time: this is how the released 384 checkpoints,
which store 224-size tables, load into the ``_384`` models.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from iformer.models import InceptionTransformer
from shared.checkpoint import describe_mismatch, load_checkpoint, unwrap_state_dict
from shared.errors import UserError

WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def extract_state_dict(obj: Mapping, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights inside a loaded checkpoint, with any ``module.`` prefix removed."""
    keys = ("state_dict_ema", "model_ema", "state_dict", "model") if prefer_ema else WRAPPER_KEYS
    return unwrap_state_dict(obj, keys)


def read_weights(path: str | os.PathLike, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """Load and unwrap a checkpoint file (``weights_only``; timm's saved ``args`` Namespace is allowed)."""
    return extract_state_dict(load_checkpoint(path, allowed_globals=[argparse.Namespace]), prefer_ema)


def resize_pos_embed(state: dict[str, torch.Tensor], model: InceptionTransformer) -> dict[str, torch.Tensor]:
    """Resize every ``pos_embedK`` table of ``state`` to the model's grid (bilinear, align_corners=False)."""
    resized = dict(state)
    for i in range(1, 5):
        key = f"pos_embed{i}"
        target = getattr(model, key).shape
        table = state.get(key)
        if table is not None and table.ndim == 4 and table.shape[1:3] != target[1:3] and table.shape[3] == target[3]:
            grid = F.interpolate(
                table.permute(0, 3, 1, 2).float(), size=target[1:3], mode="bilinear", align_corners=False
            )
            resized[key] = grid.permute(0, 2, 3, 1).to(table.dtype).contiguous()
    return resized


def load_weights(
    model: InceptionTransformer,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    new_head: bool = False,
    prefer_ema: bool = False,
) -> InceptionTransformer:
    """Load official-format weights into ``model`` strictly, by name.

    ``new_head=True`` keeps the model's freshly initialised classifier when the checkpoint's has
    another number of classes (fine-tuning). Any other difference is a :class:`UserError` that
    names the keys.
    """
    state = extract_state_dict(source, prefer_ema) if isinstance(source, Mapping) else read_weights(source, prefer_ema)
    state = resize_pos_embed(state, model)
    if new_head:
        head = model.head.state_dict()
        for key, value in head.items():
            if f"head.{key}" not in state or state[f"head.{key}"].shape != value.shape:
                state[f"head.{key}"] = value
        for key in [k for k in state if k.startswith("head.") and k.removeprefix("head.") not in head]:
            del state[key]
    problem = describe_mismatch(state, model.state_dict())
    if problem:
        where = f"{source}" if not isinstance(source, Mapping) else "the given state_dict"
        raise UserError(f"weights in {where} do not fit this model: {problem}; pass the --model they were made for")
    model.load_state_dict(state, strict=True)
    return model
