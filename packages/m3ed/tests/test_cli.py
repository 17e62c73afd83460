"""The console scripts end to end on the synthetic release: train, resume, eval, stats, torchrun, bad input."""

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from m3ed import cli
from m3ed.data import SYNTHETIC_RELEASE, multi_hot_targets, open_release
from m3ed.engine import tabulate_runs
from m3ed.metrics import multilabel_report
from m3ed.release import EMOTIONS, M3EDRelease
from m3ed.synthetic import SyntheticConfig, make_synthetic_release
from shared.checkpoint import load_checkpoint
from shared.cli import main
from shared.data import cache_dir
from shared.errors import UserError
from shared.logging import read_metrics

FAST = ["--epochs", "2", "--quiet"]


def run(command, argv, capsys):
    """A console script in-process through the same wrapper: (exit code, stderr)."""
    return main(command)([str(a) for a in argv]), capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "mdi"
    return out, cli.train_command(["--out", str(out), *FAST])


def test_train_writes_a_run_scored_at_the_best_validation_epoch(trained):
    out, results = trained
    assert results["model"] == "mdi" and results["modalities"] == "avl"
    records = read_metrics(out / "metrics.jsonl")
    best = max(records, key=lambda r: r["val_weighted_f1"])
    assert results["best_epoch"] == best["epoch"]
    assert results["test_weighted_f1"] == pytest.approx(100 * best["test_weighted_f1"])
    assert json.loads((out / "results.json").read_text())["test_weighted_f1"] == results["test_weighted_f1"]
    assert set(results["test_per_class_f1"]) == {"Happy", "Neutral", "Sad", "Disgust", "Anger", "Fear", "Surprise"}


def test_eval_reproduces_the_selected_test_score(trained, capsys):
    out, results = trained
    report = cli.eval_command(["--run", str(out)])
    assert 100 * report["weighted_f1"] == pytest.approx(results["test_weighted_f1"])
    assert '"weighted_f1"' in capsys.readouterr().out
    table = tabulate_runs([out])
    assert "| MDI" in table and "A+V+L" in table


def test_resume_continues_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    argv = ["--model", "dialoguernn", "--modalities", "al", "--epochs", "3", "--quiet"]
    cli.train_command([*argv, "--out", str(straight)])
    cli.train_command([*argv, "--out", str(resumed)])
    for name in ("checkpoint-00000003.pt", "model.pt", "results.json"):  # interrupted after epoch 2
        (resumed / name).unlink()
    assert "scaler" in load_checkpoint(resumed / "checkpoint-00000002.pt")  # the AmpScaler's state, saved
    cli.train_command([*argv, "--out", str(resumed), "--resume"])
    a, b = (load_checkpoint(run / "model.pt")["state_dict"] for run in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((straight / "results.json").read_text())["test_weighted_f1"] == pytest.approx(
        json.loads((resumed / "results.json").read_text())["test_weighted_f1"]
    )


def test_two_process_gloo_training(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "m3ed.cli"]
    cmd += ["train", "--out", str(tmp_path), "--device", "cpu", *FAST]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "results.json").read_text())["test_weighted_f1"] > 20.0
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 2  # rank 0 alone writes


def test_stats_prints_what_the_generator_wrote(tmp_path, capsys):
    truth = make_synthetic_release(tmp_path / "release", SyntheticConfig(movies=6), seed=3)
    printed = cli.stats_command(["--data", str(tmp_path / "release")])
    assert printed["splits"] == truth["splits"]
    text = capsys.readouterr().out
    for split in ("train", "val", "test"):
        assert str(truth["splits"][split]["utterances"]) in text


