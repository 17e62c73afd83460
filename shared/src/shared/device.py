"""Devices, mixed precision and seeding."""

from __future__ import annotations

import contextlib
import os
import random
import re

import numpy as np
import torch
from torch import nn

from shared.errors import UserError

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` into a usable device.

    ``auto`` picks CUDA, then MPS, then CPU. Under torchrun a bare ``cuda``/``auto`` picks the
    GPU of ``LOCAL_RANK``. An unavailable device is a :class:`UserError`, never a silent fallback.
    """
    match = _DEVICE_RE.match(spec.strip().lower())
    if match is None:
        raise UserError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            kind = "cuda"
        elif _mps_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if kind == "cpu":
        if index is not None:
            raise UserError(f"device {spec!r}: cpu takes no index; use --device cpu")
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise UserError(f"device {spec!r} is not available on this machine; use --device cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise UserError(f"device {spec!r} requested but CUDA is not available; use --device cpu")
    count = torch.cuda.device_count()
    n = int(index) if index is not None else int(os.environ.get("LOCAL_RANK", 0)) % count
    if n >= count:
        raise UserError(f"device {spec!r}: only {count} CUDA device(s) visible (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", n)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def amp_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """The autocast dtype: bf16 on CPU/MPS, fp16 on CUDA unless ``dtype="bf16"`` is asked."""
    if dtype is not None:
        table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
        if dtype not in table:
            raise UserError(f"unknown AMP dtype {dtype!r}: use bf16 or fp16")
        return table[dtype]
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast(device: torch.device, enabled: bool = True, dtype: str | None = None) -> contextlib.AbstractContextManager:
    """Autocast for ``device`` (bf16 on CPU, fp16/bf16 on CUDA); a no-op context when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device, dtype))


class AmpScaler:
    """One optimizer step under mixed precision, in the manner of timm's ``NativeScaler``.

    Wraps a :class:`torch.amp.GradScaler` that is active only where it is needed (fp16 autocast: on CUDA by
    default, on the CPU when ``dtype="fp16"`` is asked); elsewhere every call is the plain
    ``loss.backward()`` / clip / ``optimizer.step()``. Make one per run and save :meth:`state_dict` in the
    training checkpoint, so that ``--resume`` continues with the loss scale the run had reached.
    """

    def __init__(
        self,
        device: torch.device,
        enabled: bool = True,
        dtype: str | None = None,
        *,
        init_scale: float = 2.0**16,
        growth_interval: int = 2000,
    ) -> None:
        active = enabled and device.type in ("cuda", "cpu") and amp_dtype(device, dtype) == torch.float16
        self._scaler = torch.amp.GradScaler(
            device.type if active else "cpu", init_scale=init_scale, growth_interval=growth_interval, enabled=active
        )

    @property
    def enabled(self) -> bool:
        """Whether losses are scaled (fp16 autocast)."""
        return self._scaler.is_enabled()

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the (scaled) loss; call several times to accumulate before one :meth:`step`."""
        self._scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, *, clip_grad: float | None = None, parameters=None) -> None:
        """Unscale, clip the gradient norm to ``clip_grad`` (when given), step, and update the scale.

        ``parameters`` are the ones clipped (default: every parameter of ``optimizer``).
        """
        if clip_grad:
            self._scaler.unscale_(optimizer)
            if parameters is None:
                parameters = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(parameters, clip_grad)
        self._scaler.step(optimizer)
        self._scaler.update()

    def __call__(
        self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, *, clip_grad: float | None = None, parameters=None
    ) -> None:
        """:meth:`backward` then :meth:`step`: the whole optimizer step of one loss."""
        self.backward(loss)
        self.step(optimizer, clip_grad=clip_grad, parameters=parameters)

    def state_dict(self) -> dict:
        return self._scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the loss scale; a state saved without scaling (CPU, bf16) leaves a fresh scale."""
        if state and self.enabled:
            self._scaler.load_state_dict(state)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (all devices); return a generator seeded for data loaders."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
