"""The mean teacher of Probabilistic Teacher: an exponential moving average of the student.

The official code copies the student into the teacher at the end of burn-in and then, every iteration before the
student update, sets theta_T <- k * theta_T + (1 - k) * theta_S (k = ``EMA_KEEP_RATE``, 0.9996) over the whole
state_dict: parameters, learnable anchors and buffers alike. Non-floating buffers (e.g. counters) are copied.

Train/eval semantics: the official teacher stays in ``train()`` mode (under ``no_grad``); the VGG-16 detector has
no batch norm or dropout, so the mode changes nothing there. Our detector picks its behaviour from the ``mode``
argument, not from ``module.training``; the ResNet backbone uses frozen batch norm, so neither mode differs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from shared.errors import UserError

__all__ = ["copy_into", "ema_update", "make_teacher"]


def make_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with every parameter frozen (``requires_grad=False``): it never gets gradients
    and changes only through ``copy_into``/``ema_update``. Its train/eval flag is left as the student's."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


def _paired_state(teacher: nn.Module, student: nn.Module):
    t_state, s_state = teacher.state_dict(), student.state_dict()
    if t_state.keys() != s_state.keys():
        diff = sorted(t_state.keys() ^ s_state.keys())
        raise ValueError(f"teacher and student state_dicts differ, e.g. {diff[0]!r}")
    return ((t_state[k], s_state[k]) for k in t_state)


@torch.no_grad()
def copy_into(teacher: nn.Module, student: nn.Module) -> None:
    """Copy every state_dict entry of ``student`` into ``teacher`` in place (end of burn-in)."""
    for t, s in _paired_state(teacher, student):
        t.copy_(s)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, keep_rate: float) -> None:
    """theta_T <- keep_rate * theta_T + (1 - keep_rate) * theta_S over floating state_dict entries (parameters,
    anchors, buffers); other entries are copied. keep_rate 1 freezes the teacher, 0 copies the student."""
    if not 0.0 <= keep_rate <= 1.0:
        raise UserError(f"EMA keep rate must be in [0, 1], got {keep_rate}")
    for t, s in _paired_state(teacher, student):
        if t.is_floating_point():
            t.mul_(keep_rate).add_(s.to(t.dtype), alpha=1.0 - keep_rate)
        else:
            t.copy_(s)
