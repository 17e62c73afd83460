"""tyger-bench on tiny pools: every measurement is there and the round grows with the pool."""

import torch

from tyger import bench, cli


def test_bench_measures_throughput_and_rounds(tmp_path):
    result = bench.benchmark(torch.device("cpu"), pools=[100, 400], molecules=64, budget=8)
    assert result["featurise_mol_per_s"] > 0 and result["encoder_epoch_mol_per_s"] > 0
    assert [r["pool"] for r in result["rounds"]] == [100, 400] and all(r["picks"] == 8 for r in result["rounds"])
    text = bench.format_result(result)
    assert "molecules/s" in text and "   400" in text


def test_bench_command_writes_json(tmp_path):
    result = cli.bench_command(
        ["--pools", "50", "--molecules", "32", "--budget", "4", "--device", "cpu", "--out", str(tmp_path)]
    )
    assert (tmp_path / "bench.json").is_file() and result["rounds"][0]["pool"] == 50
