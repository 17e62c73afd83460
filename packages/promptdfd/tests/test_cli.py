"""The console scripts end to end through subprocesses: help, a tiny run, evaluation and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from promptdfd.cli import COMMANDS
from shared.cli import main

TINY_ARGS = [
    "--rl-iterations", "3", "--rl-batch-size", "16", "--n-synth", "32", "--epochs", "2", "--batch-size", "16",
]  # fmt: skip


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "promptdfd.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def _call(capsys, *args: str) -> tuple[int, str, str]:
    """A command in this process, as its console script runs it: (exit code, stdout, stderr)."""
    code = main(COMMANDS[args[0]])(list(args[1:]))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command(capsys, command):
    code, out, _ = _call(capsys, command, "--help")
    assert code == 0 and f"usage: promptdfd-{command}" in out


def test_module_entry_point_runs_a_command():
    result = _run("eval", "--help")
    assert result.returncode == 0 and "--weights" in result.stdout


def test_distill_then_eval(capsys, assets, tmp_path):
    out = tmp_path / "run"
    models = ["--teacher", str(assets / "teacher.pt"), "--generator", str(assets / "generator.pt")]
    result = _run("distill", *models, *TINY_ARGS, "--out", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["method"] == "promptdfd" and saved["texts"] == 3 * 16 and saved["kd_updates"] == 3 * 2
    code, _, err = _call(capsys, "distill", *models, *TINY_ARGS, "--out", str(out), "--device", "cpu")
    assert code == 2 and "--resume" in err and (out / "results.json").is_file()
    code, stdout, err = _call(capsys, "eval", "--weights", str(out / "student.pt"), "--device", "cpu")
    assert code == 0, err
    assert f"{saved['student']['accuracy']:.4f}" in stdout


def test_synth_writes_jsonl(capsys, assets, tmp_path):
    out = tmp_path / "synth"
    code, _, err = _call(
        capsys, "synth", "--teacher", str(assets / "teacher.pt"), "--method", "random-tokens", "--n-synth", "20",
        "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "synth.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and set(rows[0]) == {"text", "target_class", "prompt", "teacher_probs"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["distill", "--preset", "paper"], "not implemented"),
        (["train-generator", "--preset", "small"], "nothing to train"),
        (["distill", "--data", "missing.csv"], "does not exist"),
        (["distill", "--top-p", "1.5"], "--top-p"),
        (["distill", "--prompt-len", "30"], "context"),
        (["synth", "--method", "data-kd"], "nothing to synthesise"),
        (["eval", "--weights", "nothing.pt"], "not found"),
        (["distill", "--amp"], "--amp"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = _call(capsys, *args, "--device", "cpu")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))


def test_bad_csv_is_refused(capsys, tmp_path):
    table = tmp_path / "bad.csv"
    table.write_text("sentence_x,label\nhello,1\n")
    code, _, err = _call(capsys, "train-teacher", "--data", str(table), "--out", str(tmp_path / "t"), "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bad.csv" in err, err
    assert not (tmp_path / "t").exists()  # the folder made for the run is removed again
