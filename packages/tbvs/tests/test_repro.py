"""tbvs-repro on a tiny scale: every model is really trained and evaluated, the report is complete, runs are reused."""

import json

import pytest
import torch

from shared.errors import UserError
from tbvs import cli, repro
from tbvs.data import prepare_a2d
from tbvs.engine import EVAL_COLUMNS
from tbvs.synthetic import make_synthetic


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tbvs-repro-data")
    make_synthetic(root / "raw", train_videos=6, test_videos=4, size=96, seed=3, oracle_flow=True)
    prepare_a2d(root / "raw", root / "prepared", flow="oracle")
    return root / "prepared"


def test_repro_writes_every_file_and_reuses_its_runs(prepared, tmp_path, monkeypatch):
    tiny = dict(data=prepared, flow="oracle", input_size=64, batch_size=4, eval_batch_size=16, iterations=3)
    monkeypatch.setitem(repro.SCALES, "demo", tiny | dict(log_every=1, checkpoint_every=3))
    out = tmp_path / "repro"
    results = repro.run(out, torch.device("cpu"), seeds=1)
    assert results["trained_runs"] == 4 and results["seeds"] == 1 and results["iterations"] == 3
    for name in ("results.json", "results.md", "results.png", "masks.png"):
        assert (out / name).is_file(), name
    assert set(results["summary"]) == set(repro.MODELS)
    for model in repro.MODELS:
        assert set(results["summary"][model]) == set(repro.SUBSETS)
        assert all(0 <= results["summary"][model][s][c] <= 1 for s in repro.SUBSETS for c in EVAL_COLUMNS)
    assert results["runs"]["shuffled_flow"][0]["shuffle_flow"] is True
    assert set(results["paired_differences"]) == {
        "full_minus_no_motion", "full_minus_shuffled_flow", "full_minus_no_alignment"
    }  # fmt: skip
    assert set(results["hypotheses"]) == {
        "no_motion_ambiguous", "full_ambiguous", "full_appearance", "no_motion_appearance", "shuffle_cost"
    }  # fmt: skip
    assert results["picture"] and all(p["query"] for p in results["picture"])
    table = (out / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    assert all(c in header for c in EVAL_COLUMNS)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(repro.MODELS) * len(repro.SUBSETS)
    assert all(label in table for label, _, _ in repro.MODELS.values())
    assert "did not hold" in table or "held" in table
    saved = json.loads((out / "results.json").read_text())
    assert saved["headline"].startswith("ambiguous (motion-only) mean IoU")
    again = cli.repro_command(["--seeds", "1", "--out", str(out), "--device", "cpu"])
    assert again["trained_runs"] == 0 and again["summary"] == saved["summary"]


def test_repro_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(UserError, match="preset"):
        repro.run(tmp_path, torch.device("cpu"), preset="paper")
    with pytest.raises(UserError, match="iterations"):
        repro.run(tmp_path, torch.device("cpu"), iterations=0)
    with pytest.raises(UserError, match="seeds"):
        cli.repro_command(["--seeds", "0", "--out", str(tmp_path)])
