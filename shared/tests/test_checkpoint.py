import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shared import checkpoint
from shared.checkpoint import (
    latest,
    load_checkpoint,
    prune,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from shared.data import TensorBatchDataset, make_loader, set_epoch
from shared.device import seed_everything
from shared.errors import UserError

EPOCHS, SPLIT = 4, 2


def _setup():
    """A model with dropout (torch RNG), Adam, a scheduler and a shuffled loader."""
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    gen = torch.Generator().manual_seed(5)
    data = TensorBatchDataset(torch.randn(40, 6, generator=gen), torch.randint(0, 3, (40,), generator=gen))
    return model, optimizer, scheduler, make_loader(data, 8, shuffle=True, seed=3)


def _train(model, optimizer, scheduler, loader, epochs):
    for epoch in epochs:
        set_epoch(loader, epoch)
        for x, y in loader:
            # python and numpy RNG draws too, as augmentations do
            x = x * (1 + 0.1 * random.random()) + torch.from_numpy(np.random.randn(*x.shape).astype(np.float32)) * 0.01
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()


def _resumed_run(tmp_path, restore_rng=True):
    seed_everything(0)
    model, optimizer, scheduler, loader = _setup()
    _train(model, optimizer, scheduler, loader, range(SPLIT))
    path = checkpoint.checkpoint_path(tmp_path, SPLIT)
    save_checkpoint(path, training_state(model, optimizer, scheduler, epoch=SPLIT, best=0.5))
    seed_everything(999)  # a fresh process: other weights, other RNG state
    model, optimizer, scheduler, loader = _setup()
    state = load_checkpoint(latest(tmp_path))
    if not restore_rng:
        state["rng"] = checkpoint.rng_state()
    state = restore_training_state(state, model, optimizer, scheduler)
    assert state["epoch"] == SPLIT and state["extra"] == {"best": 0.5}
    _train(model, optimizer, scheduler, loader, range(state["epoch"], EPOCHS))
    return model


def _straight_run():
    seed_everything(0)
    model, optimizer, scheduler, loader = _setup()
    _train(model, optimizer, scheduler, loader, range(EPOCHS))
    return model


def test_resume_equals_uninterrupted_run_bitwise(tmp_path):
    straight, resumed = _straight_run(), _resumed_run(tmp_path)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resume_without_rng_state_would_differ(tmp_path):
    """Control: the test above is sensitive to the RNG state (dropout, python, numpy draws)."""
    straight, resumed = _straight_run(), _resumed_run(tmp_path, restore_rng=False)
    assert not all(
        torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True)
    )


def test_interrupted_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"w": torch.arange(5.0)})
    before = path.read_bytes()

    def crash_mid_write(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash_mid_write)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"w": torch.zeros(5)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(5.0))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_checkpoint_with_a_callable_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "the-callable-ran"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": _RunsCode(marker)}, path)
    with pytest.raises(UserError, match="refused for safety"):
        load_checkpoint(path)
    assert not marker.exists()
    # control: an unsafe load really would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"w": torch.randn(1000)})
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(UserError, match="corrupt or truncated") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(UserError, match=r"checkpoint not found: .*nothing\.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_mismatched_model_is_a_clear_error(tmp_path):
    state = training_state(torch.nn.Linear(3, 3))
    with pytest.raises(UserError, match="does not fit this model"):
        restore_training_state(state, torch.nn.Linear(4, 3))


def test_save_training_checkpoint_keeps_the_newest(tmp_path):
    for step in range(1, 5):
        checkpoint.save_training_checkpoint(tmp_path, step, {"step": step}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000003.pt", "checkpoint-00000004.pt"]
    assert load_checkpoint(latest(tmp_path))["step"] == 4


def test_latest_and_prune(tmp_path):
    assert latest(tmp_path) is None
    for step in (3, 12, 7):
        save_checkpoint(checkpoint.checkpoint_path(tmp_path, step), {"step": step})
    (tmp_path / "checkpoint-notes.pt").write_text("not a checkpoint name")
    assert latest(tmp_path).name == "checkpoint-00000012.pt"
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-0*.pt")) == [
        "checkpoint-00000007.pt",
        "checkpoint-00000012.pt",
    ]


def test_non_main_rank_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert save_checkpoint(tmp_path / "x.pt", {"a": 1}) is None
    assert not (tmp_path / "x.pt").exists()


def test_allowed_globals_admit_a_foreign_plain_class_only(tmp_path):
    import argparse

    path = tmp_path / "timm.pth.tar"
    torch.save({"state_dict": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UserError, match=r"pickled object \(argparse.Namespace\)"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, allowed_globals=[argparse.Namespace])
    assert loaded["args"].lr == 0.1 and torch.equal(loaded["state_dict"]["w"], torch.ones(1))


def test_unwrap_state_dict_finds_the_weights_and_strips_ddp_prefixes():
    weights = {"module.fc.weight": torch.ones(2, 3), "module.fc.bias": torch.zeros(2)}
    expected = {"fc.weight": weights["module.fc.weight"], "fc.bias": weights["module.fc.bias"]}
    assert checkpoint.unwrap_state_dict(weights) == expected
    assert checkpoint.unwrap_state_dict({"model": weights, "epoch": 3}) == expected
    assert checkpoint.unwrap_state_dict({"ema": weights, "model": {}}, ("ema", "model")) == expected
    for bad in ({"model": {"w": "text"}}, {}, [torch.ones(1)]):
        with pytest.raises(UserError, match=r"x\.pt holds no state_dict of tensors"):
            checkpoint.unwrap_state_dict(bad, source="x.pt")
