import io
import json

import pytest
import torch

from shared.logging import MetricsWriter, Progress, get_logger, read_metrics
from shared.report import format_mean_std, markdown_table, mean_std, write_results


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
