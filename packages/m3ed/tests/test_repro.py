"""m3ed-repro: every run is a recorded fit, the report (table, figure, ablations) is written, runs are reused."""

import json

import pytest

from m3ed import cli, repro
from m3ed.data import open_release
from m3ed.models import MODEL_NAMES


def test_repro_writes_table_figure_and_results_and_reuses_its_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(repro, "COMBINATIONS", ("avl",))  # one of the seven combinations: a quick check
    out = tmp_path / "repro"
    argv = ["--seeds", "1", "--epochs", "1", "--out", str(out), "--device", "cpu"]
    results = cli.repro_command(argv)
    assert set(results["context"]) == set(MODEL_NAMES)
    assert all(len(results["context"][m]["avl"]) == 1 for m in MODEL_NAMES)
    assert set(results["tasks"]) == {*MODEL_NAMES.values(), *repro.TASK_VARIANTS}
    record = json.loads((out / "runs" / "mmgcn-avl-multi-seed0.json").read_text())
    config = record["config"]["config"]
    assert config["task"] == "multi" and config["model"] == "mmgcn" and config["at_least_one"]
    assert results["tasks"]["MMGCN"]["micro_f1"] == [record["result"]["test_micro_f1"]]
    assert results["tasks"]["MDI"]["weighted_f1"] == results["context"]["mdi"]["avl"]
    variant = json.loads((out / "runs" / "dialoguegcn-nonodal-avl-seed0.json").read_text())
    assert not variant["config"]["config"]["nodal_attention"] and variant["result"]["overrides"]
    assert results["tasks"]["DialogueGCN w/o nodal attention"]["weighted_f1"] == [variant["result"]["test_weighted_f1"]]
    assert set(results["ablation"]) == set(repro.ABLATIONS)
    assert results["ablation"]["all four (end, released)"] == results["context"]["mdi"]["avl"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["headline"].startswith("A+V+L test WF1: MDI") and saved["seeds"] == 1 and saved["epochs"] == 1
    assert saved["preset"] == "demo"
    text = (out / "results.md").read_text()
    assert "| utterance MLP" in text and "global + intra-speaker" in text and "![" in text
    assert "| MMGCN" in text and "multi-label micro F1" in text and "| majority class of train" in text
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
    assert again["tasks"] == results["tasks"]
    assert not (out / "runs" / "mdi-avl-per_block-seed0" / "model.pt").exists()


def test_majority_scores_predict_the_train_majority_everywhere():
    """The no-model reference: the train split's most frequent emotion predicted for every test utterance."""
    release = open_release(None)
    prior = repro.majority_scores(release)
    labels = [y for d in release.dialogues_in("train") for y in release.features.labels[d]]
    majority = max(set(labels), key=labels.count)
    truth = [y for d in release.dialogues_in("test") for y in release.features.labels[d]]
    share = truth.count(majority) / len(truth)  # weighted F1 of a constant: share * 2 share / (share + 1)
    assert prior["weighted_f1"] == pytest.approx(100 * share * 2 * share / (share + 1))
    assert 0 < prior["macro_f1"] < prior["micro_f1"] < 100
