import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared import distributed
from shared.checkpoint import load_checkpoint
from shared.errors import UserError
from shared.logging import read_metrics

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(cmd: list[str], out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run([*cmd, str(WORKER), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    single = tmp_path_factory.mktemp("single")
    ddp = tmp_path_factory.mktemp("ddp")
    _run([sys.executable], single)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], ddp)
    return single, ddp


def test_two_process_gloo_equals_single_process_over_same_global_batch(runs):
    single, ddp = runs
    one = load_checkpoint(single / "final.pt")
    two = load_checkpoint(ddp / "final.pt")
    assert one["world"] == 1 and two["world"] == 2
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, atol=1e-5, rtol=0)
    # the all-reduced loss of each step equals the single process's loss over the same batch
    losses_one = [r["loss"] for r in read_metrics(single / "metrics.jsonl")]
    losses_two = [r["loss"] for r in read_metrics(ddp / "metrics.jsonl")]
    assert len(losses_one) == 8
    assert losses_two == pytest.approx(losses_one, abs=1e-5)


def test_only_rank_zero_writes(runs):
    _, ddp = runs
    records = read_metrics(ddp / "metrics.jsonl")
    assert [r["rank"] for r in records] == [0] * 8
    assert [r["step"] for r in records] == list(range(1, 9))
    assert load_checkpoint(ddp / "final.pt")["rank"] == 0
    assert sorted(p.name for p in ddp.iterdir()) == ["final.pt", "metrics.jsonl"]


def test_single_process_helpers_without_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.init_distributed() is False
    assert (distributed.get_rank(), distributed.get_world_size(), distributed.is_main_process()) == (0, 1, True)
    value = torch.tensor([1.0, 3.0])
    reduced = distributed.all_reduce_mean(value)
    assert torch.equal(reduced, value) and reduced is not value
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, torch.device("cpu")) is model
    assert distributed.unwrap_model(model) is model


def test_world_size_without_rendezvous_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(UserError, match="launch with torchrun"):
        distributed.init_distributed()
