"""Tests of one distillation run (promptdfd.engine.fit) and the files it reads and writes."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from promptdfd.bundles import load_classifier, load_generator
from promptdfd.engine import (
    candidate_ids,
    evaluate_file,
    fit,
    load_task,
    read_synthetic_set,
    teacher_outliers,
)
from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.errors import UserError

CPU = torch.device("cpu")


def _with_assets(assets, **overrides):
    return tiny_config(teacher=assets / "teacher.pt", generator=assets / "generator.pt", **overrides)


def test_assets_are_usable(assets):
    teacher = load_classifier(assets / "teacher.pt")
    generator = load_generator(assets / "generator.pt")
    report = json.loads((assets / "assets.json").read_text())
    assert teacher.classes == ["business", "music", "science", "sport"]
    assert report["teacher"]["test"]["accuracy"] > 0.9  # the toy task is easy: the teacher must learn it
    assert not any(p.requires_grad for p in generator.model.parameters())
    ids = candidate_ids(generator.tokenizer, 500)
    assert ids[0] == 5 and len(ids) == min(500, generator.tokenizer.vocab_size - 5)


@pytest.mark.parametrize("method", ["random-tokens", "ood-corpus", "unprompted-lm", "manual-prompt", "promptdfd"])
def test_every_method_runs_end_to_end(assets, tmp_path, method):
    results = fit(_with_assets(assets, method=method, schedule="two-stage"), tmp_path, CPU, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "synth.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and all(abs(sum(r["teacher_probs"]) - 1) < 1e-3 for r in rows)
    assert results["synthetic"]["n"] == 48 and 0 <= results["student"]["accuracy"] <= 1
    assert (tmp_path / "student.pt").is_file() and (tmp_path / "results.json").is_file()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    targeted = method in ("manual-prompt", "promptdfd")
    assert all((r["target_class"] >= 0) == targeted for r in rows)
    if method == "promptdfd":
        assert results["rl"]["iterations"] == 4 and (tmp_path / "prompter.pt").is_file()
        assert all(r["prompt"] for r in rows)
    if method == "manual-prompt":
        assert all(r["text"].startswith(("business", "music", "science", "sport")) for r in rows)


def test_more_students_score_the_same_set(assets, tmp_path):
    results = fit(_with_assets(assets, method="random-tokens", eval_students=3), tmp_path / "a", CPU, quiet=True)
    assert len(results["students"]) == 3 and results["students"][0] == results["student"]
    accuracies = [s["accuracy"] for s in results["students"]]
    assert results["student_accuracy_mean"] == pytest.approx(sum(accuracies) / 3)
    assert sorted(p.name for p in (tmp_path / "a" / "students").iterdir()) == ["1", "2"]
    alternating = fit(_with_assets(assets, eval_students=2), tmp_path / "b", CPU, quiet=True)
    assert alternating["schedule"] == "alternating" and len(alternating["students"]) == 2  # besides the in-loop one
    single = fit(_with_assets(assets, method="random-tokens"), tmp_path / "c", CPU, quiet=True)
    assert single["students"] == [single["student"]] and single["student"] == results["student"]


def test_data_kd_distils_on_the_training_texts(assets, tmp_path):
    results = fit(_with_assets(assets, method="data-kd", epochs=2), tmp_path, CPU, quiet=True)
    assert results["synthetic"]["n"] == len(load_task(tiny_config(), tmp_path / "x")["train"])


def test_resume_equals_an_uninterrupted_run(assets, tmp_path):
    config = _with_assets(assets, method="random-tokens", epochs=4)
    whole = fit(config, tmp_path / "whole", CPU, quiet=True)
    stopped = fit(config, tmp_path / "parts", CPU, quiet=True, stop_after_epoch=2)
    assert stopped["stopped_after_epoch"] == 2 and not (tmp_path / "parts" / "results.json").exists()
    resumed = fit(config, tmp_path / "parts", CPU, quiet=True, resume=True)
    assert resumed["student"] == whole["student"]
    a = load_classifier(tmp_path / "whole" / "student.pt").model.state_dict()
    b = load_classifier(tmp_path / "parts" / "student.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_alternating_resume_equals_an_uninterrupted_run(assets, tmp_path):
    config = _with_assets(assets, schedule="alternating", rl_iterations=12, replay_size=24)
    whole = fit(config, tmp_path / "whole", CPU, quiet=True)
    stopped = fit(config, tmp_path / "parts", CPU, quiet=True, stop_after_epoch=10)
    assert stopped["stopped_after_iteration"] == 10
    resumed = fit(config, tmp_path / "parts", CPU, quiet=True, resume=True)
    assert resumed["student"] == whole["student"] and resumed["rl"] == whole["rl"]
    a = load_classifier(tmp_path / "whole" / "student.pt").model.state_dict()
    b = load_classifier(tmp_path / "parts" / "student.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "synth.jsonl").read_text() == (tmp_path / "parts" / "synth.jsonl").read_text()


def test_same_seed_same_result_other_seed_differs(assets, tmp_path):
    config = _with_assets(assets, method="random-tokens")
    one = fit(config, tmp_path / "a", CPU, quiet=True)
    two = fit(config, tmp_path / "b", CPU, quiet=True)
    other = fit(_with_assets(assets, method="random-tokens", seed=1), tmp_path / "c", CPU, quiet=True)
    assert one["kd_final_loss"] == two["kd_final_loss"] and one["kd_final_loss"] != other["kd_final_loss"]


def test_alternating_schedule_runs(assets, tmp_path):
    results = fit(_with_assets(assets, schedule="alternating", replay_size=32), tmp_path, CPU, quiet=True)
    records = [json.loads(line) for line in (tmp_path / "rl.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4] and all("kd_loss" in r for r in records)
    assert results["synthetic"]["n"] == 4 * 16  # every fresh batch: the run's synthetic set
    assert (results["texts"], results["kd_updates"]) == (4 * 16, 4 * 2)  # every fresh batch; 2 updates each


def test_distilling_on_a_written_synthetic_set(assets, tmp_path):
    fit(_with_assets(assets, method="random-tokens"), tmp_path / "a", CPU, quiet=True)
    results = fit(_with_assets(assets), tmp_path / "b", CPU, quiet=True, synth_path=tmp_path / "a" / "synth.jsonl")
    assert results["synthetic"]["n"] == 48 and not (tmp_path / "b" / "generator.pt").exists()


def test_evaluate_file_scores_the_teacher(assets, tmp_path):
    result = evaluate_file(assets / "teacher.pt", tiny_config(), "test", CPU, tmp_path)
    assert result["accuracy"] > 0.9 and result["n"] == 800


def test_outlier_exposure_only_on_the_toy_task(tmp_path):
    assert len(teacher_outliers(tiny_config(), 10)) == 10
    assert teacher_outliers(tiny_config(teacher_outlier_weight=0.0), 10) == []
    assert teacher_outliers(tiny_config(data=tmp_path / "t.csv"), 10) == []


def test_bad_inputs_give_user_errors(assets, tmp_path):
    with pytest.raises(UserError, match="not a classifier"):
        fit(tiny_config(teacher=assets / "generator.pt", method="random-tokens"), tmp_path / "a", CPU, quiet=True)
    table = tmp_path / "three.csv"
    table.write_text("text,label\n" + "".join(f"word{i} here,{'abc'[i % 3]}\n" for i in range(30)))
    with pytest.raises(UserError, match="classes"):
        fit(_with_assets(assets, data=table, method="random-tokens"), tmp_path / "b", CPU, quiet=True)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="no texts"):
        read_synthetic_set(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(UserError, match="line 2"):
        read_synthetic_set(broken)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        load_classifier(corrupt)
    save_checkpoint(tmp_path / "other.pt", {"model": {}})
    assert "kind" not in load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a promptdfd model file"):
        load_classifier(tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not exist"):
        fit(tiny_config(data=tmp_path / "missing.csv"), tmp_path / "c", CPU, quiet=True)
