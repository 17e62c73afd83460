"""Train and validation accuracy of the repro's teacher under recipe variants (the measurements behind the README's
"Why the teacher is weak").

Every variant trains the teacher of a setting on the embedded dSprites-lite (tasks shape, scale, orientation, posX)
with the engine's optimiser, schedule and epoch loop, on the first 80% of the training split, and reports the
accuracy on those images (train) and on the last 20% of the training split (validation); the test split is never
read. Seed 0. From the repository root, one thread:

    OMP_NUM_THREADS=1 PYTHONPATH=packages/knowfactor/src:shared/src \\
        python packages/knowfactor/benchmarks/teacher_curves.py [VARIANT ...]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time

import torch

from knowfactor.config import get_config
from knowfactor.data import dsprites_embedded, load_multitask, select_tasks
from knowfactor.engine import build_optimizer, eval_loader, scheduled_lr, task_accuracy, train_epoch
from knowfactor.models import ClassifierModel, build_teacher
from shared.data import TensorBatchDataset, make_loader, set_epoch
from shared.device import AmpScaler, seed_everything

TASKS = ["shape", "scale", "orientation", "posX"]
CPU = torch.device("cpu")
RELEASE_WIDTHS = (32, 32, 64, 128, 256, 256)

#: name -> options of :func:`curve` (the setting ``dsprites_simplecnn_tiny`` with one change each, or another one).
VARIANTS: dict[str, dict] = {
    "simplecnn_tiny": {},
    "adam_1e-3": {"lr": 1e-3},
    "adam_1e-4": {"lr": 1e-4},
    "latent_64": {"backbone": {"latent": 64}},
    "release_widths": {"backbone": {"widths": RELEASE_WIDTHS}},
    "no_lr_decay": {"milestones": ()},
    "kaiming_init": {"kaiming": True},
    "100_epochs": {"epochs": 100},
    "3x_data": {"n": 12000},
    "dsprites_tiny_8ep": {"config": "dsprites_tiny", "epochs": 8},
    "dsprites_tiny_30ep": {"config": "dsprites_tiny", "epochs": 30},
}


def curve(
    config: str = "dsprites_simplecnn_tiny",
    *,
    epochs: int = 30,
    lr: float | None = None,
    milestones: tuple[int, ...] | None = None,
    backbone: dict | None = None,
    kaiming: bool = False,
    n: int = 4000,
    every: int = 10,
) -> list[dict]:
    """Per-task train and validation accuracy (%) every ``every`` epochs; ``n`` sprites in the dSprites-lite."""
    setting = get_config(config)
    if backbone:
        setting = dataclasses.replace(
            setting, backbone_kwargs={role: kw | backbone for role, kw in setting.backbone_kwargs.items()}
        )
    recipe = setting.recipe if milestones is None else dataclasses.replace(setting.recipe, milestones=milestones)
    data = load_multitask("dsprites", image_size=setting.image_size) if n == 4000 else dsprites_embedded(n=n)
    if setting.image_size and data.x_train.shape[-1] != setting.image_size:
        raise ValueError("resizing is only done for the default dSprites-lite")
    data = select_tasks(data, TASKS)
    n_val = 560  # the last 20% of the default 2,800 training images
    x_train, y_train = data.x_train[:-n_val], data.y_train[:-n_val]
    x_val, y_val = data.x_train[-n_val:], data.y_train[-n_val:]
    seed_everything(0)
    model = ClassifierModel(build_teacher(setting, data.task_classes), setting.label_smoothing)
    if kaiming:
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
    lr = recipe.lr if lr is None else lr
    optimizer = build_optimizer(model, lr, recipe)
    loader = make_loader(TensorBatchDataset(x_train, y_train), recipe.batch_size, shuffle=True, drop_last=True)
    scaled = [round(m * epochs / recipe.epochs) for m in recipe.milestones]
    history, started = [], time.monotonic()
    for epoch in range(epochs):
        set_epoch(loader, epoch)
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(epoch, lr, epochs, scaled, recipe.cosine)
        losses = train_epoch(model, loader, optimizer, AmpScaler(CPU, False), CPU, clip=recipe.clip)
        if (epoch + 1) % every == 0 or epoch + 1 == epochs:
            train = task_accuracy(model.classifier, eval_loader(x_train, y_train), CPU)
            val = task_accuracy(model.classifier, eval_loader(x_val, y_val), CPU)
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": round(losses["loss"], 3),
                    "train": [round(a, 1) for a in train],
                    "val": [round(a, 1) for a in val],
                    "seconds": round(time.monotonic() - started),
                    "train_images": len(x_train),
                }
            )
            print(json.dumps(history[-1]), flush=True)
    return history


def main(names: list[str]) -> None:
    logging.disable(logging.INFO)
    torch.set_num_threads(1)
    results = {}
    for name in names or list(VARIANTS):
        print(f"== {name}: {VARIANTS[name]}", flush=True)
        results[name] = curve(**VARIANTS[name])
    print("| variant | epochs | train shape / scale / orientation / posX | validation |")
    print("|---|---|---|---|")
    for name, history in results.items():
        last = history[-1]
        train, val = (" / ".join(f"{a:.1f}" for a in last[k]) for k in ("train", "val"))
        print(f"| {name} | {last['epoch']} | {train} | {val} |")


if __name__ == "__main__":
    main(sys.argv[1:])
