"""Time one training iteration of each method, a BN recalibration + evaluation, and a MACs count.

    python packages/slimda/benchmarks/step_time.py [--iterations 100] [--threads 2] [--bn-forward joint]

Runs on the embedded MNIST-5k -> UCI digits shift with the demo preset's SlimCNN bank (CPU by default).
"""

from __future__ import annotations

import argparse
import time

import torch

from slimda.config import BN_FORWARDS, RESNET_GRID, build_config
from slimda.data import load_embedded
from slimda.engine import Evaluator, Trainer
from slimda.flops import count_macs
from slimda.models import Arch, ModelBank
from slimda.sampling import ArchSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=100, help="timed iterations per method")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bn-forward", choices=BN_FORWARDS, default="separate", help="BN forwards of training")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    source, target = load_embedded("mnist-digits")
    for method, extra in (("source-only", {}), ("symnets", {}), ("slimda", {"ostc": False}), ("slimda", {})):
        config = build_config(
            "demo", "mnist-digits", method=method, warmup_fraction=0.0, bn_forward=args.bn_forward, **extra
        )
        bank = ModelBank(config.backbone, source.num_classes)
        trainer = Trainer(config, bank, source.images, source.labels, target.images, device)
        for it in range(5):  # warm-up of the allocator and kernels
            trainer.step(it)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for it in range(5, 5 + args.iterations):
            trainer.step(it)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_step = (time.perf_counter() - start) / args.iterations
        name = method + ("" if extra.get("ostc", True) else " (no OSTC)")
        print(f"{name:20s} {1000 * per_step:7.1f} ms/iteration ({1 / per_step:.1f} it/s)")
    evaluator = Evaluator(bank, trainer.pipeline, target.images, target.images, target.labels, device)
    start = time.perf_counter()
    for width in (1.0, 0.75, 0.5, 0.25):
        evaluator.accuracy(evaluator.outputs(Arch.uniform(width, bank.num_groups)))
    print(f"BN recalibration + evaluation of one architecture: {(time.perf_counter() - start) / 4:.3f} s")
    resnet = ModelBank("resnet50", 31)
    archs = [ArchSampler(5, RESNET_GRID, 2).random(torch.Generator().manual_seed(i)) for i in range(1000)]
    count_macs(resnet, resnet.full_arch(), 224)
    start = time.perf_counter()
    for arch in archs:
        count_macs(resnet, arch, 224)
    print(f"MACs count, ResNet-50 at 224: {1e6 * (time.perf_counter() - start) / len(archs):.1f} µs per architecture")


if __name__ == "__main__":
    main()
