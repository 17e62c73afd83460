import pytest
import torch

from probteacher import bench


def test_bench_times_pt_against_plain_faster_rcnn_and_inference():
    results = bench.run(torch.device("cpu"), batch_size=1, size=64, steps=1, warmup=0)
    assert set(results["seconds"]) == {"pt", "plain", "inference"}
    assert all(v > 0 for v in results["seconds"].values())
    seconds = results["seconds"]
    assert results["pt_overhead"] == pytest.approx(seconds["pt"] / seconds["plain"], rel=0.02)
    assert results["parameters"] > 0 and results["size"] == 64
