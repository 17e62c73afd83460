"""Parameter and FLOP counts, and the interleaved throughput benchmark on tiny settings."""

import json

import pytest
import torch

from iformer import create_model
from iformer.bench import benchmark, count_flops, count_params, format_bench, result_to_dict

SMALL_PARAMS = 19_866_344
SMALL_MACS_TORCH = 4_825_828_736  # FlopCounterMode / 2, the same as the official model gives
SMALL_MACS_FVCORE_OFFICIAL = 4_848_476_928


@pytest.fixture(scope="module")
def small():
    return create_model("iformer_small")


def test_count_params_small(small):
    assert count_params(small) == SMALL_PARAMS


def test_count_flops_torch_tiny_is_deterministic():
    model = create_model("tiny_test")
    macs, backend = count_flops(model, 32, backend="torch")
    assert backend == "torch"
    assert isinstance(macs, int) and macs > 0
    assert count_flops(model, 32, backend="torch") == (macs, "torch")
    assert model.training  # the count runs in eval mode and restores the mode


def test_count_flops_torch_small_counts_attention(small):
    assert count_flops(small, 224, backend="torch") == (SMALL_MACS_TORCH, "torch")


def test_count_flops_fvcore_small_matches_official(small):
    pytest.importorskip("fvcore")
    macs, backend = count_flops(small, 224, backend="fvcore")
    assert backend == "fvcore"
    assert macs == pytest.approx(SMALL_MACS_FVCORE_OFFICIAL, rel=1e-3)
    assert count_flops(create_model("tiny_test"), 32)[1] == "fvcore"  # "auto" prefers fvcore


def test_count_flops_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        count_flops(create_model("tiny_test"), 32, backend="ptflops")


def test_benchmark_tiny_with_yardstick():
    threads = torch.get_num_threads()
    result = benchmark("tiny_test", batch_size=2, img_size=32, rounds=2, iters=1, warmup=1, threads=1)
    assert torch.get_num_threads() == threads
    assert result.threads == 1
    assert (result.model, result.batch_size, result.img_size) == ("tiny_test", 2, 32)
    assert result.params == 779_208  # tiny_test with a 1000-class head (651,498 with 10 classes)
    assert result.macs > 0 and result.yardstick_params == 25_557_032 and result.yardstick_macs > result.macs
    assert [row.mode for row in result.rows] == ["inference", "train"]
    for row in result.rows:
        assert len(row.ours) == len(row.yardstick) == len(row.ratio) == 2
        assert all(v > 0 for v in row.ours + row.yardstick)
        assert row.ratio == pytest.approx([a / b for a, b in zip(row.ours, row.yardstick, strict=True)])
    text = format_bench(result)
    assert "ratio" in text and "resnet50" in text and "25,557,032" in text
    data = json.loads(json.dumps(result_to_dict(result)))
    summary = data["rows"][0]["summary"]["ratio"]
    assert summary["min"] <= summary["median"] <= summary["max"]


def test_benchmark_without_yardstick():
    result = benchmark(
        "tiny_test", batch_size=2, img_size=32, rounds=1, iters=1, warmup=0, modes=("train",), yardstick=False
    )
    assert [row.mode for row in result.rows] == ["train"]
    assert result.rows[0].yardstick == [] and result.rows[0].ratio == []
    assert result.yardstick is None
    assert "ratio" not in format_bench(result)


def test_benchmark_rejects_unknown_mode():
    with pytest.raises(ValueError, match="modes"):
        benchmark("tiny_test", img_size=32, modes=("export",), yardstick=False)
