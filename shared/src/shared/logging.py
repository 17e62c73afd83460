"""One logger, JSONL metrics, and progress that suits where it runs.

On a TTY progress is a tqdm bar; elsewhere (CI, log files) it is a plain line every few seconds.
Non-main ranks stay silent: only warnings and errors pass.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from shared.checkpoint import atomic_write
from shared.distributed import is_main_process

LOGGER_NAME = "reprozoo"


def get_logger() -> logging.Logger:
    """The project's logger: INFO to stderr on the main process, WARNING elsewhere."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    return logger


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    """Append one JSON object per line to ``path`` (main process only; others write nothing)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.enabled = is_main_process()
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def rewind(self, key: str, last: int | float) -> None:
        """Drop the records whose ``key`` is past ``last``: on resume, what was logged after the checkpoint."""
        if not self.enabled or not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line).get(key, last) <= last
        ]
        atomic_write(self.path, lambda f: f.write("".join(kept)), binary=False)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps({k: _plain(v) for k, v in record.items()}, default=str)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSONL metrics file."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class Progress:
    """Wrap an iterable: a tqdm bar on a TTY, a plain line every ``every_s`` seconds otherwise.

    ``update(**metrics)`` attaches the latest numbers (loss, accuracy, ...) to what is shown;
    ``enabled=False`` shows nothing (the iterable passes through unchanged).
    """

    def __init__(
        self,
        iterable: Iterable,
        *,
        desc: str = "",
        total: int | None = None,
        every_s: float = 10.0,
        stream=None,
        enabled: bool = True,
    ) -> None:
        self.iterable = iterable
        self.desc = desc
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.every_s = every_s
        self.stream = stream if stream is not None else sys.stderr
        self.metrics: dict[str, Any] = {}
        self.enabled = enabled and is_main_process()
        self._bar = None
        if self.enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, file=self.stream, leave=False, dynamic_ncols=True)

    def update(self, **metrics: Any) -> None:
        self.metrics.update({k: _plain(v) for k, v in metrics.items()})
        if self._bar is not None:
            self._bar.set_postfix({k: _short(v) for k, v in self.metrics.items()}, refresh=False)

    def __iter__(self) -> Iterator:
        last = time.monotonic()
        done = 0
        try:
            for item in self.iterable:
                yield item
                done += 1
                if self._bar is not None:
                    self._bar.update(1)
                elif self.enabled and time.monotonic() - last >= self.every_s:
                    self._line(done)
                    last = time.monotonic()
        finally:
            if self._bar is not None:
                self._bar.close()

    def _line(self, done: int) -> None:
        count = f"{done}/{self.total}" if self.total else str(done)
        print(f"{self.desc} {count} {format_record(self.metrics)}".strip(), file=self.stream, flush=True)


def format_record(record: dict[str, Any]) -> str:
    """``key=value`` pairs on one line, floats to 4 significant digits (per-epoch log lines)."""
    return " ".join(f"{k}={_short(v)}" for k, v in record.items())


def _short(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value
