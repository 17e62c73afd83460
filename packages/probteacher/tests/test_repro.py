import json

import pytest
import torch

from probteacher import repro

SMALL = {"min_size": 64, "max_size": 64, "box_head_dim": 64, "roi_batch_size_per_image": 64}


@pytest.fixture
def tiny_scale(monkeypatch):
    values = dict(toy_source_train=16, toy_target_train=16, toy_test=6, toy_size=64, detector_overrides=SMALL)
    values |= dict(iterations=6, burn_in=3, batch_source=2, batch_target=2, checkpoint_every=3, eval_batch_size=6)
    monkeypatch.setitem(repro.SCALES, "demo", values)


def test_repro_branches_every_run_from_one_burn_in_and_reuses_recorded_runs(tmp_path, tiny_scale):
    results = repro.run(tmp_path, torch.device("cpu"), seeds=1)
    assert results["trained_runs"] == 1 + len(repro.VARIANTS)
    assert set(results["target_ap50"]) == set(repro.VARIANTS)
    assert all(0.0 <= v[0] <= 1.0 for v in results["target_ap50"].values())
    student = results["target_ap50_student"]  # the PT runs' students, the model itself for source-only
    assert student["source_only"] == results["target_ap50"]["source_only"]
    assert student["pt"][0] == results["runs"]["pt"][0]["target_test"]["student"]["AP50"]
    assert set(results["hypotheses"]) == {"source_ap50", "pt_gain"}
    text = (tmp_path / "results.md").read_text()
    assert "PT w/o EFL" in text and "hard-threshold" in text and "detections.png" in text
    assert "student's AP50 fogged target" in text
    assert (tmp_path / "detections.png").is_file()
    burn_in = tmp_path / "runs" / "burn_in-seed0"
    for key in repro.VARIANTS:
        config = json.loads((tmp_path / "runs" / f"{key}-seed0" / "config.json").read_text())
        assert config["started_from"].startswith(str(burn_in))
    again = repro.run(tmp_path, torch.device("cpu"), seeds=1)
    assert again["trained_runs"] == 0 and again["target_ap50"] == results["target_ap50"]


def test_unknown_preset_is_a_user_error():
    with pytest.raises(Exception, match="unknown preset"):
        repro.run_config("paper", "pt", 0)
