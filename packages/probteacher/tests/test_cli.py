import json
import os
import subprocess
import sys

import pytest
import torch

from probteacher.cli import COMMANDS, eval_command, make_toy_command, train_command, train_parser
from probteacher.config import build_config
from shared.checkpoint import load_checkpoint
from shared.cli import main

SMALL = ["--iterations", "4", "--burn-in", "2", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--quiet"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "pair"
    argv = ["--out", str(out), "--source-train", "6", "--target-train", "6", "--test", "3", "--size", "64"]
    done = subprocess.run(
        [sys.executable, "-m", "probteacher.cli", "make-toy", *argv], env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote" in done.stdout and (out / "source" / "ImageSets" / "Main" / "train.txt").is_file()
    return out


def data_args(toy):
    return [
        "--task", "c2f", "--classes", "square,disk,triangle",
        "--source", f"voc:{toy / 'source'}:train", "--target", f"voc:{toy / 'target'}:train",
        "--target-test", f"voc:{toy / 'target'}:test", "--source-test", f"voc:{toy / 'source'}:test",
    ]  # fmt: skip


def test_train_and_eval_on_voc_folders(toy, tmp_path, capsys):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "probteacher.cli", "train", *data_args(toy), *SMALL, "--out", str(run)],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((run / "results.json").read_text())
    assert results["iterations"] == 4 and set(results["source_test"]) == {"student", "teacher"}
    assert load_checkpoint(run / "final.pt")["config"]["classes"] == ["square", "disk", "triangle"]
    evaluated = eval_command(["--weights", str(run / "final.pt"), "--device", "cpu", "--which", "student"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["AP50"] == evaluated["AP50"] == pytest.approx(results["target_test"]["student"]["AP50"])
    voc07 = eval_command(
        ["--weights", str(run / "final.pt"), "--data", f"voc:{toy / 'source'}:test", "--metric", "voc07"]
    )
    assert voc07["images"] == 3 and voc07["metric"] == "voc07"
    # the same --out without --resume is refused
    assert main(train_command)([*data_args(toy), *SMALL, "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_ablation_switches_reach_the_config(toy, tmp_path):
    argv = [*data_args(toy), *SMALL, "--no-efl", "--fixed-anchors", "--tau", "0.3", "0.4", "--compat", "official"]
    results = train_command([*argv, "--method", "pt", "--hard-threshold", "0.05", "--out", str(tmp_path / "run")])
    config = load_checkpoint(tmp_path / "run" / "final.pt")["config"]
    assert not config["efl"] and not config["learnable_anchors"] and config["tau"] == [0.3, 0.4]
    assert config["hard_threshold"] == 0.05 and config["anchor_weight_decay"] == 1e-4
    assert results["anchor_wh"]["student"] == results["anchor_wh"]["initial"]


def test_train_defaults_are_the_demo_preset():
    args = train_parser().parse_args([])
    assert args.preset == "demo" and args.iterations is None and args.source is None
    config = build_config(args.preset)
    assert config.task == "toy-fog" and config.iterations > config.burn_in > 0
    assert set(COMMANDS) == {"train", "eval", "make-toy", "repro", "bench"}


@pytest.mark.parametrize(
    "command, argv, words",
    [
        (train_command, ["--task", "c2f", "--source", "voc:nowhere:train", "--target", "voc:nowhere:train",
                         "--target-test", "voc:nowhere:test"], "nowhere"),
        (train_command, ["--task", "m2c"], "--task"),
        (train_command, ["--burn-in", "700", "--iterations", "600"], "--burn-in"),
        (train_command, ["--iterations", "0"], "iterations"),
        (train_command, ["--task", "c2f"], "--source"),
        (train_command, ["--tau", "x"], "--tau"),
        (train_command, ["--weights", "missing.pth"], "missing.pth"),
        (eval_command, ["--weights", "missing.pt"], "missing.pt"),
        (eval_command, ["--weights", "x.pt", "--metric", "f1"], "--metric"),
        (make_toy_command, ["--out", "x", "--test", "0"], "image"),
        (make_toy_command, ["--out", "x", "--scale-shift", "9"], "--scale-shift"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_code_2(command, argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(command)(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))


def test_two_process_gloo_ddp(toy, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "probteacher.cli", "train", *data_args(toy), *SMALL, "--out", str(tmp_path / "ddp")]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    # the sharded evaluation of the two processes equals a single-process evaluation of the same weights
    single = eval_command(["--weights", str(tmp_path / "ddp" / "final.pt"), "--device", "cpu"])
    assert single["AP50"] == pytest.approx(results["target_test"]["teacher"]["AP50"], abs=1e-9)
    weights = load_checkpoint(tmp_path / "ddp" / "final.pt")
    assert all(torch.isfinite(v).all() for v in weights["student"].values() if v.is_floating_point())
