"""One optimizer step with AMP (``AmpScaler``): the plain step when unscaled, and an exact fp16 resume."""

import pytest
import torch
import torch.nn.functional as F

from shared.checkpoint import load_checkpoint, restore_training_state, save_checkpoint, training_state
from shared.device import AmpScaler, autocast, seed_everything

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
    ),
]
STEPS, SPLIT = 6, 3


def _setup(device):
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # growth every step: the loss scale changes during the run, so a resume that lost it would differ
    scaler = AmpScaler(device, dtype="fp16", init_scale=2.0**10, growth_interval=1)
    return model, optimizer, scaler


def _batch(step, device):
    gen = torch.Generator().manual_seed(step)
    return torch.randn(16, 8, generator=gen).to(device), torch.randint(0, 3, (16,), generator=gen).to(device)


def _train(model, optimizer, scaler, steps, device):
    for step in steps:
        x, y = _batch(step, device)
        with autocast(device, dtype="fp16"):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler(loss, optimizer, clip_grad=1.0, parameters=model.parameters())


@pytest.mark.parametrize("name", DEVICES)
def test_fp16_resume_with_the_scaler_equals_an_uninterrupted_run(tmp_path, name):
    device = torch.device(name)
    seed_everything(0)
    straight = _setup(device)
    _train(*straight, range(STEPS), device)

    seed_everything(0)
    model, optimizer, scaler = _setup(device)
    _train(model, optimizer, scaler, range(SPLIT), device)
    save_checkpoint(tmp_path / "ckpt.pt", training_state(model, optimizer, scaler=scaler, step=SPLIT))
    seed_everything(1)
    model, optimizer, scaler = _setup(device)
    fresh = scaler.state_dict()
    restore_training_state(load_checkpoint(tmp_path / "ckpt.pt", map_location=device), model, optimizer, scaler=scaler)
    _train(model, optimizer, scaler, range(SPLIT, STEPS), device)

    assert scaler.enabled
    assert scaler.state_dict() == straight[2].state_dict()
    assert scaler.state_dict()["scale"] != fresh["scale"]  # the scale moved: losing it would be seen
    for a, b in zip(straight[0].state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_unscaled_step_is_the_plain_step():
    """Without fp16 the scaler is the plain backward / clip / step, to the bit."""
    cpu = torch.device("cpu")
    runs = []
    for use_scaler in (True, False):
        seed_everything(0)
        model = torch.nn.Linear(8, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        scaler = AmpScaler(cpu)
        for step in range(3):
            x, y = _batch(step, cpu)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            if use_scaler:
                scaler(loss, optimizer, clip_grad=0.1)
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(model.parameters()), 0.1)
                optimizer.step()
        runs.append(model.state_dict())
        assert not scaler.enabled and scaler.state_dict() == {}
    for a, b in zip(runs[0].values(), runs[1].values(), strict=True):
        assert torch.equal(a, b)


def test_accumulated_backwards_then_one_step():
    cpu = torch.device("cpu")
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = AmpScaler(cpu)
    x = torch.ones(2, 4)
    optimizer.zero_grad()
    scaler.backward(model(x).sum())
    scaler.backward(model(x).sum())
    assert torch.equal(model.weight.grad, torch.full((1, 4), 4.0))
    before = model.weight.detach().clone()
    scaler.step(optimizer)
    assert torch.equal(model.weight, before - 4.0)


def test_a_state_saved_without_scaling_leaves_a_fresh_scale():
    cpu = torch.device("cpu")
    scaler = AmpScaler(cpu, dtype="fp16", init_scale=8.0)
    scaler.load_state_dict(AmpScaler(cpu).state_dict())  # e.g. a CPU fp32 run resumed with fp16
    assert scaler.state_dict()["scale"] == 8.0
    AmpScaler(cpu).load_state_dict(scaler.state_dict())  # and the other way round: nothing to restore
