"""Reproduction reports: mean and spread over seeds, markdown tables, results files.

Every ``<name>-repro`` writes ``results.json`` (with a one-line ``headline``, which
``nox -s demo`` prints in its summary) and ``results.md`` through :func:`write_results`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.checkpoint import atomic_write, save_json


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std of no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def format_mean_std(values: Sequence[float], digits: int = 2, scale: float = 1.0) -> str:
    """``"97.31 ± 0.42"`` (only the mean for one value); ``scale=100`` turns fractions into %."""
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    if any(len(row) != len(headers) for row in cells):
        raise ValueError("every row needs one cell per header")
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_results(
    out: str | os.PathLike, *, title: str, table: str, headline: str, results: dict[str, Any], notes: str = ""
) -> Path:
    """Write ``results.json`` and ``results.md`` into ``out``; returns the markdown path."""
    out = Path(out)
    save_json(out / "results.json", {"title": title, "headline": headline, **results})
    text = f"# {title}\n\n{table}\n\n{headline}\n" + (f"\n{notes}\n" if notes else "")
    return atomic_write(out / "results.md", lambda f: f.write(text), binary=False)
