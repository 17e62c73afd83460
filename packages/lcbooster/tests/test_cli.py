"""The console scripts end to end on tiny data: train, resume across the correction, eval, make-noise,
CIFAR pickles, torchrun, bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lcbooster import cli as lcli
from lcbooster.data import write_cifar_pickles
from lcbooster.noise import save_noisy_labels
from shared.checkpoint import checkpoint_path
from shared.cli import main
from shared.logging import read_metrics

# digits, LC-Booster: warm-up epoch 1, co-training 2..5, correction at the end of epoch 4
FAST = ["--dataset", "digits", "--noise", "sym50", "--epochs", "5", "--warmup-epochs", "1", "--relabel-epochs", "4"]
FAST += ["--batch-size", "64", "--device", "cpu", "--quiet"]


def _train(out: Path, *extra: str) -> int:
    return main(lcli.train_command)([*FAST, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert _train(out) == 0
    return out


def test_train_writes_a_complete_run(trained):
    results = json.loads((trained / "results.json").read_text())
    assert results["method"] == "lcbooster" and 0 <= results["last"] <= 100
    records = read_metrics(trained / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert "relabel_overwritten" in records[3]
    correction = results["correction"]
    assert correction["epoch"] == 4 and correction["n_labeled_before"] is not None
    assert correction["settled_epoch"] is None and correction["n_labeled_after"] is None  # epoch 9 never came
    labels = np.load(trained / "noisy_labels.npy")
    assert labels.shape == (2, 1442) and labels.dtype == np.int32
    config = json.loads((trained / "config.json").read_text())
    assert config["train_config"]["relabel_epochs"] == [4] and 0.5 < config["noisy_label_accuracy"] < 0.6
    assert (trained / "final.pt").exists()


def test_eval_reproduces_the_last_test_accuracy(trained, capsys):
    assert main(lcli.eval_command)(["--weights", str(trained / "final.pt"), "--device", "cpu"]) == 0
    shown = json.loads(capsys.readouterr().out)
    last = read_metrics(trained / "metrics.jsonl")[-1]
    assert shown["test_acc"] == pytest.approx(last["test_acc"])
    assert shown["test_acc_net2"] == pytest.approx(last["test_acc_net2"])


def _resume_from_checkpoint_4(straight: Path, copy: Path, *extra: str) -> None:
    """Copy a finished 5-epoch run, drop epoch 5, resume it; it must end exactly as the straight run."""
    shutil.copytree(straight, copy)
    for path in (checkpoint_path(copy, 5), copy / "results.json", copy / "final.pt"):
        path.unlink()
    lines = (copy / "metrics.jsonl").read_text().splitlines()[:4]
    (copy / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert _train(copy, "--resume", *extra) == 0
    assert read_metrics(copy / "metrics.jsonl") == read_metrics(straight / "metrics.jsonl")
    a = torch.load(straight / "final.pt", weights_only=True)["models"]
    b = torch.load(copy / "final.pt", weights_only=True)["models"]
    assert all(torch.equal(a[i][k], b[i][k]) for i in (0, 1) for k in a[i])


def test_resume_after_the_correction_is_exact(trained, tmp_path):
    """Epoch 4 corrected the labels: the resumed epoch 5 must train and divide on the corrected labels."""
    _resume_from_checkpoint_4(trained, tmp_path / "copy")


def test_resume_before_the_correction_is_exact(tmp_path):
    straight = tmp_path / "straight"
    assert _train(straight, "--relabel-epochs", "5") == 0
    _resume_from_checkpoint_4(straight, tmp_path / "copy", "--relabel-epochs", "5")


def test_checkpoint_holds_the_corrected_labels(trained):
    state = torch.load(checkpoint_path(trained, 4), weights_only=True)
    noisy = torch.as_tensor(np.load(trained / "noisy_labels.npy")[1]).long()
    corrected = state["extra"]["targets"]
    record = read_metrics(trained / "metrics.jsonl")[3]
    assert int((corrected != noisy).sum()) == record["relabel_changed"] > 0


def test_make_noise_writes_both_formats_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "sym80.npy"
    make = main(lcli.make_noise_command)
    assert make(["--dataset", "digits", "--ratio", "0.8", "--out", str(out)]) == 0
    assert "label accuracy 0.2" in capsys.readouterr().out
    assert np.load(out).shape == (2, 1442)
    assert make(["--dataset", "digits", "--ratio", "0.8", "--out", str(out)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert make(["--dataset", "digits", "--type", "asym", "--ratio", "0.4", "--out", str(tmp_path / "a.json")]) == 0
    assert len(json.loads((tmp_path / "a.json").read_text())) == 1442


def test_train_with_a_noise_file_uses_it(tmp_path):
    labels = np.random.default_rng(0).integers(0, 10, 1442)
    save_noisy_labels(tmp_path / "noise.json", labels)
    out = tmp_path / "run"
    argv = [*FAST, "--method", "ce", "--epochs", "1", "--noise-file", str(tmp_path / "noise.json"), "--out", str(out)]
    assert main(lcli.train_command)(argv) == 0
    assert np.array_equal(np.load(out / "noisy_labels.npy")[1], labels)


def _tiny_cifar(root: Path, kind: str = "cifar10", count: int = 48) -> Path:
    gen = np.random.default_rng(0)
    classes = 10 if kind == "cifar10" else 100
    x = gen.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    return write_cifar_pickles(
        root, x, gen.integers(0, classes, count), x[:20], gen.integers(0, classes, 20), kind=kind
    )


def test_cifar_pickles_train_lcbooster_with_randaugment(tmp_path, capsys):
    _tiny_cifar(tmp_path / "data")
    argv = ["--setting", "c10-sym90", "--data", str(tmp_path / "data"), "--preset", "paper", "--epochs", "3"]
    argv += ["--warmup-epochs", "1", "--relabel-epochs", "2", "--batch-size", "8", "--device", "cpu", "--quiet"]
    argv += ["--model", "small_cnn"]  # the reader, the CIFAR views and RandAugment are what is tested here
    argv += ["--out", str(tmp_path / "run")]
    assert main(lcli.train_command)(argv) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())["train_config"]
    assert (config["model"], config["strong_aug"], config["lambda_u"], config["p_threshold"]) == (
        "small_cnn",
        "rand",
        50.0,
        0.6,
    )
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl")) == 3
    # lcbooster-eval names its own options: --data, never train's --dataset
    for argv, expected in (
        ([], "CIFAR-10 needs --data"),
        (["--data", str(_tiny_cifar(tmp_path / "c100", "cifar100"))], "point --data at a cifar-10-batches-py"),
    ):
        message = _error_of(lcli.eval_command, ["--weights", str(tmp_path / "run" / "final.pt"), *argv], capsys)
        assert expected in message and "--dataset" not in message, message


def test_cifar_data_without_a_setting_gets_the_cifar_recipe(tmp_path, caplog):
    _tiny_cifar(tmp_path / "data", "cifar100")

    def config_of(*argv: str):
        return lcli.config_from_args(lcli.train_parser().parse_args(["--data", str(tmp_path / "data"), *argv]))

    inferred = config_of("--noise", "sym90", "--preset", "small")
    assert (inferred.dataset, inferred.model, inferred.views, inferred.epochs) == (
        "cifar100",
        "preact_resnet18",
        "wwss",
        133,
    )
    assert "--data holds cifar100" in caplog.text
    assert config_of("--dataset", "mnist5k").model == "small_cnn"  # CIFAR-style pickles of another dataset


def test_two_process_gloo_training(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lcbooster.cli"]
    cmd += ["train", "--out", str(tmp_path), *FAST]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert len(records) == 5  # rank 0 alone writes
    assert records[-1]["test_acc"] > 30.0
    # the GMM and the correction saw every sample once: sizes are over the whole training set
    assert 0 < records[1]["n_labeled_1"] < 1442 and records[3]["relabel_overwritten"] <= 1442


def test_console_scripts_answer_help():
    scripts = Path(sys.executable).parent
    for script in ("lcbooster-train", "lcbooster-eval", "lcbooster-make-noise", "lcbooster-repro", "lcbooster-bench"):
        result = subprocess.run([scripts / script, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage:" in result.stdout, script


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    short = tmp_path / "short.npy"
    save_noisy_labels(short, np.zeros(100, dtype=np.int64))
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not a numpy file")
    cifar100 = _tiny_cifar(tmp_path / "c100", "cifar100")
    cases = {
        "noise file length": (lcli.train_command, [*FAST, "--noise-file", str(short), "--out", str(tmp_path / "a")]),
        "garbage noise file": (lcli.train_command, [*FAST, "--noise-file", str(garbage), "--out", str(tmp_path / "b")]),
        "noise rate": (lcli.train_command, [*FAST, "--noise", "sym150", "--out", str(tmp_path / "c")]),
        "make-noise rate": (
            lcli.make_noise_command,
            ["--dataset", "digits", "--ratio", "1.5", "--out", str(tmp_path / "n.npy")],
        ),
        "wrong CIFAR kind": (
            lcli.train_command,
            ["--setting", "c10-sym80", "--data", str(cifar100.parent), "--out", str(tmp_path / "d")],
        ),
        "no CIFAR data": (lcli.train_command, ["--setting", "c10-sym80", "--out", str(tmp_path / "e")]),
        "missing weights": (lcli.eval_command, ["--weights", str(tmp_path / "nope.pt")]),
        "not a run file": (lcli.eval_command, ["--weights", str(short)]),
        "resume nothing": (lcli.train_command, [*FAST, "--resume", "--out", str(tmp_path / "f")]),
        "relabel epochs": (lcli.train_command, [*FAST, "--relabel-epochs", "x", "--out", str(tmp_path / "g")]),
    }
    for name, (command, argv) in cases.items():
        assert main(command)(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (name, err)
    assert not [p.name for p in tmp_path.iterdir() if p.is_dir() and not any(p.iterdir())]  # no empty --out left
    assert "100" in _error_of(
        lcli.train_command, [*FAST, "--noise-file", str(short), "--out", str(tmp_path / "h")], capsys
    )
    assert "CIFAR-100" in _error_of(
        lcli.train_command, [*cases["wrong CIFAR kind"][1][:-2], "--out", str(tmp_path / "i")], capsys
    )


def _error_of(command, argv, capsys) -> str:
    assert main(command)(argv) == 2
    return capsys.readouterr().err


def test_mixed_precision_epoch_on_cpu(tmp_path):
    out = tmp_path / "amp"
    assert main(lcli.train_command)([*FAST, "--epochs", "2", "--relabel-epochs", "2", "--amp", "--out", str(out)]) == 0
    assert len(read_metrics(out / "metrics.jsonl")) == 2
