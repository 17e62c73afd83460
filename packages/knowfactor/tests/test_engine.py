"""The configuration and ``fit`` through the Python API: presets, refused values, the AMP scaler in the checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from knowfactor import engine
from knowfactor.config import build_config, teacher_config
from knowfactor.engine import fit, load_network
from knowfactor.losses import label_smooth_ce
from shared.checkpoint import latest, load_checkpoint
from shared.device import AmpScaler
from shared.errors import UserError
from shared.logging import read_metrics

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


def test_kd_baseline_is_the_release_s_unless_matched(sprites, tmp_path, monkeypatch):
    """KD: plain cross-entropy and no gradient clipping as the release; ``matched``: label smoothing 0.1 and clip 35."""
    teacher = tmp_path / "teacher"
    fit(build_config("demo", method="teacher", data=sprites, tasks=TASKS, epochs=1), teacher, CPU, quiet=True)
    clips, original = [], engine.train_epoch

    def record_clip(*args, **kwargs):
        clips.append(kwargs["clip"])
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "train_epoch", record_clip)
    common = {"data": sprites, "tasks": TASKS, "epochs": 1, "teacher": teacher / "teacher.pt"}
    for variant, smoothing in (("release", 0.0), ("matched", 0.1)):
        config = build_config("demo", method="kd", kd_variant=None if variant == "release" else variant, **common)
        assert config.kd_variant == variant and config.kd_label_smoothing == smoothing
        model = engine.build_training_model(config, engine.load_data(config.config, sprites, TASKS), CPU, tmp_path)
        x, y = torch.randn(4, 1, 32, 32), torch.tensor([[0, 1], [1, 2], [2, 3], [0, 5]])
        logits = model.student(x)
        expected = sum(label_smooth_ce(s, y[:, i], smoothing) for i, s in enumerate(logits))
        assert torch.allclose(model(x, y)["loss_cls"], expected)
        fit(config, tmp_path / variant, CPU, quiet=True)
    plain = label_smooth_ce(logits[0], y[:, 0], 0.0)
    assert torch.allclose(plain, torch.nn.functional.cross_entropy(logits[0], y[:, 0]))
    assert clips == [None, 35.0]
    assert build_config("demo", method="kf", **common).grad_clip == 35.0


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
        ("demo", {"config": "cifar10_wrn28_2_to_r18"}, "needs --teacher"),
        ("demo", {"method": "kd", "kd_variant": "smoothed"}, "--kd-variant"),
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


def test_the_disentanglement_presets_follow_the_release_configs():
    dsprites = build_config("dsprites_official", teacher="t.pt")
    assert (dsprites.config, dsprites.epochs, dsprites.batch_size, dsprites.lr) == ("dsprites_simplecnn", 20, 128, 1e-4)
    assert dsprites.setting.recipe.optimizer == "adam" and dsprites.grad_clip is None
    assert dsprites.setting.recipe.milestones == (10, 15) and dsprites.setting.tsn == "simplegaussianconv64"
    shapes = build_config("shape3d_official", teacher="t.pt")
    assert (shapes.config, shapes.epochs, shapes.batch_size, shapes.setting.dataset) == (
        "shape3d_simplecnn",
        5,
        256,
        "shapes3d",
    )
    with pytest.raises(UserError, match="needs --teacher"):
        build_config("dsprites_official")


def test_the_shape3d_preset_trains_from_a_3dshapes_file(tmp_path):
    """shape3d_official reaches the 3dshapes reader: a teacher, then KF with six Gaussian TSNs, on a small .h5."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    n, i = 40, np.arange(40)
    classes = np.stack([i % 10, i * 3 % 10, i * 7 % 10, i % 8, i % 4, i % 15], axis=1)
    with h5py.File(tmp_path / "3dshapes.h5", "w") as f:
        f["images"] = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
        f["labels"] = classes * 0.1
    common = {"data": tmp_path / "3dshapes.h5", "epochs": 1, "batch_size": 8}
    teacher = fit(build_config("shape3d_official", method="teacher", **common), tmp_path / "t", CPU, quiet=True)
    assert list(teacher["tasks"]) == ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
    config = build_config("shape3d_official", teacher=tmp_path / "t" / "teacher.pt", **common)
    kf = fit(config, tmp_path / "kf", CPU, quiet=True)
    record = read_metrics(tmp_path / "kf" / "metrics.jsonl")[0]
    assert len(kf["tasks"]) == 6 and record["loss_infomin"] > 0 and math.isfinite(record["loss"])
    student, _ = load_network(tmp_path / "kf" / "kf.pt")
    assert len(student.TSN) == 6 and all(tsn.encoder.main[0].in_channels == 3 for tsn in student.TSN)
