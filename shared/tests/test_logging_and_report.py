import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.logging import MetricsWriter, Progress, get_logger, read_metrics
from shared.report import (
    format_ci95,
    format_mean_std,
    hypothesis_lines,
    markdown_table,
    mean_ci95,
    mean_std,
    paired_differences,
    save_image_grid,
    t_quantile_975,
    write_results,
)


def test_metrics_jsonl(tmp_path):
    writer = MetricsWriter(tmp_path / "m" / "metrics.jsonl")
    writer.write({"epoch": 1, "loss": torch.tensor(0.5), "acc": 0.25})
    writer.write({"epoch": 2, "loss": float("nan")})
    assert read_metrics(tmp_path / "m" / "metrics.jsonl") == [
        {"epoch": 1, "loss": 0.5, "acc": 0.25},
        {"epoch": 2, "loss": "nan"},
    ]


def test_metrics_silent_off_main_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    MetricsWriter(tmp_path / "metrics.jsonl").write({"a": 1})
    assert not (tmp_path / "metrics.jsonl").exists()


def test_progress_prints_plain_lines_off_a_tty():
    stream = io.StringIO()
    progress = Progress(range(3), desc="epoch 1", every_s=0, stream=stream)
    for i in progress:
        progress.update(loss=1.0 / (i + 1))
    lines = stream.getvalue().splitlines()
    assert lines == ["epoch 1 1/3 loss=1", "epoch 1 2/3 loss=0.5", "epoch 1 3/3 loss=0.3333"]


def test_progress_disabled_passes_the_items_through():
    stream = io.StringIO()
    assert list(Progress(range(3), every_s=0, stream=stream, enabled=False)) == [0, 1, 2]
    assert stream.getvalue() == ""


def test_progress_silent_off_main_rank(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    stream = io.StringIO()
    assert list(Progress(range(3), every_s=0, stream=stream)) == [0, 1, 2]
    assert stream.getvalue() == ""


def test_logger_level_by_rank(monkeypatch):
    assert get_logger().level == 20
    monkeypatch.setenv("RANK", "2")
    assert get_logger().level == 30
    monkeypatch.delenv("RANK")
    get_logger()


def test_mean_std_and_tables(tmp_path):
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, 0.0)
    assert format_mean_std([0.9, 0.92], scale=100) == "91.00 ± 1.41"
    with pytest.raises(ValueError):
        mean_std([])
    table = markdown_table(["method", "acc"], [["ours", "97.1"], ["baseline", "90"]])
    assert table.splitlines() == [
        "| method   | acc  |",
        "|----------|------|",
        "| ours     | 97.1 |",
        "| baseline | 90   |",
    ]
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["1"]])
    md = write_results(tmp_path, title="Toy", table=table, headline="ours wins", results={"acc": {"ours": 97.1}})
    assert md.read_text().startswith("# Toy\n\n| method")
    assert json.loads((tmp_path / "results.json").read_text())["headline"] == "ours wins"


def test_format_record():
    from shared.logging import format_record

    assert format_record({"epoch": 3, "loss": 0.123456, "best": True}) == "epoch=3 loss=0.1235 best=True"


