import json
import subprocess
import sys

import pytest

from shared.cli import main
from tbvs.cli import (
    COMMANDS,
    eval_command,
    flow_command,
    make_synthetic_command,
    prepare_command,
    train_command,
    train_parser,
)
from tbvs.config import build_config
from tbvs.engine import EVAL_COLUMNS


def test_end_to_end_make_prepare_train_eval(tmp_path, capsys):
    raw, prepared, run = tmp_path / "raw", tmp_path / "prepared", tmp_path / "run"
    meta = make_synthetic_command(["--out", str(raw), "--train-videos", "6", "--test-videos", "4", "--oracle-flow"])
    assert meta["train_videos"] == 6 and (raw / "oracle_flow").is_dir()
    counts = prepare_command(["a2d", "--raw", str(raw), "--dest", str(prepared), "--flow", "oracle"])
    assert counts["train"] == meta["samples"]["train"] and counts["test"] == meta["samples"]["test"]
    args = ["--data", str(prepared), "--iterations", "10", "--batch-size", "4", "--input-size", "64"]
    results = train_command([*args, "--out", str(run), "--device", "cpu", "--threads", "1", "--quiet"])
    assert results["iterations"] == 10 and (run / "final.pt").is_file()
    capsys.readouterr()
    evaluated = eval_command(["--weights", str(run / "final.pt"), "--data", str(prepared), "--device", "cpu"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["metrics"] == evaluated["metrics"] == results["metrics"]
    assert set(printed["metrics"]["all"]) == set(EVAL_COLUMNS) and len(EVAL_COLUMNS) == 8
    shuffled = eval_command(["--weights", str(run / "final.pt"), "--data", str(prepared), "--shuffle-flow"])
    assert shuffled["shuffle_flow"] and shuffled["samples"] == printed["samples"]
    flows = flow_command(["--frames", str(prepared / "A2D" / "allframes"), "--out", str(tmp_path / "flow")])
    assert flows["videos"] == meta["train_videos"] + meta["test_videos"]
    assert flows["images"] == len(list((tmp_path / "flow").rglob("*.png")))
    # an interrupted run continues with --resume; the same --out without it is refused
    code = main(train_command)([*args, "--out", str(run), "--quiet"])
    assert code == 2 and "already holds a run" in capsys.readouterr().err


def test_train_defaults_are_the_demo_preset():
    args = train_parser().parse_args([])
    assert args.preset == "demo" and args.iterations is None and args.data is None
    assert build_config(args.preset).iterations > 0
    assert set(COMMANDS) == {"train", "eval", "flow", "make-synthetic", "prepare", "repro", "bench"}


@pytest.mark.parametrize(
    "command, argv, words",
    [
        (eval_command, ["--weights", "missing.pt"], "missing.pt"),
        (train_command, ["--iterations", "0"], "iterations"),
        (train_command, ["--preset", "paper"], "--text-model"),
        (train_command, ["--variant", "XYZ"], "variant"),
        (train_command, ["--data", "nowhere", "--raw", "elsewhere"], "either"),
        (prepare_command, ["a2d", "--raw", "nowhere", "--dest", "x"], "nowhere"),
        (flow_command, ["--frames", "nowhere", "--out", "x"], "nowhere"),
        (flow_command, ["--frames", ".", "--out", "x", "--method", "raft"], "--raft-weights"),
        (prepare_command, ["a2d", "--raw", ".", "--dest", "x", "--flow", "raft", "--raft-weights", "no.pth"], "no.pth"),
        (make_synthetic_command, ["--out", "x", "--frames", "3"], "--frames"),
        (train_command, ["--lr", "abc"], "--lr"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(command, argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(command)(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))


def test_module_entry_point_runs_a_command(tmp_path):
    cmd = [sys.executable, "-m", "tbvs.cli", "eval", "--weights", str(tmp_path / "none.pt")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "none.pt" in done.stderr
