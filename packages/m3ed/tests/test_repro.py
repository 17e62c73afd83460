"""m3ed-repro: every run is a recorded fit, the report (table, figure, ablations) is written, runs are reused."""

import json

from m3ed import cli, repro
from m3ed.models import MODEL_NAMES


def test_repro_writes_table_figure_and_results_and_reuses_its_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(repro, "COMBINATIONS", ("avl",))  # one of the seven combinations: a quick check
    out = tmp_path / "repro"
    argv = ["--seeds", "1", "--epochs", "1", "--out", str(out), "--device", "cpu"]
    results = cli.repro_command(argv)
    assert set(results["context"]) == set(MODEL_NAMES)
    assert all(len(results["context"][m]["avl"]) == 1 for m in MODEL_NAMES)
    assert set(results["multi_label"]) == set(MODEL_NAMES)
    record = json.loads((out / "runs" / "mmgcn-avl-multi-seed0.json").read_text())
    assert record["config"]["config"]["task"] == "multi" and record["config"]["config"]["model"] == "mmgcn"
    assert results["multi_label"]["mmgcn"]["micro_f1"] == [record["result"]["test_micro_f1"]]
    assert set(results["ablation"]) == set(repro.ABLATIONS)
    assert results["ablation"]["all four (end, released)"] == results["context"]["mdi"]["avl"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["headline"].startswith("A+V+L test WF1: MDI") and saved["seeds"] == 1 and saved["epochs"] == 1
    assert saved["preset"] == "demo"
    text = (out / "results.md").read_text()
    assert "| utterance MLP" in text and "global + intra-speaker" in text and "![" in text
    assert "| MMGCN" in text and "multi-label micro F1" in text
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "| model" in capsys.readouterr().out
    # each run is a real training run with its files, recorded with the version and configuration
    record = json.loads((out / "runs" / "mdi-avl-per_block-seed0.json").read_text())
    assert record["config"]["config"]["combine"] == "per_block" and record["config"]["config"]["epochs"] == 1
    assert record["result"]["test_weighted_f1"] == results["ablation"]["all four (per_block, paper figure)"][0]
    assert (out / "runs" / "mdi-avl-per_block-seed0" / "model.pt").is_file()
    # run again: the recorded runs are reused, not trained again
    (out / "runs" / "mdi-avl-per_block-seed0" / "model.pt").unlink()
    again = cli.repro_command(argv)
    assert again["context"] == results["context"] and again["ablation"] == results["ablation"]
    assert again["multi_label"] == results["multi_label"]
    assert not (out / "runs" / "mdi-avl-per_block-seed0" / "model.pt").exists()
