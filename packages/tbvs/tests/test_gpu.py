"""On a CUDA device: a training step of the paper-size model, and CPU and CUDA give the same metrics."""

import pytest
import torch

from tbvs import bench
from tbvs.config import build_config
from tbvs.data import prepare_a2d
from tbvs.engine import evaluate_file, fit
from tbvs.synthetic import make_synthetic

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def test_paper_size_training_step_on_cuda():
    report = bench.paper_model(CUDA, size=320, batch_size=1, steps=1, text="bert")
    assert report["train_clips_per_s"] > 0 and report["shares"]["RGB backbone"] > 0
    amp = bench.paper_model(CUDA, size=320, batch_size=2, steps=1, text="tiny", amp=True)
    assert amp["train_clips_per_s"] > 0


def test_cpu_and_cuda_give_the_same_metrics(tmp_path):
    make_synthetic(tmp_path / "raw", train_videos=6, test_videos=4, size=96, seed=3, oracle_flow=True)
    prepare_a2d(tmp_path / "raw", tmp_path / "prepared", flow="oracle")
    config = build_config(
        "demo", data=tmp_path / "prepared", flow="oracle", input_size=64, batch_size=4, iterations=20,
        checkpoint_every=20,
    )  # fmt: skip
    fit(config, tmp_path / "run", torch.device("cpu"), quiet=True)
    weights = tmp_path / "run" / "final.pt"
    on_cpu = evaluate_file(weights, tmp_path / "prepared", torch.device("cpu"))["metrics"]
    on_gpu = evaluate_file(weights, tmp_path / "prepared", CUDA)["metrics"]
    assert on_cpu.keys() == on_gpu.keys()
    for subset in on_cpu:
        for name, value in on_cpu[subset].items():
            # float rounding may flip a pixel at the relative threshold: IoUs agree to a pixel's worth
            assert abs(value - on_gpu[subset][name]) <= 0.02, (subset, name)
    trained = fit(config, tmp_path / "cuda-run", CUDA, quiet=True)
    assert trained["final_loss"] > 0
