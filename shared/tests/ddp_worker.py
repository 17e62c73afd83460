"""Train a tiny model for two epochs; run as one process or under torchrun (used by test_distributed).

Usage: python ddp_worker.py OUT   |   torchrun --nproc_per_node=2 ddp_worker.py OUT
The global batch is 16 whatever the number of processes.
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from shared import checkpoint, data, distributed
from shared.cli import main
from shared.device import seed_everything
from shared.logging import MetricsWriter

GLOBAL_BATCH = 16


@main
def run(argv=None):
    out = Path((argv or sys.argv[1:])[0])
    device = torch.device("cpu")
    distributed.init_distributed(device)
    world, rank = distributed.get_world_size(), distributed.get_rank()
    seed_everything(0)
    generator = torch.Generator().manual_seed(123)
    x = torch.randn(64, 8, generator=generator)
    y = torch.randn(64, 1, generator=generator)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model = distributed.wrap_model(model, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = data.make_loader(data.TensorBatchDataset(x, y), GLOBAL_BATCH // world, shuffle=True, seed=7)
    metrics = MetricsWriter(out / "metrics.jsonl")
    step = 0
    for epoch in range(2):
        data.set_epoch(loader, epoch)
        for xb, yb in loader:
            loss = F.mse_loss(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            metrics.write({"step": step, "rank": rank, "loss": distributed.all_reduce_mean(loss.detach())})
    state = {"model": distributed.unwrap_model(model).state_dict(), "rank": rank, "world": world}
    checkpoint.save_checkpoint(out / "final.pt", state)
    distributed.barrier()


if __name__ == "__main__":
    sys.exit(run())
