"""tyger-repro on a tiny scale: every run is real, results are deterministic per seed and cached."""

import json

import pytest
import torch

from shared.errors import UserError
from tyger import cli, repro

TINY = {
    "preset": "demo",
    "options": {"init_size": 8, "budget": 8, "rounds": 1, "pretrain_epochs": 1, "finetune_epochs": 1,
                "task_epochs": 2, "patience": 1},
    "limits": {"nci-alerts": 300},
}  # fmt: skip
METHODS = ["tyger", "random", "entropy"]


def test_repro_reports_every_task_deterministically_and_reuses_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(repro.SCALES, "demo", TINY)
    first = repro.run(tmp_path / "a", torch.device("cpu"), seeds=1, methods=METHODS)
    second = repro.run(tmp_path / "b", torch.device("cpu"), seeds=1, methods=METHODS)
    assert first["tasks"] == second["tasks"] and first["curves"] == second["curves"]
    assert first["trained_runs"] == 2 + 3 + 3  # entropy is left out of the regression task
    tasks = first["tasks"]
    assert set(tasks) == set(repro.TASKS) and set(tasks["chembl-reg"]["aulc"]) == {"tyger", "random"}
    assert [tasks[t]["task_type"] for t in repro.TASKS] == ["regression", "binary", "multilabel"]
    assert all(1 <= s["tyger_rank"] <= len(s["ranking"]) and "tyger_beats_random" in s for s in tasks.values())
    assert all(len(c[0]) == 2 for curves in first["curves"].values() for c in curves.values())  # R + 1 points
    reports = first["querying"]["chembl-reg"]
    assert len(reports) == 1 and 0 <= reports[0]["after"]["validity"] <= 1
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["headline"].startswith("AULC, chembl-reg: Tyger ranks")
    table = (tmp_path / "a" / "results.md").read_text()
    assert "Tyger's rank" in table and "Tyger beats random" in table and "greedy validity" in table
    assert (tmp_path / "a" / "results.png").is_file() and "![" in table
    again = cli.repro_command(["--seeds", "1", "--out", str(tmp_path / "a"), "--device", "cpu", "--methods",
                               ",".join(METHODS)])  # fmt: skip
    assert again["trained_runs"] == 0 and again["tasks"] == first["tasks"]  # every run reused from out/runs


def test_repro_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(UserError, match="scales"):
        repro.run(tmp_path, torch.device("cpu"), preset="paper")
    with pytest.raises(UserError, match="unknown task"):
        repro.run(tmp_path, torch.device("cpu"), tasks=["tox21"])