def test_annotations_none_trains_from_the_pickle_alone(tmp_path, capsys):
    root = tmp_path / "release"
    make_synthetic_release(root, SyntheticConfig(movies=6), seed=2)
    argv = ["--data", root, "--model", "utt-mlp", "--epochs", "1", "--quiet"]
    checked = cli.train_command([str(a) for a in [*argv, "--out", tmp_path / "checked"]])
    for name in ("annotation.json", "relation_annotation_release.json"):
        (root / name).unlink()
    shutil.rmtree(root / "splitInfo")
    code, err = run(cli.train_command, [*argv, "--out", tmp_path / "refused"], capsys)
    assert code == 2 and "split list not found" in err
    out = tmp_path / "pickle-only"
    alone = cli.train_command([str(a) for a in [*argv, "--annotations", "none", "--out", out]])
    assert json.loads((out / "config.json").read_text())["annotations"] == "none"
    assert alone["test_weighted_f1"] == checked["test_weighted_f1"]  # the same data, read without the annotation
    assert 100 * cli.eval_command(["--run", str(out)])["weighted_f1"] == pytest.approx(alone["test_weighted_f1"])
    with pytest.raises(UserError, match="--annotations must be one of check, none, got 'ignore'"):
        open_release(root, annotations="ignore")


def test_multi_label_task_learns_the_blended_emotions(trained, tmp_path, capsys):
    out = tmp_path / "multi"
    results = cli.train_command(["--out", str(out), "--task", "multi", "--at-least-one", "--quiet"])
    assert results["task"] == "multi" and "test_weighted_f1" not in results
    records = read_metrics(out / "metrics.jsonl")
    assert results["best_epoch"] == max(records, key=lambda r: r["val_micro_f1"])["epoch"]
    # trivial baseline: every utterance gets the most frequent emotion of the train split's multi-hot targets
    release = open_release(None)
    targets = multi_hot_targets(release)
    train = np.concatenate([targets[d] for d in release.dialogues_in("train")])
    test = np.concatenate([targets[d] for d in release.dialogues_in("test")]).astype(int)
    majority = np.zeros_like(test)
    majority[:, train.sum(0).argmax()] = 1
    baseline = 100 * multilabel_report(test, majority)["micro_f1"]
    assert results["test_micro_f1"] > baseline + 3
    report = cli.eval_command(["--run", str(out)])
    assert 100 * report["micro_f1"] == pytest.approx(results["test_micro_f1"])
    assert 100 * report["hamming_loss"] == pytest.approx(results["test_hamming_loss"])
    assert "| MDI" in tabulate_runs([out])
    with pytest.raises(UserError, match="mixes single- and multi-label runs"):
        tabulate_runs([out, trained[0]])
    code, err = run(cli.train_command, ["--task", "multi", "--annotations", "none", "--out", tmp_path / "x"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--task multi needs annotation.json" in err


def test_make_synthetic_refuses_to_overwrite(tmp_path, capsys):
    cli.make_synthetic_command(["--out", str(tmp_path / "syn"), "--movies", "6"])
    assert M3EDRelease(tmp_path / "syn").dialogues_in("test")
    code, err = run(cli.make_synthetic_command, ["--out", tmp_path / "syn"], capsys)
    assert code == 2 and "already holds a release" in err


def _broken_release(root: Path, change) -> Path:
    make_synthetic_release(root, SyntheticConfig(movies=6), seed=1)
    pickle_path = next(root.glob("*.pkl"))
    items = pickle.loads(pickle_path.read_bytes())
    change(items)
    pickle_path.write_bytes(pickle.dumps(items))
    return root


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    def drop_utterance(items):  # consistent inside the pickle, one utterance short of the annotation
        first = next(iter(items[0]))
        for index in range(7):
            items[index][first] = items[index][first][:-1]

    def bad_label(items):
        first = next(iter(items[2]))
        items[2][first][0] = 9

    cases = [
        (cli.stats_command, ["--data", tmp_path / "nowhere"], "--data folder not found"),
        (cli.stats_command, ["--data", _broken_release(tmp_path / "short", drop_utterance)], "missing utterances"),
        (cli.stats_command, ["--data", _broken_release(tmp_path / "label", bad_label)], "label"),
        (cli.train_command, ["--modalities", "xyz", "--out", tmp_path / "r1"], "modalit"),
        (cli.train_command, ["--branches", "global,future", "--out", tmp_path / "r2"], "--branches"),
        (cli.train_command, ["--model", "dialoguexl"], "invalid choice"),
        (cli.train_command, ["--annotations", "ignore"], "invalid choice"),
        (cli.eval_command, ["--run", tmp_path / "no-run"], "--run folder not found"),
    ]
    for command, argv, expected in cases:
        code, err = run(command, argv, capsys)
        assert code == 2, (argv, err)
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


def _counts_from_the_files(root: Path) -> dict:
    """Per-split statistics counted straight from splitInfo/ and annotation.json, without the package's readers."""
    split_of = {
        movie: split
        for split in ("train", "val", "test")
        for movie in (root / "splitInfo" / f"movie_list_{split}.txt").read_text().split()
    }
    counts = {
        split: {"movies": 0, "dialogues": 0, "turns": 0, "utterances": 0, "labels": dict.fromkeys(EMOTIONS, 0)}
        | {"multi_label": 0}
        for split in ("train", "val", "test")
    }
    for movie, dialogues in json.loads((root / "annotation.json").read_text(encoding="utf-8")).items():
        count = counts[split_of[movie]]
        count["movies"] += 1
        for dialogue in dialogues.values():
            ordered = sorted(dialogue["Dialog"].items(), key=lambda item: int(item[0].rsplit("_", 1)[1]))
            speakers = [u["Speaker"] for _, u in ordered]
            count["dialogues"] += 1
            count["turns"] += 1 + sum(a != b for a, b in pairwise(speakers))
            count["utterances"] += len(ordered)
            for _, u in ordered:
                count["labels"][u["EmoAnnotation"]["final_main_emo"]] += 1
                count["multi_label"] += "," in u["EmoAnnotation"]["final_mul_emo"]
    return counts


def test_stats_on_the_embedded_release_equal_counts_from_its_files(capsys):
    printed = cli.stats_command([])
    root = cache_dir("m3ed", SYNTHETIC_RELEASE)
    counts = _counts_from_the_files(root)
    assert printed["splits"] == counts
    assert [counts[s]["movies"] for s in ("train", "val", "test")] == [8, 2, 2]
    annotated = {d for dialogues in json.loads((root / "annotation.json").read_text()).values() for d in dialogues}
    relation = json.loads((root / "relation_annotation_release.json").read_text())
    assert printed["relation_without_annotation"] == len({d for m in relation.values() for d in m} - annotated) == 3
    assert printed["coverage"] == {"audio": 1.0, "visual": 1.0, "text": 1.0}
    train = counts["train"]
    row = [train["movies"], train["dialogues"], train["turns"], train["utterances"], train["multi_label"]]
    train_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| train "))
    cells = [c.strip() for c in train_line.split("|")]
    assert cells[2:7] == [str(n) for n in row] and cells[7:14] == [str(n) for n in train["labels"].values()]


def test_console_scripts_answer_help():
    scripts = Path(sys.executable).parent
    for script in ("m3ed-train", "m3ed-eval", "m3ed-stats", "m3ed-make-synthetic", "m3ed-repro"):
        result = subprocess.run([scripts / script, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage:" in result.stdout, script


def test_mixed_precision_epoch_on_cpu(tmp_path):
    """--amp trains under bf16 autocast on CPU; the loss stays finite and the run is scored."""
    results = cli.train_command(["--amp", "--epochs", "1", "--quiet", "--out", str(tmp_path / "amp")])
    assert math.isfinite(read_metrics(tmp_path / "amp" / "metrics.jsonl")[0]["train_loss"])
    assert 0 < results["test_weighted_f1"] <= 100


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_loss_scale_is_saved_and_restored_on_cuda(tmp_path):
    """--amp on CUDA scales the loss (fp16); the scale is in every checkpoint and --resume continues with it."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    argv = ["--amp", "--device", "cuda", "--epochs", "3", "--quiet"]
    cli.train_command([*argv, "--out", str(straight)])
    cli.train_command([*argv, "--out", str(resumed)])
    for name in ("checkpoint-00000003.pt", "model.pt", "results.json"):  # interrupted after epoch 2
        (resumed / name).unlink()
    scale = load_checkpoint(resumed / "checkpoint-00000002.pt")["scaler"]["scale"]
    assert scale > 0
    cli.train_command([*argv, "--out", str(resumed), "--resume"])
    a, b = (load_checkpoint(run / "checkpoint-00000003.pt") for run in (straight, resumed))
    assert a["scaler"] == b["scaler"]
    assert all(torch.allclose(a["model"][k], b["model"][k], atol=1e-5) for k in a["model"])
