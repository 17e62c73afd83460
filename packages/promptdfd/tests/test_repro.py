"""promptdfd-repro at a tiny scale: the runs, the report, and the reuse of recorded runs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY

from promptdfd import repro
from promptdfd.config import build_config
from shared.errors import UserError


@pytest.fixture
def tiny_repro(monkeypatch):
    monkeypatch.setattr(repro, "build_config", lambda preset, **kw: build_config(preset, **(TINY | kw)))
    monkeypatch.setattr(repro, "EVAL_STUDENTS", {"demo": 2})


def test_repro_writes_the_report_and_reuses_runs(tiny_repro, tmp_path):
    methods = ["random-tokens", "promptdfd-two-stage", "promptdfd"]
    results = repro.run(tmp_path, torch.device("cpu"), seeds=1, methods=methods)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["methods"]) == set(methods) and set(results["hypotheses"]) == {"keyword", "vs_random"}
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {m} " in table for m in methods) and "| teacher " in table
    assert (tmp_path / "results.png").is_file() and (tmp_path / "prompter.png").is_file()
    assert len(saved["methods"]["promptdfd"][0]["students"]) == 2
    recorded = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    again = repro.run(tmp_path, torch.device("cpu"), seeds=1, methods=methods)
    assert again["methods"] == results["methods"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")} == recorded


def test_unknown_method_is_refused(tmp_path):
    with pytest.raises(UserError, match="unknown method"):
        repro.run(tmp_path, torch.device("cpu"), seeds=1, methods=["nonsense"])
