"""The configuration and ``fit`` through the Python API: presets, refused values, the AMP scaler in the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from knowfactor import engine
from knowfactor.config import build_config, teacher_config
from knowfactor.engine import fit, load_network
from shared.checkpoint import latest, load_checkpoint
from shared.device import AmpScaler
from shared.errors import UserError

CPU = torch.device("cpu")
TASKS = ("shape", "scale")


def test_presets_fill_the_setting_recipe_and_loss_weights():
    demo = build_config("demo")
    assert (demo.config, demo.epochs, demo.batch_size, demo.lr) == ("dsprites_tiny", 8, 64, 0.05)
    assert demo.train_teacher and demo.beta == 1e-3 and demo.temperature == 10.0
    paper = build_config("paper", teacher="t.pt")
    assert (paper.config, paper.epochs, paper.batch_size, paper.lr) == ("cifar10_wrn28_2_to_r18", 200, 128, 0.1)
    assert not paper.train_teacher and paper.teacher == Path("t.pt")
    assert build_config("small", teacher="t.pt").epochs == 30
    given = build_config("demo", epochs=3, beta=0.0, lr=None, tasks=["shape"])
    assert (given.epochs, given.beta, given.lr, given.tasks) == (3, 0.0, 0.05, ("shape",))
    imagenet = build_config("paper", config="imagenet_r18_to_mbv2", method="teacher")
    assert (imagenet.temperature, imagenet.lr, imagenet.batch_size) == (2.0, 0.05, 32)


def test_the_teacher_trained_first_uses_the_setting_recipe():
    config = build_config("demo", epochs=2, lr=0.5, beta=0.0, amp=True, tasks=TASKS, seed=4)
    teacher = teacher_config(config)
    assert (teacher.method, teacher.tasks, teacher.seed, teacher.config) == ("teacher", TASKS, 4, "dsprites_tiny")
    assert (teacher.epochs, teacher.lr, teacher.amp) == (8, 0.05, False)


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("tiny", {}, "unknown preset"),
        ("demo", {"config": "cifar100"}, "unknown config"),
        ("demo", {"method": "vae"}, "--method"),
        ("demo", {"epochs": 0}, "--epochs"),
        ("demo", {"batch_size": 0}, "--batch-size"),
        ("demo", {"lr": -1.0}, "--lr"),
        ("demo", {"temperature": 0.0}, "--temperature"),
        ("demo", {"beta": -1.0}, "--beta"),
        ("paper", {}, "needs --teacher"),
        ("small", {"method": "kd"}, "needs --teacher"),
    ],
)
def test_impossible_values_are_refused(preset, overrides, message):
    with pytest.raises(UserError, match=message):
        build_config(preset, **overrides)


def test_fit_saves_the_amp_scaler_and_resume_restores_it(sprites, tmp_path, monkeypatch):
    """fp16 loss scaling (forced on the CPU here): the scale's growth counter survives an interruption."""
    monkeypatch.setattr(engine, "AmpScaler", lambda device, enabled: AmpScaler(device, enabled, dtype="fp16"))
    config = build_config("demo", method="teacher", data=sprites, tasks=TASKS, epochs=2, amp=True)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    for out in (straight, interrupted):
        out.mkdir()
    fit(config, straight, CPU, quiet=True)
    original = engine.train_epoch

    def interrupt_in_epoch_2(*args, **kwargs):
        if kwargs["desc"].startswith("epoch 2"):
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "train_epoch", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, interrupted, CPU, quiet=True)
    assert load_checkpoint(latest(interrupted))["scaler"]["_growth_tracker"] == 3
    monkeypatch.setattr(engine, "train_epoch", original)
    fit(config, interrupted, CPU, resume=True, quiet=True)
    scalers = [load_checkpoint(latest(out))["scaler"] for out in (straight, interrupted)]
    assert scalers[0] == scalers[1] and scalers[0]["_growth_tracker"] == 6  # 2 epochs of 3 steps, none skipped
    results = [json.loads((out / "results.json").read_text())["tasks"] for out in (straight, interrupted)]
    assert results[0] == results[1]


def test_without_amp_the_checkpoint_holds_a_disabled_scaler(sprites, tmp_path):
    config = build_config("demo", method="teacher", data=sprites, tasks=TASKS, epochs=1)
    fit(config, tmp_path, CPU, quiet=True)
    assert load_checkpoint(latest(tmp_path))["scaler"] == {}
    teacher, saved = load_network(tmp_path / "teacher.pt")
    assert saved["task_names"] == list(TASKS) and not teacher.training
