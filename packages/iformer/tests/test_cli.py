"""The console scripts end to end: train, resume, eval, torchrun, bench, info, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from iformer import cli, create_model
from shared.checkpoint import load_checkpoint
from shared.cli import main
from shared.logging import read_metrics

FAST = ["--img-size", "16", "--quiet"]


def train(*argv):
    return cli.train_command([str(a) for a in argv])


def run(command, argv, capsys):
    """A console script in-process through the same wrapper: (exit code, stderr)."""
    return main(command)([str(a) for a in argv]), capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "demo"
    results = cli.train_command(["--out", str(out), "--epochs", "3", "--quiet"])
    return out, results


def test_default_preset_learns_the_digits(trained):
    out, results = trained
    assert results["model"] == "tiny_test" and results["parameters"] == 651_498
    assert results["test_top1"] >= 90.0  # 8 epochs (the default) reach about 98%
    assert json.loads((out / "results.json").read_text())["test_top1"] == results["test_top1"]
    assert len(read_metrics(out / "metrics.jsonl")) == 3
    assert json.loads((out / "config.json").read_text())["preset"] == "demo"


def test_eval_reproduces_the_final_test_score(trained, capsys):
    out, results = trained
    for weights in (out / "model.pt", out / "checkpoint-00000003.pt"):
        metrics = cli.eval_command(["--weights", str(weights)])
        assert metrics["top1"] == pytest.approx(results["test_top1"])
    assert '"top1"' in capsys.readouterr().out


def test_resume_continues_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train("--out", straight, "--epochs", "2", *FAST)
    train("--out", resumed, "--epochs", "2", *FAST)
    # interrupt after epoch 1: only epoch 1's checkpoint survives
    for name in ("checkpoint-00000002.pt", "model.pt", "results.json"):
        (resumed / name).unlink()
    train("--out", resumed, "--epochs", "2", "--resume", *FAST)
    a, b = (load_checkpoint(run / "model.pt")["state_dict"] for run in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_and_overwrite_refused(tmp_path, capsys):
    code, err = run(cli.train_command, ["--out", tmp_path / "empty", "--resume", *FAST], capsys)
    assert code == 2 and "no checkpoint" in err
    train("--out", tmp_path / "done", "--epochs", "1", *FAST)
    code, err = run(cli.train_command, ["--out", tmp_path / "done", "--epochs", "1", *FAST], capsys)
    assert code == 2 and "already holds a run" in err


def test_two_process_gloo_training(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "iformer.cli", "train", "--out", str(tmp_path), "--epochs", "3", "--device", "cpu", *FAST]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_top1"] > 50.0
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 3  # rank 0 alone writes


def _image_folder(root: Path) -> Path:
    for split in ("train", "val"):
        for label, color in (("cat", 40), ("dog", 210)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (24, 20), (color, (color + 60 * i) % 255, 90)).save(folder / f"{i}.png")
    return root


def test_imagefolder_training_with_the_paper_augmentations(tmp_path):
    data = _image_folder(tmp_path / "data")
    argv = ["--data", data, "--model", "tiny_test", "--img-size", "32", "--epochs", "1", "--batch-size", "4"]
    argv += ["--aa", "rand-m9-mstd0.5-inc1", "--mixup", "0.8", "--cutmix", "1.0", "--smoothing", "0.1"]
    results = train(*argv, "--reprob", "0.25", "--out", tmp_path / "run", "--quiet")
    assert results["num_classes"] == 2 and results["test_top1"] is not None
    metrics = cli.eval_command(["--weights", str(tmp_path / "run" / "model.pt"), "--data", str(data)])
    assert metrics["top1"] == pytest.approx(results["test_top1"])


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    cases = []
    cases.append((cli.eval_command, ["--weights", tmp_path / "nope.pth"], "--weights not found"))
    cut = tmp_path / "cut.pth"
    torch.save(create_model("tiny_test").state_dict(), cut)
    cut.write_bytes(cut.read_bytes()[:3000])
    cases.append((cli.eval_command, ["--weights", cut], "corrupt or truncated"))
    tiny = tmp_path / "tiny.pth"
    torch.save(create_model("tiny_test", num_classes=10).state_dict(), tiny)
    cases.append((cli.eval_command, ["--weights", tiny, "--model", "iformer_small"], "do not fit this model"))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    cases.append((cli.train_command, ["--data", tmp_path / "flat", "--out", tmp_path / "r1"], "flat"))
    cases.append((cli.train_command, ["--img-size", "40", "--out", tmp_path / "r2"], "not supported"))
    cases.append((cli.train_command, ["--model", "iformer_tiny"], "invalid choice"))
    cases.append((cli.train_command, ["--epochs", "0", "--out", tmp_path / "r3"], "--epochs must be >= 1"))
    cases.append((cli.bench_command, ["--modes", "fast"], "--modes"))
    cases.append((cli.bench_command, ["--img-size", "200"], "--img-size 200: input size 200x200 is not supported"))
    for command, argv, expected in cases:
        code, err = run(command, argv, capsys)
        assert code == 2, (argv, err)
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


def test_console_scripts_answer_help():
    scripts = Path(sys.executable).parent  # installed beside the interpreter
    for script in ("iformer-train", "iformer-eval", "iformer-bench", "iformer-info", "iformer-repro"):
        result = subprocess.run([scripts / script, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage:" in result.stdout, script
    text = subprocess.run([scripts / "iformer-train", "--help"], capture_output=True, text=True).stdout
    assert "by preset: paper=0.001, small=0.001, demo=0.002" in " ".join(text.split())


def test_info_and_bench(capsys):
    cli.info_command(["--model", "iformer_small"])
    text = capsys.readouterr().out
    assert "19,866,344 parameters, 373 keys" in text and "64/32 64/32 64/32" in text
    cli.bench_command(
        ["--model", "tiny_test", "--img-size", "32", "--batch-size", "2", "--rounds", "1", "--iters", "1"]
    )
    assert "ratio" in capsys.readouterr().out
