"""lcbooster-repro: one fit per (noise, variant, seed), runs cached by version and configuration, paired report.

``fit`` itself is exercised end to end by test_cli; here it is replaced by a stand-in with known results.
"""

import json
from pathlib import Path

import pytest

from lcbooster import cli, repro
from shared.errors import UserError

LAST = {"ce": 40.0, "dividemix": 70.0, "dividemix_views": 80.0, "no_correction": 82.0, "lcbooster": 85.0}


def _variant(config) -> str:
    if config.method != "lcbooster":
        return "dividemix_views" if config.method == "dividemix" and config.views != "dividemix" else config.method
    return "lcbooster" if config.relabel_epochs else "no_correction"


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake_fit(config, out, device, *, images=None, quiet=False):
        variant = _variant(config)
        seen.append((config.noise, variant, config.seed, config.epochs))
        assert quiet and images is not None and images.name == "digits" and device.type == "cpu"
        assert not any(Path(out).iterdir())  # a fresh folder: what a stale run left there is gone
        (Path(out) / "metrics.jsonl").write_text("{}\n")
        last = LAST[variant] + (config.seed * 3 if variant == "lcbooster" else config.seed)
        result = {"method": config.method, "noise": config.noise, "last": last, "best": last + 1, "last5": last}
        if variant == "lcbooster":
            result["correction"] = {
                "overwritten": 500,
                "relabel_accuracy": 0.98,
                "label_accuracy_before": 0.2 + config.seed / 10,
                "label_accuracy_after": 0.6,
                "correct_per_class_before": [10, 10, 10],
                "correct_per_class_after": [30, 10, 10 + config.seed],
                "n_labeled_before": 100,
                "n_labeled_after": 300,
                "labeled_precision_before": 0.9,
                "labeled_precision_after": 0.95,
            }
        return result

    monkeypatch.setattr(repro, "fit", fake_fit)
    return seen


def test_the_controls_share_the_views_and_differ_only_where_they_should():
    lcb = repro.variant_config("lcbooster", "digits", "sym90", "small", seed=2)
    same_views = repro.variant_config("dividemix_views", "digits", "sym90", "small", seed=2)
    no_correction = repro.variant_config("no_correction", "digits", "sym90", "small", seed=2)
    plain = repro.variant_config("dividemix", "digits", "sym90", "small", seed=2)
    assert (lcb.views, lcb.strong_aug, lcb.relabel_epochs) == ("ww_ws", "digits", [29])
    assert (same_views.method, same_views.views, same_views.strong_aug) == ("dividemix", "ww_ws", "digits")
    assert (plain.views, plain.strong_aug) == ("dividemix", "none")
    assert no_correction.relabel_epochs == [] and no_correction.method == "lcbooster"
    assert {**vars(no_correction), "relabel_epochs": [29]} == vars(lcb)  # the same run, the correction never fires
    for config in (same_views, no_correction, plain):
        assert (config.epochs, config.warmup_epochs, config.lr_milestones, config.seed) == (70, 10, [39], 2)
    with pytest.raises(UserError, match="unknown variant"):
        repro.variant_config("mixmatch", "digits", "sym90", "small", seed=0)


def test_repro_reports_paired_differences_with_intervals_and_reuses_its_runs(tmp_path, calls, capsys):
    out = tmp_path / "repro"
    argv = ["--seeds", "3", "--out", str(out), "--device", "cpu"]
    results = cli.repro_command(argv)
    assert len(calls) == 2 * 3 * 4 and {c[2] for c in calls} == {0, 1, 2} and {c[3] for c in calls} == {40}
    assert {c[0] for c in calls} == {"sym80", "sym90"} and {c[1] for c in calls} == set(repro.DEFAULT_VARIANTS)
    assert results["summary"]["sym80"]["ce_last"] == 41.0 and results["summary"]["sym80"]["lcbooster_last"] == 88.0
    # LC-Booster - DivideMix + views per seed: 5, 7, 9 -> mean 7, sd 2, 95% half-width 4.303 * 2 / sqrt(3)
    paired = results["differences"]["sym90"]["lcbooster-dividemix_views"]
    assert paired["per_seed"] == [5.0, 7.0, 9.0] and paired["mean"] == 7.0
    assert (paired["low"], paired["high"]) == pytest.approx((7.0 - 4.9687, 7.0 + 4.9687), abs=1e-3)
    same = results["differences"]["sym80"]["no_correction-dividemix_views"]
    assert same["per_seed"] == [2.0, 2.0, 2.0] and same["low"] == same["high"] == 2.0
    assert "dividemix_views-dividemix" not in results["differences"]["sym80"]  # plain DivideMix did not run
    assert "sym90: LC-Booster − DivideMix + views = +7.00 [+2.03, +11.97] over 3 seed(s)" in results["headline"]
    assert "excludes 0: LC-Booster better" in results["headline"]
    report = " ".join(capsys.readouterr().out.split())  # table cells padded to the column width
    assert "| sym90 | LC-Booster − LC-Booster w/o correction | +5.00 [+0.03, +9.97] | +3.0 +5.0 +7.0 |" in report
    assert "100 (0.900) → 300 (0.950)" in report and "1 2 2 of 3" in report  # classes gaining, per seed
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"]["sym90"]["dividemix_views"][1]["last"] == 81.0 and saved["preset"] == "demo"
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((out / "runs" / "sym90-no_correction-seed1.json").read_text())
    assert record["config"]["config"]["relabel_epochs"] == [] and record["result"]["last"] == 83.0

    assert results["trained_runs"] == 24
    again = cli.repro_command(argv)  # every run recorded with this version and configuration: nothing runs
    assert len(calls) == 24 and again["differences"] == results["differences"] and again["trained_runs"] == 0
    assert "(24 of the 24 runs reused from" in (out / "results.md").read_text()
    cli.repro_command([*argv, "--epochs", "30"])  # another configuration: every run again, in a fresh folder
    assert len(calls) == 48 and {c[3] for c in calls[24:]} == {30}


def test_one_seed_reports_no_interval(tmp_path, calls):
    argv = ["--seeds", "1", "--noise", "sym90", "--variants", "lcbooster,no_correction", "--out", str(tmp_path)]
    results = cli.repro_command([*argv, "--device", "cpu"])
    assert len(calls) == 2 and results["variants"] == ["no_correction", "lcbooster"]
    assert "= +3.00 over 1 seed(s), one seed: no interval" in results["headline"]


def test_repro_refuses_bad_options(tmp_path, calls):
    for argv, message in (
        (["--noise", "sym150"], "noise ratio"),
        (["--epochs", "1"], "--epochs"),
        (["--seeds", "0"], "--seeds"),
    ):
        with pytest.raises(UserError, match=message):
            cli.repro_command([*argv, "--out", str(tmp_path / "r"), "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        cli.repro_command(["--variants", "lcbooster,mixmatch", "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    assert calls == []
