"""Atomic checkpoints, safe loading and full resume state.

A checkpoint is written to a temporary file in the target folder and moved into place with
``os.replace``, so an interrupted save leaves the previous file intact. Loading uses
``torch.load(weights_only=True)``: a file that would run code on unpickling is refused.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.distributed import is_main_process, unwrap_model
from shared.errors import UserError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *, binary: bool = True) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then move it into place.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False, default=str), binary=False)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path | None:
    """Save ``state`` atomically on the main process (other ranks write nothing; returns None)."""
    if not is_main_process():
        return None
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", allowed_globals: Sequence[Any] = ()
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; bad files raise a one-line :class:`UserError`.

    ``allowed_globals`` names extra plain-data classes a foreign format stores (e.g. the
    ``argparse.Namespace`` in timm's training checkpoints); nothing else is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise UserError(
                f"checkpoint {path} holds a pickled object ({found.group(1)}), not only tensors and plain "
                "containers; refused for safety (loading it could run code): re-save it as a state_dict"
            ) from None
        raise UserError(f"checkpoint {path} is corrupt or truncated ({_last_line(exc)}): re-create it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({_first_line(exc)}): re-create it") from None


def unwrap_state_dict(
    obj: Any, wrapper_keys: Sequence[str] = ("state_dict", "model"), source: str = "the checkpoint"
) -> dict[str, torch.Tensor]:
    """The model weights inside a loaded checkpoint, with DDP's ``module.`` prefix removed.

    The first of ``wrapper_keys`` that holds a mapping is taken (a training checkpoint), else ``obj`` itself
    (a raw state_dict); anything but a non-empty mapping of tensors is a one-line :class:`UserError`.
    """
    if isinstance(obj, Mapping):
        obj = next((obj[key] for key in wrapper_keys if isinstance(obj.get(key), Mapping)), obj)
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{source} holds no state_dict of tensors (looked for {', '.join(wrapper_keys)})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def describe_mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], limit: int = 3) -> str:
    """One line saying which keys of ``state`` are missing, unexpected or of another shape than ``expected``
    (a model's ``state_dict()``); '' when they fit."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")
            parts.append(f"{len(items)} {label} ({shown})")
    return "; ".join(parts)


def _last_line(exc: BaseException) -> str:
    """The specific part of torch's multi-paragraph unpickling message."""
    lines = [line for line in str(exc).splitlines() if line.strip() and "documentation" not in line]
    return lines[-1].strip()[:160] if lines else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """The file name for a training checkpoint at ``step`` (epoch or iteration)."""
    return Path(directory) / f"checkpoint-{step:08d}.pt"


def latest(directory: str | os.PathLike) -> Path | None:
    """The training checkpoint with the highest step in ``directory``, or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def resume_checkpoint(directory: str | os.PathLike) -> Path:
    """The checkpoint ``--resume`` continues from (:func:`latest`); none is a one-line UserError."""
    found = latest(directory)
    if found is None:
        raise UserError(f"--resume: no checkpoint in {directory}; run without --resume to start it")
    return found


def save_training_checkpoint(directory: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 2) -> None:
    """Save ``state`` as the checkpoint of ``step`` in ``directory`` and keep only the ``keep`` newest."""
    save_checkpoint(checkpoint_path(directory, step), state)
    prune(directory, keep)


def prune(directory: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest training checkpoints (main process only)."""
    if not is_main_process() or keep < 1:
        return
    found = sorted((int(m.group(1)), p) for p in Path(directory).iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)))
    for _, old in found[:-keep]:
        old.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """Every RNG state (python, numpy, torch CPU and CUDA) in a form ``weights_only`` loads."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    *,
    epoch: int = 0,
    step: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """Everything a run needs to resume exactly: weights, optimizer, scheduler, scaler, counters, RNG.

    ``extra`` holds package state (e.g. corrected labels, best score) as tensors or plain values.
    """
    state: dict[str, Any] = {
        "model": unwrap_model(model).state_dict(),
        "epoch": epoch,
        "step": step,
        "rng": rng_state(),
        "extra": extra,
    }
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            state[name] = obj.state_dict()
    return state


def restore_training_state(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Load what :func:`training_state` saved into the given objects and restore the RNG.

    Returns the state so the caller reads ``epoch``, ``step`` and ``extra``.
    """
    try:
        unwrap_model(model).load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(
            f"checkpoint does not fit this model ({_first_line(exc)}): resume with the same options"
        ) from None
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            if name not in state:
                raise UserError(f"checkpoint has no {name} state: it was not written by a training run")
            obj.load_state_dict(state[name])
    set_rng_state(state["rng"])
    return state
