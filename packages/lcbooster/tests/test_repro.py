"""lcbooster-repro: one fit per (noise, method, seed), runs cached by version and configuration, the report.

``fit`` itself is exercised end to end by test_cli; here it is replaced by a stand-in with known results.
"""

import json
from pathlib import Path

import pytest

from lcbooster import cli, repro
from shared.errors import UserError

LAST = {"ce": 40.0, "dividemix": 80.0, "lcbooster": 85.0}


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake_fit(config, out, device, *, images=None, quiet=False):
        seen.append((config.noise, config.method, config.seed, config.epochs))
        assert quiet and images is not None and images.name == "digits" and device.type == "cpu"
        assert not any(Path(out).iterdir())  # a fresh folder: what a stale run left there is gone
        (Path(out) / "metrics.jsonl").write_text("{}\n")
        last = LAST[config.method] + config.seed
        result = {"method": config.method, "noise": config.noise, "last": last, "best": last + 1, "last5": last}
        if config.method == "lcbooster":
            result["correction"] = {
                "label_accuracy_before": 0.2 + config.seed / 10,
                "label_accuracy_after": 0.6,
                "n_labeled_before": 100,
                "n_labeled_after": 300,
                "labeled_precision_before": 0.9,
                "labeled_precision_after": 0.95,
            }
        return result

    monkeypatch.setattr(repro, "fit", fake_fit)
    return seen


def test_repro_reports_every_method_and_reuses_its_runs(tmp_path, calls, capsys):
    out = tmp_path / "repro"
    argv = ["--seeds", "2", "--noise", "sym80,sym90", "--out", str(out), "--device", "cpu"]
    results = cli.repro_command(argv)
    assert len(calls) == 2 * 2 * 3 and {c[2] for c in calls} == {0, 1} and {c[3] for c in calls} == {40}
    summary = results["summary"]["sym80"]
    assert summary["ce_last"] == 40.5 and summary["lcbooster_best"] == 86.5
    assert summary["label_accuracy_before"] == pytest.approx(0.25) and summary["n_labeled_after"] == 300
    assert "sym80: DivideMix − CE(last) = +40.0 points (≥ 10: holds)" in results["headline"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"]["sym90"]["dividemix"][1]["last"] == 81.0 and saved["preset"] == "demo"
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "![" in (out / "results.md").read_text() and "| noise" in capsys.readouterr().out
    record = json.loads((out / "runs" / "sym90-lcbooster-seed1.json").read_text())
    assert record["config"]["config"]["seed"] == 1 and record["result"]["last"] == 86.0

    again = cli.repro_command(argv)  # every run recorded with this version and configuration: nothing runs
    assert len(calls) == 12 and again["summary"] == results["summary"]
    cli.repro_command([*argv, "--epochs", "30"])  # another configuration: every run again, in a fresh folder
    assert len(calls) == 24 and {c[3] for c in calls[12:]} == {30}


def test_repro_refuses_bad_options(tmp_path, calls):
    for argv, message in (
        (["--noise", "sym150"], "noise ratio"),
        (["--epochs", "1"], "--epochs"),
        (["--seeds", "0"], "--seeds"),
    ):
        with pytest.raises(UserError, match=message):
            cli.repro_command([*argv, "--out", str(tmp_path / "r"), "--device", "cpu"])
    assert calls == []