def test_metrics_rewind_drops_what_was_logged_after_the_checkpoint(tmp_path):
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    for step in (5, 10, 15):
        writer.write({"iteration": step, "loss": step / 10})
    writer.rewind("iteration", 10)
    assert [r["iteration"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [5, 10]
    writer.write({"iteration": 15, "loss": 2.0})
    assert read_metrics(tmp_path / "metrics.jsonl")[-1] == {"iteration": 15, "loss": 2.0}
    MetricsWriter(tmp_path / "absent.jsonl").rewind("iteration", 0)  # nothing logged yet: nothing to do
    assert not (tmp_path / "absent.jsonl").exists()


def test_run_cache_reuses_only_the_same_version_and_configuration(tmp_path):
    from shared.report import RunCache

    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return {"acc": value}

        return run

    cache = RunCache(tmp_path / "runs", version="1.0")
    assert cache.run("a", {"lr": 0.1, "widths": (1, 0.5)}, compute(1)) == {"acc": 1}
    assert cache.run("a", {"lr": 0.1, "widths": [1, 0.5]}, compute(2)) == {"acc": 1}  # tuples read back as lists
    assert cache.run("a", {"lr": 0.2, "widths": [1, 0.5]}, compute(3)) == {"acc": 3}  # another configuration
    assert RunCache(tmp_path / "runs", version="1.1").run("a", {"lr": 0.2, "widths": [1, 0.5]}, compute(4)) == {
        "acc": 4
    }  # written by another version of the code
    assert calls == [1, 3, 4]
    (tmp_path / "runs" / "b.json").write_text("{not json")
    assert cache.run("b", {}, compute(5)) == {"acc": 5}

    @dataclasses.dataclass(frozen=True)
    class Config:
        lr: float
        out: Path

    assert cache.run("c", {"config": Config(0.1, Path("x"))}, compute(6)) == {"acc": 6}
    assert cache.run("c", {"config": Config(0.1, Path("x"))}, compute(7)) == {"acc": 6}
    assert cache.run("c", {"config": Config(0.2, Path("x"))}, compute(8)) == {"acc": 8}
    assert json.loads((tmp_path / "runs" / "c.json").read_text())["config"] == {"config": {"lr": 0.2, "out": "x"}}

    folder = cache.fresh_folder("c")
    (folder / "old.pt").write_text("left by an older run")
    assert cache.fresh_folder("c") == tmp_path / "runs" / "c" and not any(folder.iterdir())


def test_paired_differences_and_hypothesis_lines():
    assert paired_differences([0.5, 0.75], [0.25, 1.0]) == [0.25, -0.25]
    with pytest.raises(ValueError):
        paired_differences([1.0], [1.0, 2.0])
    lines = hypothesis_lines(
        {
            "a": {"statement": "gain > 0", "measured": 0.1234, "held": True},
            "b": {"statement": "AP >= 0.8", "measured": 0.6, "held": False},
        }
    )
    assert lines == "- gain > 0: measured 0.123, held\n- AP >= 0.8: measured 0.600, did not hold"


def test_t_intervals_match_scipy_and_a_hand_computed_interval():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 29, 30, 31, 45, 200):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-3 if df <= 30 else 1e-4)
    # mean 2, sd 1, n 3: half-width 4.303 / sqrt(3) = 2.4843
    assert mean_ci95([1.0, 2.0, 3.0]) == pytest.approx((2.0, 2.0 - 2.4843, 2.0 + 2.4843), abs=1e-4)
    assert format_ci95([1.0, 2.0, 3.0]) == "+2.00 [-0.48, +4.48]" and format_ci95([-1.5]) == "-1.50"
    assert math.isnan(mean_ci95([4.0])[1])
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_figures_and_results_markdown(tmp_path):
    pytest.importorskip("matplotlib")
    from shared.report import plot_bars, plot_line_panels, plot_lines

    bars = plot_bars(
        tmp_path / "bars.png",
        ["a", "b"],
        {"ours": [[1.0, 2.0], [3.0]], "theirs": [[0.5], [1.0, 1.2]]},
        ylabel="acc",
        title="t",
    )
    lines = plot_lines(
        tmp_path / "lines.png", [0.5, 0.8], {"ours": [[1.0], [2.0, 2.5]]}, xlabel="x", ylabel="y", title="t"
    )
    intervals = plot_bars(
        tmp_path / "ci.png", ["a"], {"d": [[-1.0, 2.0, 0.5]]}, ylabel="difference", title="t", interval=True
    )
    panels = plot_line_panels(
        tmp_path / "panels.png",
        {
            "task a": ([1, 2], {"ours": [[1.0], [2.0]], "theirs": [[0.5], [1.0]]}, "rmse"),
            "task b": ([1], {"ours": [[3.0]]}, "auc"),
        },
        xlabel="labels",
        emphasis="ours",
    )
    assert Image.open(panels).width > Image.open(lines).width  # two panels side by side
    for figure in (bars, lines, intervals, panels):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = write_results(tmp_path, title="Toy", table="| a |", headline="h", results={}, figure=bars)
    assert "![Toy](bars.png)" in md.read_text()
    assert "](" not in write_results(tmp_path, title="Toy", table="| a |", headline="h", results={}).read_text()


def test_figures_without_matplotlib_are_skipped_with_a_note(tmp_path, monkeypatch):
    import builtins

    from shared.report import plot_bars, plot_line_panels

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert plot_bars(tmp_path / "x.png", ["a"], {"s": [[1.0]]}, ylabel="y", title="t") is None
    assert not (tmp_path / "x.png").exists()
    assert plot_line_panels(tmp_path / "p.png", {"a": ([1], {"s": [[1.0]]}, "y")}, xlabel="x") is None


def test_save_image_grid_lays_out_labelled_rows(tmp_path):
    red = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    red[:, 0] = 255
    grey = torch.full((2, 1, 4, 4), 128, dtype=torch.uint8)
    path = save_image_grid(tmp_path / "grid.png", [red, grey], ["red", "grey"], scale=2, gap=1)
    image = Image.open(path)
    pixels = torch.from_numpy(np.array(image.convert("RGB")))
    label_width = image.width - 3 * (8 + 1)  # three columns of 8-pixel images, 1 apart
    assert image.height == 2 * (8 + 1) + 1 and label_width > 10
    assert pixels[1:9, label_width : label_width + 8].reshape(-1, 3).unique(dim=0).tolist() == [[255, 0, 0]]
    assert pixels[10:18, label_width + 9 : label_width + 17].reshape(-1, 3).unique(dim=0).tolist() == [[128] * 3]
    assert pixels[10:18, label_width + 18 :].reshape(-1, 3).unique(dim=0).tolist() == [[255] * 3]  # a short row
    with pytest.raises(ValueError, match="one label per row"):
        save_image_grid(tmp_path / "bad.png", [red], ["a", "b"])
