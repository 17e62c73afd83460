"""On a CUDA device: an official-size PT adaptation step, and CPU and CUDA evaluate a model alike."""

import pytest
import torch

from probteacher import bench
from probteacher.config import build_config
from probteacher.engine import evaluate_file, fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def test_official_size_adaptation_step_on_cuda():
    report = bench.run(CUDA, detector="vgg16", size=600, batch_size=2, steps=1, warmup=1)
    assert report["pt_images_per_s"] > 0 and report["plain_images_per_s"] > 0


def test_cpu_and_cuda_give_the_same_ap(tmp_path):
    config = build_config(
        "demo", toy_source_train=40, toy_target_train=40, toy_test=20, burn_in=30, iterations=40, eval_every=0
    )
    fit(config, tmp_path / "run", torch.device("cpu"), quiet=True)
    cpu = evaluate_file(tmp_path / "run" / "final.pt", device=torch.device("cpu"))
    cuda = evaluate_file(tmp_path / "run" / "final.pt", device=CUDA)
    assert abs(cpu["AP50"] - cuda["AP50"]) <= 0.02
