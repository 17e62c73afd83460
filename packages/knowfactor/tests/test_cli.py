"""The console scripts end to end on a small dSprites file: teacher -> KF -> factors -> assemble -> eval, the KD
baseline, resume, bad input, a 2-process gloo run and every script's --help."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from knowfactor import cli, engine
from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.cli import main
from shared.logging import read_metrics

LOSS_KEYS = {"loss_infomax", "loss_kd", "loss_cls", "loss_task", "loss_infomin", "loss"}
TASKS = ["shape", "scale"]


def run(command, argv) -> int:
    """A console script in-process through the same wrapper as the installed one: its exit code."""
    return main(command)([str(a) for a in argv])


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def common(sprites) -> list:
    # the default config (dsprites_tiny, demo preset); the teacher and KF runs see the same --tasks
    return ["--data", sprites, "--tasks", ",".join(TASKS), "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, common) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    teacher, kf = root / "teacher", root / "kf"
    assert run(cli.train_command, ["--method", "teacher", "--epochs", "1", "--out", teacher, *common]) == 0
    assert (
        run(
            cli.train_command,
            ["--method", "kf", "--epochs", "1", "--teacher", teacher / "teacher.pt", "--out", kf, *common],
        )
        == 0
    )
    return {"teacher": teacher, "kf": kf}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, runs, common) -> dict[str, Path]:
    """A 2-epoch KF run (seed 1) straight through, and the same run interrupted during epoch 2 then resumed."""
    root = tmp_path_factory.mktemp("resume")
    argv = ["--method", "kf", "--epochs", "2", "--seed", "1", "--teacher", runs["teacher"] / "teacher.pt", *common]
    straight, interrupted = root / "straight", root / "interrupted"
    assert run(cli.train_command, [*argv, "--out", straight]) == 0

    original, calls = engine.train_epoch, []

    def interrupt_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "train_epoch", interrupt_in_epoch_2)
        assert run(cli.train_command, [*argv, "--out", interrupted]) == 130
    assert sorted(p.name for p in interrupted.iterdir()) == ["checkpoint-00000001.pt", "config.json", "metrics.jsonl"]
    assert run(cli.train_command, [*argv, "--out", interrupted, "--resume"]) == 0
    return {"straight": straight, "resumed": interrupted}


def evaluate(weights: Path, sprites: Path) -> dict:
    return cli.eval_command(["--weights", str(weights), "--data", str(sprites), "--device", "cpu"])


# --- the main pipeline --------------------------------------------------------------------------------------------


def test_kf_run_writes_per_task_results_and_factor_files(runs):
    kf = runs["kf"]
    results = json.loads((kf / "results.json").read_text())
    assert results["method"] == "kf" and results["config"] == "dsprites_tiny"
    assert list(results["tasks"]) == TASKS and all(0 <= a <= 100 for a in results["tasks"].values())
    records = read_metrics(kf / "metrics.jsonl")
    assert len(records) == 1 and records[0]["epoch"] == 1 and set(records[0]) >= LOSS_KEYS
    saved = load_checkpoint(kf / "kf.pt")
    assert saved["kind"] == "kf" and saved["task_names"] == TASKS and saved["task_classes"] == [3, 6]
    keys = saved["state_dict"]
    assert "student.head.fcs.1.weight" in keys and "student.TSN.1.fc.weight" in keys and "feat_fcs.2.3.weight" in keys
    # the teacher inside kf.pt is the file it was given, untouched by training (eval mode, frozen)
    teacher = load_checkpoint(runs["teacher"] / "teacher.pt")["state_dict"]
    assert same_state({k.removeprefix("teacher."): v for k, v in keys.items() if k.startswith("teacher.")}, teacher)
    for index, task in enumerate(TASKS):
        factor = load_checkpoint(kf / "factors" / f"{task}.pt")
        assert factor["kind"] == "factor" and factor["task"] == task and factor["task_index"] == index
        assert {k.split(".")[0] for k in factor["state_dict"]} == {"CKN", "TSN", "head"}
        assert torch.equal(factor["state_dict"]["head.weight"], keys[f"student.head.fcs.{index}.weight"])


def test_teacher_run_writes_an_mmcls_layout_checkpoint(runs):
    results = json.loads((runs["teacher"] / "results.json").read_text())
    assert results["method"] == "teacher" and list(results["tasks"]) == TASKS
    keys = load_checkpoint(runs["teacher"] / "teacher.pt")["state_dict"]
    assert {k.split(".")[0] for k in keys} == {"backbone", "head"}
    assert keys["head.fcs.0.weight"].shape == (3, 64) and keys["head.fcs.1.weight"].shape == (6, 64)


def test_eval_reports_each_factor_equal_to_the_assembly(runs, sprites, capsys):
    report = evaluate(runs["kf"] / "kf.pt", sprites)
    assert report["kind"] == "kf" and list(report["tasks"]) == TASKS
    assert report["factors"] == report["tasks"]
    trained = json.loads((runs["kf"] / "results.json").read_text())["tasks"]
    assert report["tasks"] == pytest.approx(trained, abs=1e-9)
    assert '"factors"' in capsys.readouterr().out
    for task in TASKS:  # a factor file evaluates alone, with nothing else
        assert evaluate(runs["kf"] / "factors" / f"{task}.pt", sprites)["tasks"] == {task: report["tasks"][task]}


def test_eval_reads_the_data_of_the_run_it_evaluates(runs, sprites, tmp_path, capsys):
    """Without --data, the file's run data (the small sprites file: 96 test images), not the embedded set."""
    saved = load_checkpoint(runs["kf"] / "kf.pt")
    assert saved["data"] == str(sprites.resolve())
    assert json.loads((runs["kf"] / "config.json").read_text())["data"] == str(sprites)
    report = cli.eval_command(["--weights", str(runs["kf"] / "kf.pt"), "--device", "cpu"])
    assert report["tasks"] == evaluate(runs["kf"] / "kf.pt", sprites)["tasks"]
    correct = {t: round(a * 96 / 100) for t, a in report["tasks"].items()}
    assert all(a == pytest.approx(100 * correct[t] / 96, abs=1e-9) for t, a in report["tasks"].items())
    moved = tmp_path / "kf.pt"  # a file whose run data has gone
    moved.write_bytes((runs["kf"] / "kf.pt").read_bytes())
    gone = dict(saved, data=str(tmp_path / "gone.npz"))
    save_checkpoint(moved, gone)
    assert run(cli.eval_command, ["--weights", moved, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "gone.npz, the data of the run" in err and "--data" in err and len(err.strip().splitlines()) == 1


def test_assembly_in_a_fresh_process_equals_the_factor_networks(runs, tmp_path):
    """As a user does it: factor files written by one process, knowfactor-assemble run in another; the assembled
    file, loaded here, gives the logits of the factor networks loaded from their own files (no shared objects)."""
    factors = [runs["kf"] / "factors" / f"{t}.pt" for t in TASKS[::-1]]
    multi = tmp_path / "multi.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "knowfactor.cli", "assemble", "--factors", *map(str, factors), "--out", str(multi)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assembled, _ = engine.load_network(multi)
    alone = [engine.load_factor(path)[0] for path in factors]
    assert assembled.CKN is not alone[0].CKN
    x = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = assembled(x)
        for factor, logits in zip(alone, together, strict=True):
            assert torch.equal(factor(x), logits)
            assert not torch.equal(logits, torch.zeros_like(logits))


def test_assembled_factors_evaluate_like_the_factor_networks(runs, sprites, tmp_path):
    factors = runs["kf"] / "factors"
    reference = evaluate(runs["kf"] / "kf.pt", sprites)["tasks"]
    for order in (TASKS, TASKS[::-1], ["scale"]):
        multi = tmp_path / f"multi-{'-'.join(order)}.pt"
        assert run(cli.assemble_command, ["--factors", *(factors / f"{t}.pt" for t in order), "--out", multi]) == 0
        saved = load_checkpoint(multi)
        assert saved["kind"] == "assembled" and saved["tasks"] == order
        report = evaluate(multi, sprites)
        assert report["kind"] == "assembled" and report["tasks"] == {t: reference[t] for t in order}


def test_assemble_refuses_a_factor_of_another_run(runs, resumed, tmp_path, capsys):
    other = resumed["straight"] / "factors" / "scale.pt"  # same tasks and config, another seed
    multi = tmp_path / "multi.pt"
    code = run(cli.assemble_command, ["--factors", runs["kf"] / "factors" / "shape.pt", other, "--out", multi])
    err = capsys.readouterr().err
    assert code == 2 and "another CKN" in err and len(err.strip().splitlines()) == 1
    assert not multi.exists()
    same = runs["kf"] / "factors" / "shape.pt"
    assert run(cli.assemble_command, ["--factors", same, same, "--out", multi]) == 2
    assert "repeat a task" in capsys.readouterr().err
    assert run(cli.assemble_command, ["--factors", runs["kf"] / "kf.pt", "--out", multi]) == 2
    assert "not a factor network file" in capsys.readouterr().err and not multi.exists()


def test_kd_baseline_trains_against_the_teacher(runs, common, sprites, tmp_path):
    out = tmp_path / "kd"
    argv = ["--method", "kd", "--epochs", "1", "--teacher", runs["teacher"] / "teacher.pt", "--out", out, *common]
    assert run(cli.train_command, argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "kd" and list(results["tasks"]) == TASKS
    assert set(read_metrics(out / "metrics.jsonl")[0]) >= {"loss_kd", "loss_cls", "loss"}
    report = evaluate(out / "kd.pt", sprites)
    assert report["kind"] == "kd" and report["tasks"] == pytest.approx(results["tasks"], abs=1e-9)


# --- resume -------------------------------------------------------------------------------------------------------


def test_resume_equals_an_uninterrupted_run(resumed):
    straight, again = resumed["straight"], resumed["resumed"]
    assert same_state(load_checkpoint(straight / "kf.pt")["state_dict"], load_checkpoint(again / "kf.pt")["state_dict"])
    for task in TASKS:
        a, b = (load_checkpoint(run / "factors" / f"{task}.pt")["state_dict"] for run in (straight, again))
        assert same_state(a, b)
    assert read_metrics(straight / "metrics.jsonl") == read_metrics(again / "metrics.jsonl")
    results = [json.loads((run / "results.json").read_text()) for run in (straight, again)]
    assert results[0]["tasks"] == results[1]["tasks"]


def test_demo_trains_its_teacher_first_and_resumes_it(common, tmp_path):
    """kf without --teacher (demo preset): a teacher with the setting's recipe is trained into OUT/teacher first."""
    out = tmp_path / "kf"
    original, calls = engine.train_epoch, []

    def interrupt_the_teacher(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "train_epoch", interrupt_the_teacher)
        assert run(cli.train_command, ["--method", "kf", "--epochs", "1", "--out", out, *common]) == 130
    assert not (out / "teacher" / "teacher.pt").exists() and (out / "teacher" / "checkpoint-00000002.pt").is_file()
    # the KF run has no checkpoint yet: started again, it resumes its teacher at epoch 3
    assert run(cli.train_command, ["--method", "kf", "--epochs", "1", "--out", out, *common]) == 0
    teacher = [r["epoch"] for r in read_metrics(out / "teacher" / "metrics.jsonl")]
    assert teacher == list(range(1, 9))  # the dsprites_tiny recipe: 8 epochs, each once
    assert json.loads((out / "results.json").read_text())["method"] == "kf"
    weights = load_checkpoint(out / "kf.pt")["state_dict"]
    inside = {k.removeprefix("teacher."): v for k, v in weights.items() if k.startswith("teacher.")}
    assert same_state(inside, load_checkpoint(out / "teacher" / "teacher.pt")["state_dict"])


# --- bad input: one line, exit code 2 ---------------------------------------------------------------------------


def test_bad_input_is_one_line_and_exit_code_2(runs, common, sprites, tmp_path, capsys):
    teacher = runs["teacher"] / "teacher.pt"
    not_a_zip = tmp_path / "broken.npz"
    not_a_zip.write_bytes(b"this is not a zip archive")
    no_latents = tmp_path / "nolatents.npz"
    np.savez(no_latents, imgs=np.zeros((4, 64, 64), dtype=np.uint8))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage")
    missing = tmp_path / "nowhere" / "teacher.pt"
    single_array = tmp_path / "imgs.npy"
    np.save(single_array, np.zeros((4, 64, 64), dtype=np.uint8))
    bytes_255 = tmp_path / "sprites255.npz"  # 0-255 floats where dSprites holds 0/1
    np.savez(bytes_255, imgs=np.full((4, 64, 64), 255.0, np.float32), latents_classes=np.zeros((4, 6), np.int64))
    data = ["--data", sprites, "--device", "cpu", "--quiet"]
    kf = ["--method", "kf", "--epochs", "1"]
    cases = [
        # a named teacher that is not there (the small preset never trains one itself)
        (
            cli.train_command,
            [*kf, "--preset", "small", "--config", "dsprites_tiny", *data, "--teacher", missing],
            str(missing),
        ),
        (cli.train_command, [*kf, "--preset", "small", "--config", "dsprites_tiny", *data], "needs --teacher"),
        # a teacher trained on 2 tasks used for 3, or for 2 other tasks
        (
            cli.train_command,
            [*kf, *data, "--tasks", "shape,scale,orientation", "--teacher", teacher],
            "has 2 task head(s)",
        ),
        (cli.train_command, [*kf, *data, "--tasks", "shape,orientation", "--teacher", teacher], "trained on tasks"),
        (cli.train_command, [*kf, *data, "--tasks", "shape,posX", "--teacher", teacher], "trained on tasks"),
        (
            cli.train_command,
            [*kf, *data, "--tasks", "shape,scale", "--teacher", teacher, "--batch-size", "5000"],
            "exceeds",
        ),
        (cli.train_command, [*kf, *data, "--tasks", "shape,scale", "--teacher", corrupt], "corrupt"),
        (cli.train_command, [*kf, "--data", not_a_zip, "--teacher", teacher], "not a readable .npz"),
        (cli.train_command, [*kf, "--data", no_latents, "--teacher", teacher], "latents_classes"),
        (cli.train_command, [*kf, *data, "--tasks", "shape,colour", "--teacher", teacher], "unknown task"),
        (cli.train_command, [*kf, "--data", single_array, "--teacher", teacher], "single .npy array"),
        (cli.train_command, [*kf, "--data", bytes_255, "--teacher", teacher], "0/1 pixels"),
        # the demo preset trains its own teacher only with a CPU-scale config, never a 200-epoch CIFAR teacher
        (cli.train_command, [*kf, "--config", "cifar10_wrn28_2_to_r18", "--data", tmp_path], "needs --teacher"),
        (cli.train_command, [*kf, *data, "--epochs", "0"], "--epochs"),
        (cli.train_command, [*kf, *data, "--batch-size", "0"], "--batch-size"),
        (cli.eval_command, ["--weights", tmp_path / "none.pt"], "none.pt"),
        (cli.eval_command, ["--weights", corrupt], "corrupt"),
    ]
    for index, (command, argv, message) in enumerate(cases):
        out = [] if command is not cli.train_command else ["--out", tmp_path / f"run{index}"]
        code = run(command, [*argv, *out])
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert message in err, (message, err)
        if out:
            assert not list(out[1].glob("checkpoint-*.pt")) and not (out[1] / "results.json").exists()
    # a finished run is never overwritten
    before = (runs["kf"] / "kf.pt").read_bytes()
    argv = [*kf, *common, "--teacher", teacher, "--out", runs["kf"]]
    assert run(cli.train_command, argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (runs["kf"] / "kf.pt").read_bytes() == before


# --- torchrun and the installed scripts ---------------------------------------------------------------------------


def test_two_process_gloo_training(sprites, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "knowfactor.cli"]
    cmd += ["train", "--method", "teacher", "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "ddp")]
    cmd += ["--data", str(sprites), "--tasks", ",".join(TASKS), "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]  # rank 0 alone writes
    assert list(json.loads((tmp_path / "ddp" / "results.json").read_text())["tasks"]) == TASKS
    assert (tmp_path / "ddp" / "teacher.pt").is_file()


def test_every_console_script_answers_help():
    scripts = Path(sys.executable).parent
    names = ("knowfactor-train", "knowfactor-eval", "knowfactor-assemble", "knowfactor-repro")
    procs = {
        name: subprocess.Popen(
            [str(scripts / name), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name in names
    }
    helps = {}
    for name, proc in procs.items():
        helps[name], err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (name, err[-2000:])
        assert helps[name].startswith(f"usage: {name}"), helps[name][:200]
    for option in ("--method", "--teacher", "--tasks", "--beta", "--official-teacher-bn", "--kd-variant", "--resume"):
        assert option in helps["knowfactor-train"]
    assert "--workers" not in helps["knowfactor-train"]  # the data sit in memory: no loader processes
    assert "--factors" in helps["knowfactor-assemble"] and "--weights" in helps["knowfactor-eval"]
    assert "dsprites_official" in helps["knowfactor-train"] and "shape3d_official" in helps["knowfactor-train"]
    for option in ("--seeds", "--preset", "--device", "--threads", "--epochs", "--beta", "small"):
        assert option in helps["knowfactor-repro"]


def test_mixed_precision_kf_epoch_on_cpu(runs, common, tmp_path):
    """--amp trains under bf16 autocast on CPU; the loss terms stay finite."""
    argv = ["--method", "kf", "--epochs", "1", "--amp", "--teacher", runs["teacher"] / "teacher.pt"]
    assert run(cli.train_command, [*argv, "--out", tmp_path / "amp", *common]) == 0
    record = read_metrics(tmp_path / "amp" / "metrics.jsonl")[0]
    assert all(math.isfinite(record[k]) for k in ("loss", "loss_cls", "loss_infomax", "loss_kd"))
