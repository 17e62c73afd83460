import json

import pytest
import torch

from probteacher.config import build_config
from probteacher.engine import (
    LOSS_KEYS,
    _generator,
    build_models,
    build_optimizer,
    evaluate,
    evaluate_file,
    fit,
    load_detector,
    load_split,
    resolve_data,
    toy_key,
    warmup_factor,
)
from shared.checkpoint import checkpoint_path, load_checkpoint
from shared.errors import UserError
from shared.logging import read_metrics

CPU = torch.device("cpu")
SMALL = {"min_size": 64, "max_size": 64, "box_head_dim": 64, "roi_batch_size_per_image": 64}


def tiny(**overrides):
    values = dict(toy_source_train=24, toy_target_train=24, toy_test=6, toy_size=64, detector_overrides=SMALL)
    values |= dict(iterations=8, burn_in=4, batch_source=2, batch_target=2, log_every=2, checkpoint_every=3)
    values |= dict(eval_every=0, eval_batch_size=6)
    return build_config("demo", **{**values, **overrides})


def weights_of(path, key):
    return load_checkpoint(path).get(key)


def test_pt_run_writes_its_files_and_logs_every_loss(tmp_path):
    results = fit(tiny(eval_every=4), tmp_path / "run", CPU, quiet=True)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "metrics.jsonl", "eval.jsonl", "final.pt", "results.json"} <= files
    assert sorted(f for f in files if f.startswith("checkpoint-")) == [
        "checkpoint-00000006.pt",
        "checkpoint-00000008.pt",
    ]
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [2, 4, 6, 8]
    adapted = records[-1]
    assert {f"{k}_{s}" for k in LOSS_KEYS for s in ("sup", "unsup")} <= set(adapted)
    assert {"total", "pseudo_boxes_per_image", "anchor_area", "anchor_wh", "lr", "it_s"} <= set(adapted)
    assert "loss_cls_unsup" not in records[0]  # burn-in: supervised only
    assert records[0]["lr"] == pytest.approx(tiny().lr * warmup_factor(tiny(), 2))
    evals = read_metrics(tmp_path / "run" / "eval.jsonl")
    assert [(e["iteration"], e["split"], e["model"]) for e in evals][:2] == [
        (4, "target_test", "student"),
        (4, "source_test", "student"),
    ]  # no teacher before the end of burn-in
    assert {(e["split"], e["model"]) for e in evals if e["iteration"] == 8} == {
        (s, m) for s in ("target_test", "source_test") for m in ("student", "teacher")
    }
    assert results == json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["target_test"]) == {"student", "teacher"} and 0 <= results["target_test"]["teacher"]["AP50"] <= 1
    assert results["iterations"] == 8 and results["pseudo_boxes_per_image"] >= 0
    assert set(results["seconds_per_iteration"]) == {"burn_in", "adaptation"}
    assert len(results["anchor_wh"]["student"][0]) == 9
    final = load_checkpoint(tmp_path / "run" / "final.pt")
    assert final["teacher"].keys() == final["student"].keys() and final["classes"] == ["square", "disk", "triangle"]
    evaluated = evaluate_file(tmp_path / "run" / "final.pt", which="teacher")
    assert evaluated["AP50"] == pytest.approx(results["target_test"]["teacher"]["AP50"])
    assert evaluate_file(tmp_path / "run" / "final.pt", which="student", metric="coco")["mAP"] >= 0


def test_resume_reproduces_an_uninterrupted_run_bitwise(tmp_path):
    config = tiny(iterations=9, burn_in=3, checkpoint_every=100)
    full = fit(config, tmp_path / "full", CPU, quiet=True)
    part = fit(config, tmp_path / "part", CPU, quiet=True, stop_after=5)  # interrupted during adaptation
    assert part == {"iterations": 5, "stopped": True} and not (tmp_path / "part" / "results.json").exists()
    resumed = fit(config, tmp_path / "part", CPU, quiet=True, resume=True)
    for key in ("student", "teacher"):
        one, two = weights_of(tmp_path / "full" / "final.pt", key), weights_of(tmp_path / "part" / "final.pt", key)
        assert one.keys() == two.keys()
        for name in one:
            assert torch.equal(one[name], two[name]), (key, name)
    assert resumed["target_test"] == full["target_test"]

    def logged(run):
        return [{k: v for k, v in r.items() if k != "it_s"} for r in read_metrics(tmp_path / run / "metrics.jsonl")]

    assert logged("part") == logged("full")


def test_source_only_and_hard_threshold_runs(tmp_path):
    source_only = fit(tiny(method="source-only", iterations=3, workers=1), tmp_path / "so", CPU, quiet=True)
    assert set(source_only["target_test"]) == {"student"} and source_only["pseudo_boxes_per_image"] is None
    assert "adaptation" not in source_only["seconds_per_iteration"]
    assert weights_of(tmp_path / "so" / "final.pt", "teacher") is None
    with pytest.raises(UserError, match="no teacher"):
        evaluate_file(tmp_path / "so" / "final.pt", which="teacher")
    hard = fit(tiny(hard_threshold=0.05, iterations=4, burn_in=2), tmp_path / "hard", CPU, quiet=True)
    assert set(hard["target_test"]) == {"student", "teacher"}
    record = read_metrics(tmp_path / "hard" / "metrics.jsonl")[-1]
    assert "loss_box_reg_unsup" in record and "pseudo_boxes_per_image" in record


