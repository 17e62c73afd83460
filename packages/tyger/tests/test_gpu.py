"""On a CUDA device: a whole active-learning run of every task type keeps the loop's invariants."""

import json

import pytest
import torch

from tyger.config import build_config
from tyger.engine import fit, prepare_data

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")
TINY = dict(init_size=8, budget=8, rounds=2, pretrain_epochs=1, finetune_epochs=1, task_epochs=3, patience=2)


@pytest.mark.parametrize("task", ["regression", "binary", "multilabel"])
def test_tyger_loop_runs_every_task_type_on_cuda(tmp_path, sample_csvs, task):
    config = build_config("demo", data=sample_csvs[task], split="random", selector="tyger", **TINY)
    results = fit(config, tmp_path / task, CUDA, quiet=True, data=prepare_data(config))
    assert [c["labelled"] for c in results["curve"]] == [8, 16, 24]
    picks = [json.loads(line)["pool_index"] for line in (tmp_path / task / "selected.jsonl").read_text().splitlines()]
    assert len(picks) == len(set(picks)) == 16 and all(c["test"] >= 0 for c in results["curve"])
