"""Reproduction reports: mean and spread over seeds, markdown tables, figures, results files, cached runs.

Every ``<name>-repro`` writes ``results.json`` (with a one-line ``headline``, which ``nox -s demo`` prints
in its summary), ``results.md`` and ``results.png`` through :func:`write_results` and :func:`plot_bars` /
:func:`plot_lines` / :func:`plot_line_panels`, and keeps each run's results in a :class:`RunCache`.
:func:`save_image_grid` draws pictures of a method's inputs and outputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from shared.checkpoint import atomic_write, save_json
from shared.logging import get_logger


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std of no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


#: Student's t quantile t_{0.975, df} for df = 1..30 (beyond: the Cornish-Fisher expansion, within 1e-4).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)
_T975 += (2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95% intervals)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and the two-sided 95% Student-t interval of the mean, (mean, low, high); nan bounds for one value."""
    mean, std = mean_std(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = t_quantile_975(len(values) - 1) * std / math.sqrt(len(values))
    return mean, mean - half, mean + half


def format_ci95(values: Sequence[float], digits: int = 2) -> str:
    """``"-2.08 [-7.77, +3.60]"``: the signed mean and its 95% interval (only the mean for one value)."""
    mean, low, high = mean_ci95(values)
    if math.isnan(low):
        return f"{mean:+.{digits}f}"
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def format_mean_std(values: Sequence[float], digits: int = 2, scale: float = 1.0) -> str:
    """``"97.31 ± 0.42"`` (only the mean for one value); ``scale=100`` turns fractions into %."""
    mean, std = mean_std([v * scale for v in values])
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def paired_differences(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Per-seed differences ``a[i] - b[i]`` of two runs paired by seed (for :func:`format_ci95`)."""
    return [x - y for x, y in zip(a, b, strict=True)]


def hypothesis_lines(hypotheses: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown bullets of pre-registered targets: each {"statement", "measured", "held"} as one line."""
    return "\n".join(
        f"- {h['statement']}: measured {h['measured']:.3f}, {'held' if h['held'] else 'did not hold'}"
        for h in hypotheses.values()
    )


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
    out: str | os.PathLike,
    *,
    title: str,
    table: str,
    headline: str,
    results: dict[str, Any],
    notes: str = "",
    figure: str | os.PathLike | None = None,
) -> Path:
    """Write ``results.json`` and ``results.md`` into ``out``; returns the markdown path.

    ``figure`` (a file in ``out``, e.g. what :func:`plot_bars` wrote) is shown in the markdown below the table.
    """
    out = Path(out)
    save_json(out / "results.json", {"title": title, "headline": headline, **results})
    text = f"# {title}\n\n{table}\n\n{headline}\n"
    if figure is not None:
        text += f"\n![{title}]({Path(figure).name})\n"
    text += f"\n{notes}\n" if notes else ""
    return atomic_write(out / "results.md", lambda f: f.write(text), binary=False)


class RunCache:
    """The results of a reproduction's runs, one JSON file per run under ``folder``.

    A run is reused only when its file records the same package ``version`` and the same configuration;
    otherwise it is computed again (and the file replaced), so results of older code are never mixed in.
    """

    def __init__(self, folder: str | os.PathLike, version: str) -> None:
        self.folder = Path(folder)
        self.version = version

    def path(self, name: str) -> Path:
        """The record of run ``name``."""
        return self.folder / f"{name}.json"

    def fresh_folder(self, name: str) -> Path:
        """An empty ``<folder>/<name>/`` for the files of run ``name`` (what an older run left there is removed)."""
        folder = self.folder / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def run(self, name: str, config: Mapping[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The recorded result of run ``name`` with ``config``, or ``compute()`` recorded now."""
        config = plain_json(config)
        path = self.path(name)
        if path.is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                saved = {}
            if saved.get("version") == self.version and saved.get("config") == config and "result" in saved:
                get_logger().info(f"{name}: reusing the result recorded in {path}")
                return saved["result"]
            why = "another configuration" if saved.get("version") == self.version else f"version {saved.get('version')}"
            get_logger().info(f"{name}: {path} was recorded by {why}; running it again")
        result = compute()
        save_json(path, {"version": self.version, "config": config, "result": result})
        return plain_json(result)


def plain_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (dataclasses become dicts, tuples lists, paths strings): what a
    run's ``config.json`` holds, and what :class:`RunCache` compares."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        get_logger().info("no figure: matplotlib is not installed (pip install the package's [plot] extra)")
        return None
    return plt


def plot_bars(
    path: str | os.PathLike,
    categories: Sequence[str],
    series: Mapping[str, Sequence[Sequence[float]]],
    *,
    ylabel: str,
    title: str,
    interval: bool = False,
) -> Path | None:
    """Grouped bars, mean ± std over seeds: ``series[name][i]`` holds the per-seed values of ``categories[i]``.
    ``interval`` draws the 95% t-interval of the mean instead of ± std (for paired differences; a zero line too).

    Returns the PNG written, or None when matplotlib is not installed.
    """
    plt = _pyplot()
    if plt is None:
        return None
    path = Path(path)
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(categories) * max(1, len(series)) ** 0.5), 3.6))
    lows, highs = [], []
    for k, (name, values) in enumerate(series.items()):
        stats = [_interval(v) if interval else mean_std(v) for v in values]
        positions = [i + (k - (len(series) - 1) / 2) * width for i in range(len(categories))]
        ax.bar(positions, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=3, label=name)
        lows += [m - s for m, s in stats]
        highs += [m + s for m, s in stats]
    ax.set_xticks(range(len(categories)), list(categories))
    low, high = min(lows), max(highs)
    pad = max(0.15 * (high - low), 0.01 * abs(high), 1e-6)  # the differences fill the axis; bars start below
    ax.set_ylim(max(0.0, low - pad) if low >= 0 else low - pad, high + pad)
    if interval:
        ax.axhline(0.0, color="black", linewidth=0.8)
    _finish(fig, ax, ylabel, title, legend=len(series) > 1)
    return _save(fig, path)


def _interval(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% interval; 0 for one value)."""
    mean, low, _ = mean_ci95(values)
    return mean, 0.0 if math.isnan(low) else mean - low


def plot_lines(
    path: str | os.PathLike,
    x: Sequence[float],
    series: Mapping[str, Sequence[Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    log_x: bool = False,
) -> Path | None:
    """One line per series, mean ± std over seeds (a shaded band): ``series[name][i]`` are the values at ``x[i]``;
    ``log_x`` draws x on a log scale (a compute axis).

    Returns the PNG written, or None when matplotlib is not installed.
    """
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    _draw_lines(ax, x, series)
    ax.set_xlabel(xlabel)
    if log_x:
        ax.set_xscale("log")
    _finish(fig, ax, ylabel, title, legend=len(series) > 1)
    return _save(fig, Path(path))


def plot_line_panels(
    path: str | os.PathLike,
    panels: Mapping[str, tuple[Sequence[float], Mapping[str, Sequence[Sequence[float]]], str]],
    *,
    xlabel: str,
    emphasis: str | None = None,
) -> Path | None:
    """:func:`plot_lines` side by side: ``panels[title] = (x, series, ylabel)``, one panel each, one legend (the
    last panel's); the series named ``emphasis`` is drawn thicker (the method a reproduction is about).

    Returns the PNG written, or None when matplotlib is not installed.
    """
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (title, (x, series, ylabel)) in zip(axes[0], panels.items(), strict=True):
        _draw_lines(ax, x, series, emphasis)
        ax.set_xlabel(xlabel)
        _style(ax, ylabel, title, legend=ax is axes[0][-1] and len(series) > 1)
    fig.tight_layout()
    return _save(fig, Path(path))


def _draw_lines(ax, x: Sequence[float], series: Mapping[str, Sequence[Sequence[float]]], emphasis=None) -> None:
    for name, values in series.items():
        stats = [mean_std(v) for v in values]
        means = [m for m, _ in stats]
        ax.plot(x, means, marker="o", label=name, linewidth=2.5 if name == emphasis else None)
        ax.fill_between(x, [m - s for m, s in stats], [m + s for m, s in stats], alpha=0.2)


def _finish(fig, ax, ylabel: str, title: str, legend: bool) -> None:
    _style(ax, ylabel, title, legend)
    fig.tight_layout()


def _style(ax, ylabel: str, title: str, legend: bool) -> None:
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, wrap=True)
    ax.grid(axis="y", alpha=0.3)
    if legend:  # right of the axes, where it hides no data
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def save_image_grid(
    path: str | os.PathLike,
    rows: Sequence[torch.Tensor],
    labels: Sequence[str],
    *,
    scale: int = 2,
    gap: int = 2,
) -> Path:
    """A PNG (written atomically) of labelled rows of images: ``rows[i]`` is a uint8 (N, C, H, W) tensor (C 1 or
    3; every row the same image size, rows may differ in N), drawn ``scale`` times enlarged, ``gap`` pixels apart,
    with ``labels[i]`` at its left. Needs only Pillow."""
    if len(rows) != len(labels) or not rows:
        raise ValueError(f"need one label per row, got {len(rows)} rows and {len(labels)} labels")
    height, width = (side * scale for side in rows[0].shape[-2:])
    if any(tuple(r.shape[-2:]) != tuple(rows[0].shape[-2:]) or r.dtype != torch.uint8 for r in rows):
        raise ValueError("every row must hold uint8 images of the same height and width")
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = int(max(draw.textlength(label) for label in labels)) + 2 * gap
    columns = max(len(r) for r in rows)
    canvas = Image.new(
        "RGB", (label_width + columns * (width + gap), len(rows) * (height + gap) + gap), (255, 255, 255)
    )
    draw = ImageDraw.Draw(canvas)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        top = gap + i * (height + gap)
        draw.text((gap, top + height // 2 - 5), label, fill=(0, 0, 0))
        images = row.expand(-1, 3, -1, -1) if row.shape[1] == 1 else row
        for j, image in enumerate(images):
            picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
            picture = picture.resize((width, height), Image.Resampling.NEAREST)
            canvas.paste(picture, (label_width + j * (width + gap), top))
    return atomic_write(Path(path), lambda f: canvas.save(f, format="PNG"))
