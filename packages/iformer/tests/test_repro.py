"""iformer-repro: the ablations are what they claim to be, at matched size, and the report is written."""

import json

from iformer import cli
from iformer.repro import VARIANTS, build_variant, count_parameters, matched_mlp_ratio


def test_variants_split_channels_as_named():
    ramp, attention, constant = (build_variant(heads) for heads in VARIANTS.values())
    blocks = [[b for i in range(1, 5) for b in getattr(m, f"blocks{i}")] for m in (ramp, attention, constant)]
    assert [b.attn.high_dim for b in blocks[1]] == [0] * 5 and all(b.attn.high_mixer is None for b in blocks[1])
    assert all(b.attn.low_dim == b.attn.high_dim for b in blocks[2])
    fractions = [b.attn.low_dim / (b.attn.low_dim + b.attn.high_dim) for b in blocks[0]]
    assert fractions == sorted(fractions) and fractions[0] < fractions[-1]  # the ramp rises with depth


def test_matched_parameter_counts():
    target = count_parameters(build_variant(VARIANTS["iFormer (frequency ramp)"]))
    for heads in VARIANTS.values():
        assert abs(count_parameters(build_variant(heads, matched_mlp_ratio(heads, target))) - target) / target < 0.002


def test_repro_writes_table_figure_and_results_and_reuses_its_runs(tmp_path, capsys):
    out = tmp_path / "repro"
    argv = ["--seeds", "1", "--epochs", "1", "--out", str(out), "--device", "cpu"]
    results = cli.repro_command(argv)
    assert set(results["scores"]) == set(VARIANTS) and all(len(v) == 1 for v in results["scores"].values())
    saved = json.loads((out / "results.json").read_text())
    assert saved["headline"].startswith("ramp ") and saved["seeds"] == 1 and saved["preset"] == "demo"
    text = (out / "results.md").read_text()
    assert "attention only" in text and "19,866,344" in text and "![" in text
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "| mixer" in capsys.readouterr().out
    # each run is a real training run with its files, recorded with the version and configuration
    record = json.loads((out / "runs" / "iFormer-seed0.json").read_text())
    assert record["config"]["config"]["model_kwargs"]["mlp_ratio"] == 4.0
    assert record["result"]["test_top1"] == results["scores"]["iFormer (frequency ramp)"][0]
    assert (out / "runs" / "iFormer-seed0" / "model.pt").is_file()
    # run again: the recorded runs are reused, not trained again
    (out / "runs" / "iFormer-seed0" / "model.pt").unlink()
    again = cli.repro_command(argv)
    assert again["scores"] == results["scores"] and not (out / "runs" / "iFormer-seed0" / "model.pt").exists()
