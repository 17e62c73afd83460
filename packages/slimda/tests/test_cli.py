"""The console scripts end to end on tiny settings: train, exact resume, eval, select, export, flops, torchrun,
real-format folders with torchvision weights, and bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from shared.checkpoint import checkpoint_path
from shared.cli import main
from shared.logging import read_metrics
from slimda import cli as scli
from slimda.engine import Trainer

FAST = ["--iterations", "20", "--batch-size", "32", "--eval-every", "10", "--log-every", "5"]
FAST += ["--bn-calib-batches", "2", "--device", "cpu", "--quiet", "--no-progress"]


def _train(out: Path, *extra: str) -> int:
    return main(scli.train)([*FAST, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert _train(out) == 0
    return out


def test_train_writes_a_complete_run(trained):
    results = json.loads((trained / "results.json").read_text())
    assert results["method"] == "slimda" and results["head"] == "ct"
    assert (results["source"], results["target"]) == ("mnist", "digits")
    assert list(results["accuracy"]) == ["1", "0.75", "0.5", "0.25"]
    assert all(0 <= acc["ct"] <= 100 for acc in results["accuracy"].values())
    records = read_metrics(trained / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [5, 10, 15, 20]
    assert "acc_largest" in records[1] and "acc_smallest" in records[3] and "acc_largest" not in records[0]
    assert records[-1]["loss_seed"] > 0
    assert checkpoint_path(trained, 20).exists() and (trained / "final.pt").exists()


def test_resume_equals_an_uninterrupted_run(trained, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"
    step = Trainer.step

    def interrupt_at_17(self, it):  # after the record of iteration 15, past the checkpoint of 10
        if it == 17:
            raise KeyboardInterrupt
        return step(self, it)

    monkeypatch.setattr(Trainer, "step", interrupt_at_17)
    assert _train(out) == 130
    monkeypatch.setattr(Trainer, "step", step)
    assert _train(out, "--resume") == 0
    assert read_metrics(out / "metrics.jsonl") == read_metrics(trained / "metrics.jsonl")
    final = torch.load(out / "final.pt", weights_only=True)["model"]
    reference = torch.load(trained / "final.pt", weights_only=True)["model"]
    for key in reference:
        torch.testing.assert_close(final[key], reference[key], rtol=0, atol=0)


def test_eval_reproduces_the_run_accuracy(trained, capsys):
    assert main(scli.evaluate_file)(["--weights", str(trained / "final.pt"), "--arch", "0.5", "--device", "cpu"]) == 0
    shown = json.loads(capsys.readouterr().out)
    results = json.loads((trained / "results.json").read_text())
    assert shown["accuracy"] == pytest.approx(results["accuracy"]["0.5"]["ct"])
    assert 0.2 < shown["macs_fraction"] < 0.35


def test_eval_reads_a_checkpoint_beside_its_config(trained, capsys):
    argv = ["--arch", "0.5", "--device", "cpu"]
    assert main(scli.evaluate_file)(["--weights", str(checkpoint_path(trained, 20)), *argv]) == 0
    from_checkpoint = json.loads(capsys.readouterr().out)
    assert main(scli.evaluate_file)(["--weights", str(trained / "final.pt"), *argv]) == 0
    assert from_checkpoint == json.loads(capsys.readouterr().out)


def test_repro_writes_its_tables_and_reuses_finished_runs(tmp_path, monkeypatch):
    from slimda import repro as srepro

    argv = ["--seeds", "1", "--iterations", "6", "--samples", "3", "--variants", "source-only,slimda"]
    argv += ["--out", str(tmp_path), "--device", "cpu"]
    assert main(srepro.repro)(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["mean_accuracy"]) == {"1", "0.75", "0.5", "0.25"}
    assert "slimda_beats_source_only_at_every_width" in results and -1 <= results["kendall_tau"][0] <= 1
    assert (tmp_path / "results.md").read_text().count("|") > 20
    monkeypatch.setattr(srepro, "run_one", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert main(srepro.repro)(argv) == 0


def test_select_then_export_a_standalone_model(trained, tmp_path, capsys):
    sel = tmp_path / "sel"
    argv = ["--weights", str(trained / "final.pt"), "--budgets", "1,1/4", "--samples", "12", "--reference-archs", "4"]
    assert main(scli.select_file)([*argv, "--device", "cpu", "--out", str(sel), "--no-progress"]) == 0
    selection = json.loads((sel / "selection.json").read_text())
    assert (sel / "selection.md").exists() and "Kendall" in capsys.readouterr().out
    assert selection["num_candidates"] >= 12 and -1 <= selection["kendall_tau"] <= 1
    quarter = selection["selection"][1]
    assert quarter["macs_fraction"] <= 0.25 and quarter["accuracy"] <= quarter["oracle_accuracy"]
    export = tmp_path / "exported"
    assert (
        main(scli.export_file)(
            ["--weights", str(trained / "final.pt"), "--arch", quarter["arch"], "--out", str(export), "--device", "cpu"]
        )
        == 0
    )
    # the exported model runs without slimda and scores the selection's accuracy on the target images
    script = (
        "import sys, importlib.util, json, torch\n"
        "sys.modules['slimda'] = None\n"
        f"spec = importlib.util.spec_from_file_location('model', {str(export / 'model.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"model = module.load({str(export)!r})\n"
        "x = torch.load(sys.argv[1], weights_only=True)\n"
        "print(json.dumps(model(x).argmax(1).tolist()))\n"
    )
    from slimda.augment import Pipeline
    from slimda.data import load_embedded

    target = load_embedded("mnist-digits")[1]
    images = tmp_path / "x.pt"
    torch.save(Pipeline(16, False).test(target.images), images)
    done = subprocess.run([sys.executable, "-c", script, str(images)], capture_output=True, text=True, check=True)
    predictions = torch.tensor(json.loads(done.stdout))
    accuracy = 100.0 * float((predictions == target.labels).float().mean())
    assert accuracy == pytest.approx(quarter["accuracy"], abs=1e-6)


def test_flops_prints_the_resnet50_table(capsys):
    assert main(scli.flops_file)(["--model", "resnet50"]) == 0
    text = capsys.readouterr().out
    assert "4.087 G" in text and "0.077 G" in text


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "slimda.cli", "train"]
    command += ["--iterations", "6", "--batch-size", "16", "--eval-every", "6", "--log-every", "3"]
    command += ["--bn-calib-batches", "1", "--device", "cpu", "--quiet", "--no-progress", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [3, 6]
    assert json.loads((out / "results.json").read_text())["accuracy"]["1"]["ct"] >= 0


def _write_domain(root: Path, name: str, classes: list[str], per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(classes):
        folder = root / name / cls
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            pixels[..., label % 3] = 255
            Image.fromarray(pixels).save(folder / f"{i}.jpg")


def test_real_folders_with_torchvision_weights(tmp_path):
    data = tmp_path / "office"
    _write_domain(data, "amazon", ["bike", "cup", "pen"], 6, 0)
    _write_domain(data, "webcam", ["bike", "cup", "pen"], 5, 1)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    out = tmp_path / "run"
    argv = ["--dataset", "office31", "--data", str(data), "--source", "amazon", "--target", "webcam"]
    argv += ["--backbone", "resnet18", "--weights", str(weights), "--image-size", "36", "--crop", "32"]
    argv += ["--iterations", "3", "--batch-size", "4", "--eval-every", "3", "--bn-calib-batches", "1"]
    argv += ["--device", "cpu", "--quiet", "--no-progress", "--out", str(out)]
    assert main(scli.train)(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["backbone_lr_mult"] == 0.1 and config["classes"] == ["bike", "cup", "pen"]
    results = json.loads((out / "results.json").read_text())
    assert (results["source"], results["target"]) == ("amazon", "webcam") and "0.11" in results["accuracy"]


def _error(capsys, command, argv) -> str:
    assert main(command)(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, trained):
    data = tmp_path / "lists"
    _write_domain(data, "a", ["x", "y"], 2, 0)
    (data / "image_list").mkdir()
    (data / "image_list" / "b.txt").write_text("".join(f"b/missing{i}.jpg {i % 2}\n" for i in range(8)))
    argv = ["--data", str(data), "--source", "a", "--target", "b", "--out", str(tmp_path / "r"), "--device", "cpu"]
    missing = _error(capsys, scli.train, argv)
    assert "8 images listed" in missing and "missing0.jpg" in missing
    _write_domain(data, "c", ["x", "y", "z"], 2, 1)
    argv = ["--data", str(data), "--source", "a", "--target", "c", "--out", str(tmp_path / "r2"), "--device", "cpu"]
    assert "classes" in _error(capsys, scli.train, argv)
    assert "needs --data" in _error(capsys, scli.train, ["--dataset", "office31", "--out", str(tmp_path / "r3")])
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert "bad.pt" in _error(capsys, scli.evaluate_file, ["--weights", str(corrupt)])
    budget = _error(capsys, scli.select_file, ["--weights", str(trained / "final.pt"), "--budgets", "1/1000"])
    assert "no architecture meets budget" in budget and "smallest, 0.25" in budget
    assert "--resume" in _error(capsys, scli.train, ["--resume", "--out", str(tmp_path / "empty")])
    assert "already holds a run" in _error(capsys, scli.train, ["--out", str(trained)])
    assert "(0, 1]" in _error(capsys, scli.evaluate_file, ["--weights", str(trained / "final.pt"), "--arch", "2"])
    export = ["--weights", str(trained / "final.pt"), "--arch", "1", "--out", str(trained), "--device", "cpu"]
    assert "not an empty folder" in _error(capsys, scli.export_file, export)


@pytest.mark.parametrize(
    "script", ["slimda-train", "slimda-eval", "slimda-select", "slimda-export", "slimda-flops", "slimda-repro"]
)
def test_console_scripts_have_help(script):
    path = shutil.which(script, path=str(Path(sys.executable).parent))
    assert path is not None, f"{script} is not installed beside {sys.executable}"
    done = subprocess.run([path, "--help"], capture_output=True, text=True, check=True)
    assert "usage" in done.stdout and "--" in done.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_training_steps(tmp_path):
    out = tmp_path / "cuda"
    assert _train(out, "--device", "cuda", "--amp") == 0
    last = read_metrics(out / "metrics.jsonl")[-1]
    assert np.isfinite([last["loss_c"], last["loss_g"], last["loss_seed"]]).all()
    assert json.loads((out / "results.json").read_text())["accuracy"]["1"]["ct"] >= 0
