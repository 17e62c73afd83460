"""The console scripts end to end on tiny settings: train, exact resume, eval, select, export, flops, repro,
torchrun, real-format folders with torchvision weights, and bad input."""

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
from slimda.upem import kendall_tau

FAST = ["--iterations", "20", "--batch-size", "32", "--eval-every", "10", "--log-every", "5"]
FAST += ["--bn-calib-batches", "2", "--device", "cpu", "--quiet", "--no-progress"]


def _train(out: Path, *extra: str) -> int:
    return main(scli.train_command)([*FAST, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert _train(out) == 0
    return out


def test_train_writes_a_complete_run(trained):
    results = json.loads((trained / "results.json").read_text())
    assert results["method"] == "slimda" and results["head"] == "ct"
    assert (results["source"], results["target"]) == ("mnist", "digits")
    assert list(results["accuracy"]) == ["1", "0.75", "0.5", "0.375", "0.25", "0.1875", "0.125", "0.1"]
    assert all(0 <= acc[head] <= 100 for acc in results["accuracy"].values() for head in ("cs", "ct", "ca", "folded"))
    records = read_metrics(trained / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [5, 10, 15, 20]
    assert "acc_largest" in records[1] and "acc_smallest" in records[3] and "acc_largest" not in records[0]
    # the evaluation of the last iteration and the final per-width table score the same weights alike
    assert records[-1]["acc_largest"] == results["accuracy"]["1"]["ct"]
    assert records[-1]["acc_smallest"] == results["accuracy"]["0.1"]["ct"]
    # SEED's teacher, scored once at the first adaptation step (8 = 40% of 20)
    teacher = json.loads((trained / "teacher.json").read_text())
    assert teacher["iteration"] == 8 and results["teacher_accuracy"] == teacher["accuracy"]
    assert records[-1]["loss_seed"] > 0
    assert checkpoint_path(trained, 20).exists() and (trained / "final.pt").exists()
    config = json.loads((trained / "config.json").read_text())
    assert config["preset"] == "demo" and config["source"] == "mnist" and config["num_classes"] == 10
    assert config["train_config"]["iterations"] == 20 and config["train_config"]["log_every"] == 5


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
    argv = ["--weights", str(trained / "final.pt"), "--arch", "0.5", "--device", "cpu"]
    assert main(scli.eval_command)(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    results = json.loads((trained / "results.json").read_text())
    assert shown["accuracy"] == results["accuracy"]["0.5"]["ct"]
    assert shown["accuracy_by_head"] == results["accuracy"]["0.5"]
    assert 0.2 < shown["macs_fraction"] < 0.35


def test_eval_reads_a_checkpoint_beside_its_config(trained, capsys):
    argv = ["--arch", "0.5", "--device", "cpu"]
    assert main(scli.eval_command)(["--weights", str(checkpoint_path(trained, 20)), *argv]) == 0
    from_checkpoint = json.loads(capsys.readouterr().out)
    assert main(scli.eval_command)(["--weights", str(trained / "final.pt"), *argv]) == 0
    assert from_checkpoint == json.loads(capsys.readouterr().out)


def test_repro_writes_its_report_and_reuses_recorded_runs(tmp_path, capsys):
    argv = ["--seeds", "1", "--iterations", "6", "--samples", "3", "--variants", "source-only,slimda"]
    argv += ["--out", str(tmp_path), "--device", "cpu"]
    results = scli.repro_command(argv)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert list(saved["mean_accuracy"]) == ["1", "0.75", "0.5", "0.375", "0.25", "0.1875", "0.125", "0.1"]
    assert saved["seeds"] == 1 and saved["bn_forward"] == "separate"
    assert saved["smallest_width_gain"]["macs_fraction"] <= 1 / 64  # the paper's 1/64 point is on the grid
    assert saved["budgets"][-1] == "1/64" and "slimda" in saved["teacher_accuracy"]
    assert "slimda_beats_source_only_at_every_width" in saved and saved["headline"].startswith("SlimDA > source")
    header = capsys.readouterr().out.splitlines()[2]
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "width",
        "MACs fraction",
        "source only",
        "SlimDA",
    ]
    assert "![" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    # each run is a fit with its files; the record holds its version, configuration, widths and selection
    recorded = json.loads((tmp_path / "runs" / "slimda-seed0.json").read_text())
    assert recorded["config"]["config"]["iterations"] == 6 and recorded["config"]["samples"] == 3
    record = recorded["result"]
    fitted = json.loads((tmp_path / "runs" / "slimda-seed0" / "results.json").read_text())
    assert {w: v["by_head"] for w, v in record["widths"].items()} == fitted["accuracy"]
    assert saved["mean_accuracy"]["0.5"]["slimda"] == fitted["accuracy"]["0.5"]["ct"]
    # UPEM scores the uniform widths on the same images: their accuracy is the bank's per-width accuracy
    candidates = {c["arch"]: c["accuracy"] for c in record["selection"]["candidates"]}
    assert {w: candidates[w] for w in fitted["accuracy"]} == {w: a["ct"] for w, a in fitted["accuracy"].items()}
    full = next(c["macs"] for c in record["selection"]["candidates"] if c["arch"] == "1")
    for row in record["selection"]["selection"]:
        within = [c["accuracy"] for c in record["selection"]["candidates"] if c["macs"] <= row["budget"] * full]
        assert row["accuracy"] == candidates[row["arch"]] and row["oracle_accuracy"] == max(within)
    # run again: the recorded runs are reused, not trained again
    (tmp_path / "runs" / "slimda-seed0" / "final.pt").unlink()
    again = scli.repro_command(argv)
    assert again["runs"] == results["runs"] and not (tmp_path / "runs" / "slimda-seed0" / "final.pt").exists()


def test_select_then_export_a_standalone_model(trained, tmp_path, capsys):
    sel = tmp_path / "sel"
    argv = ["--weights", str(trained / "final.pt"), "--budgets", "1,1/4", "--samples", "12", "--reference-archs", "4"]
    assert main(scli.select_command)([*argv, "--device", "cpu", "--out", str(sel), "--no-progress"]) == 0
    selection = json.loads((sel / "selection.json").read_text())
    assert (sel / "selection.md").exists() and "Kendall" in capsys.readouterr().out
    assert selection["num_candidates"] >= 12
    # every target image is scored (1,797 < --max-images): a uniform width scores the run's accuracy
    trained_accuracy = json.loads((trained / "results.json").read_text())["accuracy"]
    uniform = {c["arch"]: c["accuracy"] for c in selection["candidates"] if c["arch"] in trained_accuracy}
    assert uniform == {w: a["ct"] for w, a in trained_accuracy.items()}
    upem = [-c["upem"] for c in selection["candidates"]]
    assert selection["kendall_tau"] == kendall_tau(upem, [c["accuracy"] for c in selection["candidates"]])
    quarter = selection["selection"][1]
    assert quarter["macs_fraction"] <= 0.25 and quarter["accuracy"] <= quarter["oracle_accuracy"]
    export = tmp_path / "exported"
    assert (
        main(scli.export_command)(
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
    assert main(scli.flops_command)(["--model", "resnet50"]) == 0
    text = capsys.readouterr().out
    assert "4.087 G" in text and "0.077 G" in text


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "slimda.cli", "train", "--iterations", "6", "--batch-size", "16", "--eval-every", "6"]
    command += ["--log-every", "3", "--bn-calib-batches", "1", "--device", "cpu", "--quiet", "--no-progress"]
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [3, 6]
    accuracy = json.loads((out / "results.json").read_text())["accuracy"]["1"]["ct"]
    # the weights rank 0 saved score on one process what the two-process run reported
    evaluate = [sys.executable, "-m", "slimda.cli", "eval", "--weights", str(out / "final.pt"), "--device", "cpu"]
    shown = subprocess.run(evaluate, capture_output=True, text=True, env=env, timeout=300, check=True)
    assert 0 <= accuracy <= 100 and json.loads(shown.stdout)["accuracy"] == accuracy


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
    assert main(scli.train_command)(argv) == 0
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
    missing = _error(capsys, scli.train_command, argv)
    assert "8 of 8 images listed" in missing and "b/missing0.jpg" in missing
    _write_domain(data, "c", ["x", "y", "z"], 2, 1)
    argv = ["--data", str(data), "--source", "a", "--target", "c", "--out", str(tmp_path / "r2"), "--device", "cpu"]
    assert "classes" in _error(capsys, scli.train_command, argv)
    assert "needs --data" in _error(
        capsys, scli.train_command, ["--dataset", "office31", "--out", str(tmp_path / "r3")]
    )
    for unknown in (["--epochs", "3"], ["--workers", "2"]):  # a run counts iterations; the data sit in memory
        assert "unrecognized arguments" in _error(capsys, scli.train_command, unknown)
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert "bad.pt" in _error(capsys, scli.eval_command, ["--weights", str(corrupt)])
    budget = _error(capsys, scli.select_command, ["--weights", str(trained / "final.pt"), "--budgets", "1/1000"])
    assert "no architecture meets budget" in budget and "smallest, 0.1" in budget
    repro = ["--budgets", "1,1/1000", "--out", str(tmp_path / "repro"), "--device", "cpu"]
    assert "no architecture meets budget 0.001" in _error(capsys, scli.repro_command, repro)  # before any training
    assert not (tmp_path / "repro" / "runs").exists()
    assert "--resume" in _error(capsys, scli.train_command, ["--resume", "--out", str(tmp_path / "empty")])
    assert "already holds a run" in _error(capsys, scli.train_command, ["--out", str(trained)])
    assert "(0, 1]" in _error(capsys, scli.eval_command, ["--weights", str(trained / "final.pt"), "--arch", "2"])
    export = ["--weights", str(trained / "final.pt"), "--arch", "1", "--out", str(trained), "--device", "cpu"]
    assert "not an empty folder" in _error(capsys, scli.export_command, export)


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
    accuracy = json.loads((out / "results.json").read_text())["accuracy"]["1"]["ct"]
    shown = scli.eval_command(["--weights", str(out / "final.pt"), "--device", "cuda"])
    assert 0 <= accuracy <= 100 and shown["accuracy"] == pytest.approx(accuracy, abs=0.2)  # a few images at most
