"""``lcbooster-bench``: the cost of one DivideMix epoch on CIFAR-10-sized input (PreAct ResNet-18).

One co-divide epoch = per-sample loss of all N images by both nets (eval), two GMM fits, then two
training passes of |L| / 64 iterations (each: 3 no-grad forwards and a forward/backward of 4 x 64 mixed
images in DivideMix's views). The benchmark times the GMM on N losses, the evaluation throughput and
the training throughput on random CIFAR-sized images (what is measured does not depend on the pixel
values), and extrapolates one epoch; ``--full`` runs a whole epoch instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from lcbooster.config import build_config
from lcbooster.data import CIFAR10_MEAN, CIFAR10_STD
from lcbooster.engine import CoTrainer, TrainData
from lcbooster.models import build_model
from lcbooster.selection import gmm_clean_probability
from lcbooster.transforms import Views
from shared import cli
from shared.device import resolve_device, seed_everything
from shared.errors import UserError
from shared.report import markdown_table


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench(argv: Sequence[str] | None = None) -> dict:
    parser = cli.ArgumentParser(
        prog="lcbooster-bench",
        description="Time one DivideMix (or LC-Booster) co-divide epoch on CIFAR-10-sized input with PreAct "
        "ResNet-18: GMM fit, evaluation and training throughput, and the extrapolated epoch time (--full: "
        "run the whole epoch).",
    )
    parser.add_argument("--method", choices=("dividemix", "lcbooster"), default="dividemix", help="method")
    parser.add_argument("--samples", type=int, default=50_000, help="training-set size N")
    parser.add_argument("--labeled-fraction", type=float, default=0.5, help="|L| / N of the division (extrapolation)")
    parser.add_argument("--eval-samples", type=int, default=2048, help="images timed in the evaluation pass")
    parser.add_argument("--iterations", type=int, default=8, help="co-training iterations timed")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    parser.add_argument("--amp", action="store_true", help="mixed precision")
    parser.add_argument("--full", action="store_true", help="run one whole co-divide epoch instead of sampling")
    args = parser.parse_args(argv)
    if args.samples < 128 or not 0 < args.labeled_fraction <= 1 or args.iterations < 1 or args.eval_samples < 1:
        raise UserError("--samples >= 128, --labeled-fraction in (0, 1], --iterations and --eval-samples >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    seed_everything(0)
    config = build_config("cifar10", "sym50", args.method, "paper")
    images = torch.randint(0, 256, (args.samples, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.samples,))
    strong = "rand" if args.method == "lcbooster" else "none"
    views = Views.for_cifar(CIFAR10_MEAN, CIFAR10_STD, strong=strong, pad_mode=config.pad_mode)
    data = TrainData(images, labels, images[:256], labels[:256], 10, views)
    nets = [build_model("preact_resnet18", 10, 3) for _ in range(2)]
    trainer = CoTrainer(config, nets, data, device, seed=0, amp=args.amp, eval_batch_size=256, progress=False)
    epoch = config.warmup_epochs + 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result: dict = {"device": str(device), "threads": torch.get_num_threads(), "method": args.method}
    result["gmm_seconds"] = min(_timed(lambda: gmm_clean_probability(torch.rand(args.samples))) for _ in range(3))
    if args.full:
        sync()
        seconds = _timed(lambda: (trainer.run_epoch(epoch), sync()))
        result |= {"epoch_seconds": seconds, "samples_per_second": args.samples / seconds}
    else:
        subset = torch.arange(min(args.eval_samples, args.samples))
        trainer._logits(trainer.cores[0], trainer.data.images, subset[:256])  # warm-up
        sync()
        eval_s = _timed(lambda: (trainer._logits(trainer.cores[0], trainer.data.images, subset), sync()))
        batch = config.batch_size
        labeled = torch.zeros(args.samples, dtype=torch.bool)
        labeled[torch.randperm(args.samples)[: batch * args.iterations]] = True
        probability = torch.rand(args.samples)
        warm = torch.zeros_like(labeled)
        warm[: batch * 2] = True
        trainer.train_epoch(0, epoch, warm, probability)
        sync()
        train_s = _timed(lambda: (trainer.train_epoch(0, epoch, labeled, probability), sync()))
        eval_rate = len(subset) / eval_s
        train_rate = batch * args.iterations / train_s
        labeled_count = args.labeled_fraction * args.samples
        epoch_s = 2 * args.samples / eval_rate + 2 * result["gmm_seconds"] + 2 * labeled_count / train_rate
        result |= {
            "eval_images_per_second": eval_rate,
            "train_labeled_samples_per_second": train_rate,
            "estimated_epoch_seconds": epoch_s,
            "estimated_samples_per_second": args.samples / epoch_s,
        }
    rows = [[key, f"{value:.3f}" if isinstance(value, float) else value] for key, value in result.items()]
    print(markdown_table(["quantity", "value"], rows))
    return result
