"""knowfactor-repro: the report (table, figure, probes) and its run cache: reuse, recompute, a teacher trained again."""

import json

from knowfactor import cli, engine, repro
from knowfactor.repro import MODELS, TASKS


def test_repro_writes_its_report_and_reuses_or_recomputes_its_runs(sprites, tmp_path, capsys, monkeypatch):
    # the small dSprites-lite file (224 train / 96 test) in place of the embedded 4,000 sprites
    monkeypatch.setattr(repro, "load_data", lambda config: engine.load_data(config, sprites))
    out = tmp_path / "repro"
    runs = out / "runs"
    argv = ["--seeds", "1", "--epochs", "1", "--out", str(out), "--device", "cpu"]
    results = cli.repro_command(argv)
    (seed,) = results["seeds"]
    assert set(MODELS) <= set(seed) and all(list(seed[key]) == list(TASKS) for key in MODELS)
    assert seed["assembled"] == seed["imb"] and seed["assembly_gap"] == 0.0  # assembly is exact
    assert set(seed["transfer"]) == {"ckn_imb", "ckn_kd_only", "kd_student"} and set(seed["leakage"]) == {
        "imb",
        "kd_only",
    }
    saved = json.loads((out / "results.json").read_text())
    assert saved["headline"].startswith("assembly max") and (saved["epochs"], saved["preset"]) == (1, "demo")
    text = (out / "results.md").read_text()
    assert "KF assembled network" in text and "transfer to posY" in text and "![" in text
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "| model" in capsys.readouterr().out
    # each run is a fit with its files, recorded with the configuration and the probes measured on it
    imb = json.loads((runs / "imb-seed0.json").read_text())
    kd_only = json.loads((runs / "kd_only-seed0.json").read_text())
    assert imb["config"]["config"]["beta"] == 1e-3 and imb["config"]["teacher"] == seed["teacher"]
    assert (kd_only["config"]["config"]["beta"], kd_only["config"]["config"]["lambda_feat"]) == (0.0, 0.0)
    assert imb["result"]["leakage"] == seed["leakage"]["imb"] and imb["result"]["tasks"] == seed["imb"]
    assert (runs / "teacher-seed0" / "teacher.pt").is_file() and (runs / "imb-seed0" / "kf.pt").is_file()
    # run again from the folder moved elsewhere: everything recorded is reused, nothing is trained
    out = out.rename(tmp_path / "moved")
    runs = out / "runs"
    argv = ["--seeds", "1", "--epochs", "1", "--out", str(out), "--device", "cpu"]
    teacher_file, kf_file = runs / "teacher-seed0" / "teacher.pt", runs / "imb-seed0" / "kf.pt"
    teacher_file.unlink()
    kf_file.unlink()
    assert cli.repro_command(argv)["seeds"] == results["seeds"]
    assert not teacher_file.exists() and not kf_file.exists()
    # a record of another configuration is recomputed; its teacher, whose weights are gone, is trained again first
    imb["config"]["config"]["beta"] = 0.5
    (runs / "imb-seed0.json").write_text(json.dumps(imb))
    assert cli.repro_command(argv)["seeds"] == results["seeds"]  # same seed, same weights
    assert teacher_file.is_file() and kf_file.is_file()