def test_anchor_weight_decay_follows_compat(tmp_path):
    """Burn-in gives the anchors no gradient: only the release's weight decay moves them."""
    for compat, moved in (("correct", False), ("official", True)):
        config = tiny(method="source-only", iterations=2, compat=compat, lr=0.1, warmup_iters=0)
        results = fit(config, tmp_path / compat, CPU, quiet=True)
        assert (results["anchor_wh"]["student"] != results["anchor_wh"]["initial"]) is moved, compat
        if moved:
            assert results["anchor_area"]["student"] < results["anchor_area"]["initial"]


def test_optimizer_groups_and_warmup():
    config = tiny(compat="official")
    student, teacher = build_models(config, CPU)
    assert not any(p.requires_grad for p in teacher.parameters())
    optimizer = build_optimizer(student, config)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 1e-4]
    assert len(optimizer.param_groups[1]["params"]) == 1  # the (9, 2) anchor (w, h)
    assert optimizer.defaults["fused"]  # AdamW on the CPU runs fused
    assert build_optimizer(student, tiny()).param_groups[1]["weight_decay"] == 0.0
    fixed = build_optimizer(build_models(tiny(learnable_anchors=False), CPU)[0], tiny())
    assert len(fixed.param_groups) == 2  # the same groups, so a fixed-anchor run branches from any burn-in
    assert not fixed.param_groups[1]["params"][0].requires_grad
    paper = build_config("paper", source="voc:a:b", target="voc:a:c", target_test="voc:a:d")
    assert warmup_factor(paper, 0) == pytest.approx(0.001) and warmup_factor(paper, 400) == 1.0
    assert warmup_factor(paper, 200) == pytest.approx(0.001 * 0.5 + 0.5)
    one, two = _generator(0, 5, 0), _generator(0, 5, 0)
    assert torch.equal(torch.rand(3, generator=one), torch.rand(3, generator=two))
    assert not torch.equal(torch.rand(3, generator=_generator(0, 6, 0)), torch.rand(3, generator=_generator(0, 5, 0)))


def test_toy_pair_is_cached_and_evaluate_reads_it():
    config = tiny()
    specs = resolve_data(config, quiet=True)
    assert toy_key(config) in specs["source"] and specs["target_test"].endswith("target:test")
    assert resolve_data(config, quiet=True) == specs
    student, _ = build_models(config, CPU)
    result = evaluate(student, load_split(specs["source_test"], config.class_names, "test"), CPU, batch_size=4)
    assert set(result) >= {"AP50", "per_class"} and set(result["per_class"]) == set(config.class_names)


def test_zero_work_and_bad_files(tmp_path):
    specs = resolve_data(tiny(), quiet=True)
    root = specs["source"].split(":")[1]
    empty = tmp_path / "empty"
    (empty / "ImageSets" / "Main").mkdir(parents=True)
    (empty / "Annotations").mkdir(), (empty / "JPEGImages").mkdir()
    (empty / "ImageSets" / "Main" / "test.txt").write_text("")
    real = build_config(
        "demo", task="c2f", classes=("square", "disk", "triangle"), source=f"voc:{root}:train",
        target=f"voc:{root}:train", target_test=f"voc:{empty}:test", iterations=2, burn_in=1,
    )  # fmt: skip
    with pytest.raises(UserError, match="test"):
        fit(real, tmp_path / "a", CPU, quiet=True)
    with pytest.raises(UserError, match="no checkpoint"):
        fit(tiny(), tmp_path / "b", CPU, quiet=True, resume=True)
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(1)}, bogus)
    with pytest.raises(UserError, match="not a file written by probteacher-train"):
        load_detector(bogus)
    with pytest.raises(UserError, match="--which"):
        load_detector(bogus, which="both")


def test_a_run_branched_from_a_burn_in_checkpoint_equals_the_uninterrupted_run(tmp_path):
    whole = fit(tiny(), tmp_path / "whole", CPU, quiet=True)
    fit(tiny(), tmp_path / "burn", CPU, quiet=True, stop_after=4)
    start = checkpoint_path(tmp_path / "burn", 4)
    branched = fit(tiny(), tmp_path / "branch", CPU, quiet=True, start_from=start)
    assert branched["target_test"] == whole["target_test"]
    for key in ("student", "teacher"):
        a, b = weights_of(tmp_path / "whole" / "final.pt", key), weights_of(tmp_path / "branch" / "final.pt", key)
        assert all(torch.equal(a[k], b[k]) for k in a), key
    assert json.loads((tmp_path / "branch" / "config.json").read_text())["started_from"] == str(start)
    # every variant branches from the same burn-in: source-only and the fixed-anchor ablation load it too
    fit(tiny(method="source-only"), tmp_path / "source-only", CPU, quiet=True, start_from=start)
    fit(tiny(learnable_anchors=False), tmp_path / "fixed", CPU, quiet=True, start_from=start)
    with pytest.raises(UserError, match="past the burn-in"):
        fit(tiny(), tmp_path / "late", CPU, quiet=True, start_from=checkpoint_path(tmp_path / "whole", 8))


def test_the_100_iteration_smoke_run_lowers_the_supervised_loss(tmp_path):
    """The CI-sized run: 60 burn-in + 40 adaptation iterations of the tiny detector on a small toy set."""
    config = tiny(iterations=100, burn_in=60, log_every=20, checkpoint_every=100, toy_source_train=40)
    results = fit(config, tmp_path / "smoke", CPU, quiet=True)
    records = read_metrics(tmp_path / "smoke" / "metrics.jsonl")
    supervised = [sum(r[f"{k}_sup"] for k in LOSS_KEYS) for r in records]
    assert supervised[-1] < 0.7 * supervised[0], supervised
    assert results["iterations"] == 100 and results["seconds_per_iteration"]["adaptation"] > 0
    assert results["pseudo_boxes_per_image"] > 0
