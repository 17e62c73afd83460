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
    first = repro.run(tmp_path / "a", torch.device("cpu"), seeds=1, sweep=(0.5, 0.9))
    second = repro.run(tmp_path / "b", torch.device("cpu"), seeds=1, sweep=(0.5, 0.9))
    assert first["summary"] == second["summary"] and first["sweep"] == second["sweep"] and first["lfw"] == second["lfw"]
    assert first["trained_runs"] == 2 + 5 + 2 * 3  # 2 MAEs, 5 releases at 0.75, 3 masking releases at 0.5 and 0.9
    assert first["ratios"] == [0.5, 0.75, 0.9] and set(first["sweep"]) == {
        f"{v}@{r}" for v in repro.SWEEP_VARIANTS for r in ("0.5", "0.75", "0.9")
    }
    grey = [first["sweep"][f"masked@{r}"] for r in ("0.5", "0.75", "0.9")]
    assert grey[0]["psnr"] > grey[1]["psnr"] > grey[2]["psnr"]  # more grey patches, further from the source
    lfw = first["lfw"]["mae"][0]
    assert lfw["0.5"]["psnr"] > lfw["0.9"]["psnr"] and set(lfw["0.75"]) >= {"psnr_masked", "pixels@1", "attacker@1"}
    assert first["lfw"]["masked"][0]["0.5"]["pixels@1"] >= first["lfw"]["masked"][0]["0.9"]["pixels@1"]
    summary = first["summary"]
    assert set(summary) == set(repro.VARIANTS)
    assert summary["original"]["instance@1"] == 1.0  # the attacker finds every original among the originals
    assert all(0 <= s["accuracy"] <= 1 and 0 <= s["identity@1"] <= 1 for s in summary.values())
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["headline"].startswith("verification accuracy FaceMAE") and saved["mask_ratio"] == 0.75
    table = (tmp_path / "a" / "results.md").read_text()
    assert all(label in table for label in repro.VARIANTS.values()) and (tmp_path / "a" / "results.png").is_file()
    assert repro.SWEEP_TITLE in table and repro.LFW_TITLE in table and "![" in table
    assert (tmp_path / "a" / "sweep.png").is_file() and (tmp_path / "a" / "faces.png").is_file()
    again = cli.repro_command(["--seeds", "1", "--out", str(tmp_path / "a"), "--device", "cpu", "--sweep", "0.5,0.9"])
    assert again["trained_runs"] == 0 and again["summary"] == summary  # every run reused from out/runs


def test_repro_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(UserError, match="preset"):
        repro.run(tmp_path, torch.device("cpu"), preset="paper")
    with pytest.raises(UserError, match="mask ratios in"):
        repro.run(tmp_path, torch.device("cpu"), mask_ratio=1.0)
    with pytest.raises(UserError, match="mask ratios in"):
        repro.run(tmp_path, torch.device("cpu"), sweep=(0.0, 0.5))
