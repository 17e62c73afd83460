"""The console scripts end to end through subprocesses, their help, and one-line errors with exit code 2."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facemae import cli
from shared.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "facemae.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_the_whole_pipeline_through_the_console_scripts(tmp_path):
    data = tmp_path / "faces"
    made = cli.make_synthetic_command(
        ["--out", str(data), "--size", "32", "--source", "4,4", "--target", "4,4", "--pair-identities", "4",
         "--pairs", "20"]
    )  # fmt: skip
    assert made["pairs"] == str(data / "synthetic_pairs.bin")
    common = ("--device", "cpu", "--quiet", "--epochs", "1")
    mae = _run(
        "train", "--stage", "mae", "--data", str(data / "source"), "--identities-per-batch", "2", "--phi-epochs", "1",
        "--warmup-epochs", "0", "--out", str(tmp_path / "mae"), *common,
    )  # fmt: skip
    assert mae.returncode == 0, mae.stderr
    assert (tmp_path / "mae" / "phi" / "final.pt").is_file()  # phi trained on the source originals first
    assert "no verification pairs given" in mae.stderr  # real --data and no --val: said aloud
    release = tmp_path / "release"
    rec = _run(
        "reconstruct", "--weights", str(tmp_path / "mae" / "final.pt"), "--data", str(data / "target"),
        "--out", str(release), "--device", "cpu",
    )  # fmt: skip
    assert rec.returncode == 0, rec.stderr
    manifest = tmp_path / "release.manifest.json"
    assert manifest.is_file() and len(list(release.rglob("*.png"))) == 16
    fr = _run(
        "train", "--stage", "fr", "--data", str(release), "--val", str(data / "synthetic_pairs.bin"),
        "--batch-size", "8", "--lr-steps", "1", "--out", str(tmp_path / "fr"), *common,
    )  # fmt: skip
    assert fr.returncode == 0, fr.stderr
    results = json.loads((tmp_path / "fr" / "results.json").read_text())
    assert set(results["verification"]) == {"synthetic_pairs"}
    privacy = _run(
        "privacy", "--manifest", str(manifest), "--originals", str(data / "target"),
        "--attacker-weights", str(tmp_path / "fr" / "final.pt"), "--out", str(tmp_path / "privacy"),
        "--device", "cpu",
    )  # fmt: skip
    assert privacy.returncode == 0, privacy.stderr
    report = json.loads((tmp_path / "privacy" / "privacy.json").read_text())
    assert {"instance@1", "identity@5", "instance_chance@1", "psnr", "ssim", "mean_cosine"} <= set(report)
    assert report["method"] == "mae" and report["instance_chance@1"] == pytest.approx(1 / 16)
    by_phi = cli.privacy_command(
        ["--manifest", str(manifest), "--originals", str(data / "target"), "--attacker", "irm", "--out",
         str(tmp_path / "privacy-irm"), "--device", "cpu"]
    )  # fmt: skip
    assert by_phi["attacker"] == "irm" and by_phi["instance_chance@1"] == report["instance_chance@1"]
    assert by_phi["psnr"] == report["psnr"] and not (tmp_path / "privacy-irm" / "attacker").exists()  # none trained
    again = _run(
        "train", "--stage", "fr", "--data", str(release), "--out", str(tmp_path / "fr"), *common
    )  # a finished run is never overwritten
    assert again.returncode == 2 and "already holds a run" in again.stderr


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_documents_the_defaults(command, capsys):
    assert main(cli.COMMANDS[command])(["--help"]) == 0
    text = capsys.readouterr().out
    assert "usage: facemae-" in text and ("default" in text or command == "privacy")


def _fails(command: str, argv: list[str], capsys) -> str:
    assert main(cli.COMMANDS[command])(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_exit_code_2(tiny_split, tmp_path, capsys):
    assert "(0, 1)" in _fails("train", ["--mask-ratio", "1.5", "--out", str(tmp_path / "a")], capsys)
    assert "not found" in _fails("train", ["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")], capsys)
    lonely = tmp_path / "lonely"
    shutil.copytree(tiny_split.target_folder, lonely)
    for extra in sorted((lonely / "id00008").iterdir())[1:]:
        extra.unlink()
    assert "holds 1 image" in _fails(
        "train", ["--stage", "fr", "--data", str(lonely), "--out", str(tmp_path / "c")], capsys
    )
    no_index = tmp_path / "pack"
    no_index.mkdir()
    shutil.copy(tiny_split.target_rec, no_index / "train.rec")
    err = _fails(
        "train", ["--stage", "fr", "--data", str(no_index / "train.rec"), "--out", str(tmp_path / "d")], capsys
    )
    assert "has no index" in err
    assert not (tmp_path / "d").exists()  # a failed start leaves no empty run folder
    assert "needs --weights" in _fails("reconstruct", ["--out", str(tmp_path / "e")], capsys)
    assert "multiple of 20" in _fails("make-synthetic", ["--out", str(tmp_path / "f"), "--pairs", "30"], capsys)
    assert "not found" in _fails("privacy", ["--manifest", str(tmp_path / "m.json"), "--out", str(tmp_path)], capsys)
    grey = tmp_path / "grey"
    cli.reconstruct_command(["--method", "masked", "--data", str(tiny_split.target_folder), "--out", str(grey)])
    assert "not an MAE's" in _fails(
        "privacy",
        ["--manifest", f"{grey}.manifest.json", "--originals", str(tiny_split.target_folder), "--attacker", "irm",
         "--out", str(tmp_path / "g")],
        capsys,
    )  # fmt: skip
    assert Path(tiny_split.pairs).is_file()


def test_two_process_gloo_ddp_trains_both_stages(tiny_split, tmp_path):
    """torchrun, 2 CPU processes: phi (stage fr) then FaceMAE, each process on its share of the batches."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    command += ["facemae.cli", "train", "--data", str(tiny_split.source_folder), "--epochs", "2", "--phi-epochs", "1"]
    command += ["--identities-per-batch", "2", "--warmup-epochs", "1", "--device", "cpu", "--quiet"]
    command += ["--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["loss_irm"] > 0 and (tmp_path / "ddp" / "phi" / "final.pt").is_file()
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # one record per epoch: only the main process writes


def test_bench_reports_training_and_reconstruction_throughput(capsys):
    result = cli.bench_command(
        ["--model", "mae_vit_tiny_patch4", "--network", "iresnet_mini", "--face-size", "32", "--batch-size", "8",
         "--steps", "1", "--ratios", "0.25,0.9", "--device", "cpu"]
    )  # fmt: skip
    timed = {f"{kind}_images_per_s@{r}" for kind in ("train", "reconstruct") for r in ("0.25", "0.9")}
    assert set(result) >= timed | {"threads"} and all(result[key] > 0 for key in timed)
    assert "       0.9 |" in capsys.readouterr().out
    assert "multiple of 4" in _fails("bench", ["--batch-size", "6", "--device", "cpu"], capsys)
