"""knowfactor-repro: the report (table, figure, probes) and its run cache: reuse, recompute, a teacher trained again."""

import json

from knowfactor import cli, engine, repro
from knowfactor.repro import FACTORIZATIONS, MEASURES, MODELS, TASKS


def test_repro_writes_its_report_and_reuses_or_recomputes_its_runs(sprites, tmp_path, capsys, monkeypatch):
    # the small dSprites-lite file (224 train / 96 test) in place of the embedded 4,000 sprites
    monkeypatch.setattr(repro, "load_data", lambda config: engine.load_data(config, sprites))
    out = tmp_path / "repro"
    runs = out / "runs"
    argv = ["--seeds", "1", "--epochs", "1", "--out", str(out), "--device", "cpu"]
    results = cli.repro_command(argv)
    (seed,) = results["seeds"]
    assert set(MODELS) <= set(seed) and all(list(seed[key]) == list(TASKS) for key in MODELS)
    assert seed["assembled"] == seed["vib"] and seed["assembly_gap"] == 0.0  # assembly is exact
    assert set(seed["transfer"]) == {*FACTORIZATIONS, "kd"}
    for measure in MEASURES:
        assert set(seed[measure]) == set(FACTORIZATIONS)
    assert all(-100 <= v <= 100 for v in seed["mig"].values())
    assert all(0 <= v <= 100 for m in ("leakage", "own_task") for v in seed[m].values())
    assert all(v >= 0 for v in seed["kl"].values())
    saved = json.loads((out / "results.json").read_text())
    assert saved["headline"].startswith("MIG x100") and (saved["epochs"], saved["preset"]) == (1, "demo")
    text = (out / "results.md").read_text()
    assert "KF assembled network" in text and "held-out posY" in text and "own task" in text and "![" in text
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "| model" in capsys.readouterr().out
    # each run is a fit with its files, recorded with the configuration and the probes measured on it
    imb = json.loads((runs / "vib-seed0.json").read_text())
    kd_only = json.loads((runs / "kd_only-seed0.json").read_text())
    moment = json.loads((runs / "moment-seed0.json").read_text())
    assert imb["config"]["config"]["beta"] == 1e-3 and imb["config"]["teacher"] == seed["teacher"]
    assert imb["config"]["config"]["config"] == "dsprites_simplecnn_tiny"
    assert moment["config"]["config"]["config"] == "dsprites_simplecnn_tiny_moment"
    assert (kd_only["config"]["config"]["beta"], kd_only["config"]["config"]["lambda_feat"]) == (0.0, 0.0)
    assert imb["result"]["leakage"] == seed["leakage"]["vib"] and imb["result"]["tasks"] == seed["vib"]
    assert (runs / "teacher-seed0" / "teacher.pt").is_file() and (runs / "vib-seed0" / "kf.pt").is_file()
    # run again from the folder moved elsewhere: everything recorded is reused, nothing is trained
    out = out.rename(tmp_path / "moved")
    runs = out / "runs"
    argv = ["--seeds", "1", "--epochs", "1", "--out", str(out), "--device", "cpu"]
    teacher_file, kf_file = runs / "teacher-seed0" / "teacher.pt", runs / "vib-seed0" / "kf.pt"
    teacher_file.unlink()
    kf_file.unlink()
    assert cli.repro_command(argv)["seeds"] == results["seeds"]
    assert not teacher_file.exists() and not kf_file.exists()
    # a record of another configuration is recomputed; its teacher, whose weights are gone, is trained again first
    imb["config"]["config"]["beta"] = 0.5
    (runs / "vib-seed0.json").write_text(json.dumps(imb))
    assert cli.repro_command(argv)["seeds"] == results["seeds"]  # same seed, same weights
    assert teacher_file.is_file() and kf_file.is_file()
    # --beta retrains the two bottleneck runs only; the teacher, KD-only and KD runs are reused
    assert results["beta"] == 1e-3
    stamps = {name: (runs / f"{name}-seed0.json").stat().st_mtime_ns for name in ("kd_only", "kd", "teacher")}
    strong = cli.repro_command([*argv, "--beta", "0.5"])
    assert strong["beta"] == 0.5 and "beta 0.5" in strong["headline"]
    for name in ("vib", "moment"):
        assert json.loads((runs / f"{name}-seed0.json").read_text())["config"]["config"]["beta"] == 0.5
    assert {name: (runs / f"{name}-seed0.json").stat().st_mtime_ns for name in stamps} == stamps
