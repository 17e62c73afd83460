"""The console scripts end to end (a subprocess and in-process), and one-line errors with exit code 2."""

import csv
import json
import os
import subprocess
import sys

import pytest

from shared.cli import main
from tyger import cli

TINY = ["--init-size", "8", "--budget", "8", "--rounds", "2", "--pretrain-epochs", "1", "--finetune-epochs", "1",
        "--task-epochs", "3", "--patience", "2", "--device", "cpu", "--quiet"]  # fmt: skip


def _run(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tyger.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_loop_compares_selectors_over_seeds_through_the_console_script(tmp_path, sample_csvs):
    out = tmp_path / "loop"
    done = _run("loop", "--data", str(sample_csvs["regression"]), "--split", "random", "--selector", "tyger,random",
                "--seeds", "2", "--out", str(out), *TINY)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]["aulc"]) == {"tyger", "random"}
    assert all(len(v) == 2 for v in results["summary"]["aulc"].values())
    assert (out / "results.png").is_file() and "results.png" in (out / "results.md").read_text()
    for selector in ("tyger", "random"):
        for seed in (0, 1):
            run = out / f"chembl-reg-240-{selector}-seed{seed}"
            assert {"config.json", "metrics.jsonl", "selected.jsonl", "curve.csv", "results.json"} <= {
                p.name for p in run.iterdir()
            }
    again = _run("loop", "--data", str(sample_csvs["regression"]), "--selector", "tyger,random", "--out", str(out))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--resume" in again.stderr


@pytest.mark.parametrize("task_type", ["regression", "binary", "multilabel"])
def test_the_same_loop_command_runs_every_task_type(tmp_path, sample_csvs, task_type):
    split = "scaffold" if task_type == "multilabel" else "random"  # chembl is one congeneric series
    results = cli.loop_command(
        ["--data", str(sample_csvs[task_type]), "--split", split, "--selector", "tyger", "--out", str(tmp_path / "run"),
         *TINY]
    )  # fmt: skip
    assert results["task_type"] == task_type and len(results["curve"]) == 3
    assert results["metric"] == ("rmse" if task_type == "regression" else "roc_auc")
    assert len(set(results["labelled"])) == 24 and results["aulc"] == results["aulc"]  # not NaN


def _fails(command, argv, capsys) -> str:
    code = main(command)(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    return err


def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, sample_csvs, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out (runs/tyger/...) must not be left behind by a refused run
    no_smiles = tmp_path / "no_smiles.csv"
    no_smiles.write_text("structure,y\nCCO,1.0\n")
    assert "no 'smiles' or 'mol' column" in _fails(cli.loop_command, ["--data", str(no_smiles), *TINY], capsys)
    reg = str(sample_csvs["regression"])
    assert "no column 'SMILES_X'" in _fails(
        cli.loop_command, ["--data", reg, "--smiles-col", "SMILES_X", *TINY], capsys
    )
    strings = tmp_path / "strings.csv"
    strings.write_text("smiles,label\nCCO,active\nCCN,inactive\n")
    assert "holds text" in _fails(cli.loop_command, ["--data", str(strings), "--targets", "label", *TINY], capsys)
    too_big = [*TINY, "--data", reg, "--split", "random", "--budget", "100"]
    assert "pool holds only 192" in _fails(cli.loop_command, too_big, capsys)
    entropy = ["--data", reg, "--split", "random", "--selector", "entropy", *TINY]
    assert "supports only binary" in _fails(cli.loop_command, entropy, capsys)
    assert "unknown selector" in _fails(cli.loop_command, ["--selector", "tyger,oracle", *TINY], capsys)
    assert "fraction" in _fails(cli.loop_command, [*TINY, "--out", "x", "--budget", "2.5"], capsys)
    assert not (tmp_path / "runs").exists()


def test_train_reports_unparsable_smiles_and_trains_on_the_named_rows(tmp_path, sample_csvs):
    rows = sample_csvs["regression"].read_text().splitlines()
    data = tmp_path / "with_bad.csv"
    data.write_text("\n".join([rows[0], "C1CC(,5.0", *rows[1:]]) + "\n")
    labelled = tmp_path / "labelled.txt"
    labelled.write_text("\n".join(str(i) for i in range(40)) + "\n")
    done = _run("train", "--data", str(data), "--split", "random", "--labelled", str(labelled), "--task-epochs", "3",
                "--device", "cpu", "--out", str(tmp_path / "train"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "skipped 1 unparsable SMILES (row 1: 'C1CC('" in done.stderr
    results = json.loads((tmp_path / "train" / "results.json").read_text())
    assert results["labelled"] == 40 and results["metric"] == "rmse" and results["test"] > 0
    assert (tmp_path / "train" / "final.pt").is_file()


def test_select_writes_ranked_picks_for_the_lab(tmp_path, sample_csvs):
    rows = sample_csvs["binary"].read_text().splitlines()
    labelled, pool = tmp_path / "measured.csv", tmp_path / "candidates.csv"
    labelled.write_text("\n".join(rows[:61]) + "\n")
    pool.write_text("smiles\n" + "\n".join(r.split(",")[0] for r in rows[61:]) + "\nnot_a_smiles\n")
    result = cli.select_command(
        ["--labelled", str(labelled), "--pool", str(pool), "--picks", "5", "--pretrain-epochs", "1",
         "--finetune-epochs", "1", "--task-epochs", "3", "--device", "cpu", "--out", str(tmp_path / "sel")]
    )  # fmt: skip
    with (tmp_path / "sel" / "picks.csv").open() as handle:
        picks = list(csv.DictReader(handle))
    assert [p["rank"] for p in picks] == ["1", "2", "3", "4", "5"] and len({p["smiles"] for p in picks}) == 5
    candidates = [r.split(",")[0] for r in rows[61:]]
    assert all(candidates[int(p["candidate"])] == p["smiles"] for p in picks) and all(p["score"] for p in picks)
    assert len(result["picks"]) == 5


def test_module_entry_needs_a_command():
    done = _run()
    assert done.returncode == 2 and "usage" in done.stderr


def test_two_process_gloo_ddp_trains_the_task_learner(tmp_path, sample_csvs):
    """torchrun, 2 CPU processes: each takes half of every batch; one results.json from the main process."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    command += ["tyger.cli", "train", "--data", str(sample_csvs["regression"]), "--split", "random"]
    command += ["--task-epochs", "2", "--batch-size", "16", "--device", "cpu", "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["labelled"] == 192 and results["epochs"] == 2 and results["test"] > 0
    assert done.stdout.count('"test"') == 1  # printed by the main process only


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help_and_refuses_options_it_cannot_honour(command, capsys):
    assert main(cli.COMMANDS[command])(["--help"]) == 0
    assert "usage" in capsys.readouterr().out
    if command in ("train", "select"):
        assert "--resume applies" in _fails(cli.COMMANDS[command], ["--resume"], capsys)
        assert "--amp is not supported" in _fails(cli.COMMANDS[command], ["--amp"], capsys)


def test_select_demo_on_the_embedded_pool(tmp_path):
    result = cli.select_command(
        ["--dataset", "chembl-bin", "--selector", "coreset", "--picks", "4", "--task-epochs", "2", "--device", "cpu",
         "--out", str(tmp_path / "sel")]
    )  # fmt: skip
    assert [p["rank"] for p in result["picks"]] == [1, 2, 3, 4] and all(p["score"] > 0 for p in result["picks"])
