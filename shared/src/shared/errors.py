"""Errors that reach the user as one line and exit code 2 (see :func:`shared.cli.main`)."""

from __future__ import annotations

import os
from pathlib import Path


class UserError(Exception):
    """Bad input the user can fix: the message names the problem and the fix."""


def require_path(path: str | os.PathLike, what: str = "path", *, kind: str = "any") -> Path:
    """Return ``path`` as a Path, or raise UserError naming it when it is missing.

    ``kind`` is ``"file"``, ``"dir"`` or ``"any"``.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if kind == "file" and not p.is_file():
        raise UserError(f"{what} is not a file: {p}")
    if kind == "dir" and not p.is_dir():
        raise UserError(f"{what} is not a directory: {p}")
    return p
