"""The active-learning loop: invariants, determinism, exact resume, every selector, zero-work guards."""

import dataclasses
import json

import pytest
import torch

from shared.errors import UserError
from tyger import engine
from tyger.config import build_config
from tyger.engine import fit, prepare_data, pretrain_querying, train_task_learner
from tyger.metrics import aulc

CPU = torch.device("cpu")
TINY = dict(init_size=8, budget=8, rounds=2, pretrain_epochs=1, finetune_epochs=1, task_epochs=3, patience=2)


def _selected(folder):
    return [json.loads(line) for line in (folder / "selected.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reg_config(sample_csvs):
    return build_config("demo", data=sample_csvs["regression"], split="random", **TINY)


@pytest.fixture(scope="module")
def reg_data(reg_config):
    return prepare_data(reg_config)  # pool 192, val 24, test 24


def test_loop_invariants_and_same_seed_same_result(tmp_path, reg_config, reg_data):
    config = reg_config
    first = fit(config, tmp_path / "a", CPU, quiet=True, data=reg_data)
    second = fit(config, tmp_path / "b", CPU, quiet=True, data=reg_data)
    assert [c["labelled"] for c in first["curve"]] == [8, 16, 24]  # grows by exactly b per round, R + 1 points
    picks = _selected(tmp_path / "a")
    indices = [p["pool_index"] for p in picks]
    assert len(indices) == len(set(indices)) == 16  # no molecule picked twice
    assert set(indices) <= set(range(len(reg_data.pool))) and set(indices).isdisjoint(first["labelled"][:8])
    pool_smiles = set(reg_data.pool.smiles)
    assert all(p["smiles"] in pool_smiles for p in picks)
    assert pool_smiles.isdisjoint(reg_data.test.smiles)  # the test set is never in the pool, never picked
    assert first["curve"] == second["curve"] and picks == _selected(tmp_path / "b")
    assert all(p["score"] is not None for p in picks)  # tyger records its pick-time score
    assert first["metric"] == "rmse" and not first["higher_is_better"] and first["aulc"] > 0
    x = [c["labelled"] / len(reg_data.pool) for c in first["curve"]]
    assert first["aulc_val"] == pytest.approx(aulc(x, [c["val"] for c in first["curve"]]))
    rows = (tmp_path / "a" / "curve.csv").read_text().splitlines()
    assert rows[0] == "round,labelled,fraction,metric" and len(rows) == 4
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2] and all("seconds" in r for r in records)
    assert "querying" in first and 0 <= first["querying"]["after"]["validity"] <= 1


def test_resume_after_an_interruption_reproduces_the_run(tmp_path, reg_config, reg_data):
    config = dataclasses.replace(reg_config, rounds=3)
    full = fit(config, tmp_path / "full", CPU, quiet=True, data=reg_data)
    stopped = fit(config, tmp_path / "cut", CPU, quiet=True, data=reg_data, stop_after_round=1)
    assert stopped["stopped_after_round"] == 1 and not (tmp_path / "cut" / "results.json").exists()
    with (tmp_path / "cut" / "selected.jsonl").open("a") as handle:  # written after the checkpoint: dropped
        handle.write(json.dumps({"round": 2, "pool_index": 0}) + "\n")
    resumed = fit(config, tmp_path / "cut", CPU, resume=True, quiet=True, data=reg_data)
    assert resumed["curve"] == full["curve"] and resumed["labelled"] == full["labelled"]
    assert _selected(tmp_path / "cut") == _selected(tmp_path / "full")


def test_eval_repeats_average_the_curve_without_changing_the_picks(tmp_path, reg_config, reg_data):
    one = fit(reg_config, tmp_path / "one", CPU, quiet=True, data=reg_data)
    three = fit(dataclasses.replace(reg_config, eval_repeats=3), tmp_path / "three", CPU, quiet=True, data=reg_data)
    assert three["labelled"] == one["labelled"] and _selected(tmp_path / "three") == _selected(tmp_path / "one")
    for a, b in zip(one["curve"], three["curve"], strict=True):
        assert len(b["test_repeats"]) == 3 and b["test_repeats"][0] == a["test"]  # the first is the usual learner
        assert b["test"] == pytest.approx(sum(b["test_repeats"]) / 3) and len(set(b["test_repeats"])) == 3
    with pytest.raises(UserError, match="eval-repeats"):
        build_config("demo", eval_repeats=0)


@pytest.mark.parametrize(
    "selector", ["tyger", "random", "coreset", "maxmin-ecfp", "bald", "learning-loss", "entropy", "margin", "badge"]
)
def test_every_selector_runs_the_same_loop_on_a_binary_task(tmp_path, selector, bin_config, bin_data, random_run):
    config = dataclasses.replace(bin_config, selector=selector)
    result = fit(config, tmp_path, CPU, quiet=True, data=bin_data)
    assert len(result["curve"]) == 3 and len(set(result["labelled"])) == 24
    assert result["metric"] == "roc_auc" and 0 <= result["final"] <= 1
    assert result["curve"][0] == random_run["curve"][0]  # round 0: the same labels and the same task learner


@pytest.fixture(scope="module")
def random_run(tmp_path_factory, bin_config, bin_data):
    config = dataclasses.replace(bin_config, selector="random")
    return fit(config, tmp_path_factory.mktemp("random"), CPU, quiet=True, data=bin_data)


@pytest.fixture(scope="module")
def bin_config(sample_csvs):
    return build_config("demo", data=sample_csvs["binary"], split="random", **TINY)


@pytest.fixture(scope="module")
def bin_data(bin_config):
    return prepare_data(bin_config)


def test_classification_only_selectors_refuse_regression(tmp_path, reg_config, reg_data):
    config = dataclasses.replace(reg_config, selector="entropy")
    with pytest.raises(UserError, match="supports only binary"):
        fit(config, tmp_path, CPU, data=reg_data)


def test_zero_work_guards(tmp_path, reg_config, reg_data):
    with pytest.raises(UserError, match="pool holds only 192"):
        fit(dataclasses.replace(reg_config, budget=100), tmp_path, CPU, data=reg_data)
    with pytest.raises(UserError, match="validation molecules"):
        prepare_data(build_config("demo", dataset="chembl-reg", limit=12, split="scaffold"))
    with pytest.raises(UserError, match="at least 2 labelled"):
        train_task_learner(build_config("demo"), reg_data.pool.subset([0]), reg_data.val, CPU, seed=0)
    with pytest.raises(UserError, match="fraction"):
        build_config("demo", budget=2.5)


def test_task_learner_learns_and_records_running_mean_losses(reg_data):
    config = build_config("demo", task_epochs=15, patience=15)
    train = reg_data.pool.subset(range(64))
    task = train_task_learner(config, train, train, CPU, seed=0)  # early stopping on the training set itself
    assert task.sample_losses.shape == (64,) and (task.sample_losses > 0).all()
    before = train_task_learner(build_config("demo", task_epochs=1, patience=1), train, train, CPU, seed=0)
    assert engine.evaluate(task.model, train, CPU, task.mean, task.std) < engine.evaluate(
        before.model, train, CPU, before.mean, before.std
    )


def test_pretraining_is_cached_by_its_settings(tmp_path, reg_config, reg_data, monkeypatch):
    config = reg_config
    state, _, report = pretrain_querying(config, reg_data, CPU, tmp_path / "q.pt")
    assert len(report["epochs"]) == 1 and report["epochs"][0]["trans"] > 0 and report["epochs"][0]["dk"] > 0

    def fail(*args, **kwargs):
        raise AssertionError("pre-trained again")

    monkeypatch.setattr(engine, "querying_epoch", fail)
    again, _, _ = pretrain_querying(config, reg_data, CPU, tmp_path / "q.pt")
    assert all(torch.equal(state[k], again[k]) for k in state)
    with pytest.raises(AssertionError, match="pre-trained again"):  # another seed is another pre-training
        pretrain_querying(dataclasses.replace(reg_config, seed=1), reg_data, CPU, tmp_path / "q.pt")


@pytest.mark.parametrize("fb", ["loss-rank", "relation", "none"])
def test_tyger_weights_distances_by_the_feedback_head_only_when_it_is_trained(reg_config, reg_data, fb):
    config = dataclasses.replace(reg_config, fb=fb)
    module = engine.new_querying_module(config, reg_data, CPU)
    inputs = engine.selection_inputs(config, reg_data, None, module, CPU, seed=0)
    # u(z) learns only from the loss-rank feedback; elsewhere it is an untrained head and must not weight picks
    assert (inputs["predicted_loss"] is not None) == (fb == "loss-rank")
    assert inputs["embeddings"].shape == (len(reg_data.pool), module.proj.out_features)
