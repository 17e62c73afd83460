"""iformer-repro: the ablations are what they claim to be, at matched size, and the report is written."""

import json

from iformer.repro import VARIANTS, _count, build_variant, matched_mlp_ratio, repro


def test_variants_split_channels_as_named():
    ramp, attention, constant = (build_variant(heads) for heads in VARIANTS.values())
    blocks = [[b for i in range(1, 5) for b in getattr(m, f"blocks{i}")] for m in (ramp, attention, constant)]
    assert [b.attn.high_dim for b in blocks[1]] == [0] * 5 and all(b.attn.high_mixer is None for b in blocks[1])
    assert all(b.attn.low_dim == b.attn.high_dim for b in blocks[2])
    fractions = [b.attn.low_dim / (b.attn.low_dim + b.attn.high_dim) for b in blocks[0]]
    assert fractions == sorted(fractions) and fractions[0] < fractions[-1]  # the ramp rises with depth


def test_matched_parameter_counts():
    target = _count(build_variant(VARIANTS["iFormer (frequency ramp)"]))
    for heads in VARIANTS.values():
        assert abs(_count(build_variant(heads, matched_mlp_ratio(heads, target))) - target) / target < 0.002


def test_repro_writes_table_and_results(tmp_path, capsys):
    results = repro(["--seeds", "1", "--epochs", "1", "--out", str(tmp_path / "repro")])
    assert set(results["scores"]) == set(VARIANTS) and all(len(v) == 1 for v in results["scores"].values())
    saved = json.loads((tmp_path / "repro" / "results.json").read_text())
    assert saved["headline"].startswith("ramp ") and saved["seeds"] == 1
    text = (tmp_path / "repro" / "results.md").read_text()
    assert "attention only" in text and "19,866,344" in text
    assert "| mixer" in capsys.readouterr().out
