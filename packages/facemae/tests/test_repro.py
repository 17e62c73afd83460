"""facemae-repro on a tiny scale: every run is real, results are deterministic per seed and cached."""

import json

import pytest
import torch

from facemae import cli, repro
from shared.errors import UserError

TINY = {
    "split": {"source": (8, 4), "target": (8, 4), "pair_identities": 4, "pairs": 40},
    "mae_epochs": 2,
    "phi_epochs": 1,
    "fr_epochs": 1,
    "fr_steps": [],
}


def test_repro_reports_every_release_deterministically_and_reuses_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(repro.SCALES, "demo", TINY)
    first = repro.run(tmp_path / "a", torch.device("cpu"), seeds=1)
    second = repro.run(tmp_path / "b", torch.device("cpu"), seeds=1)
    assert first["summary"] == second["summary"] and first["trained_runs"] == 7  # 2 MAEs + 5 recognisers
    summary = first["summary"]
    assert set(summary) == set(repro.VARIANTS)
    assert summary["original"]["instance@1"] == 1.0  # the attacker finds every original among the originals
    assert all(0 <= s["accuracy"] <= 1 and 0 <= s["identity@1"] <= 1 for s in summary.values())
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["headline"].startswith("verification accuracy FaceMAE") and saved["mask_ratio"] == 0.75
    table = (tmp_path / "a" / "results.md").read_text()
    assert all(label in table for label in repro.VARIANTS.values()) and (tmp_path / "a" / "results.png").is_file()
    again = cli.repro_command(["--seeds", "1", "--out", str(tmp_path / "a"), "--device", "cpu"])
    assert again["trained_runs"] == 0 and again["summary"] == summary  # every run reused from out/runs


def test_repro_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(UserError, match="preset"):
        repro.run(tmp_path, torch.device("cpu"), preset="paper")
    with pytest.raises(UserError, match="--mask-ratio in"):
        repro.run(tmp_path, torch.device("cpu"), mask_ratio=1.0)
