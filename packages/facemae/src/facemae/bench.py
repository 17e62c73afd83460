"""What ``facemae-bench`` times: images/s of one FaceMAE training step (MAE + IRM through a frozen phi, AdamW) and
of reconstruction, each at several mask ratios. MAE's encoder sees only the visible patches (facebookresearch/mae
``random_masking``), so both get cheaper as the mask ratio rises; the decoder and phi still see every token."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import torch

from facemae.config import MAEConfig
from facemae.engine import build_mae, build_recognizer, facemae_loss
from facemae.models import IRESNET_CONFIGS, MAE_CONFIGS
from shared.device import AmpScaler, autocast
from shared.errors import UserError

RATIOS = (0.25, 0.5, 0.75, 0.9)


def _seconds_per_call(device: torch.device, steps: int, work: Callable[[], None]) -> float:
    """Median seconds of ``steps`` calls of ``work`` after two warm-up calls."""
    for _ in range(2):
        work()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def benchmark(
    device: torch.device,
    *,
    model: str = "mae_vit_base_patch16",
    network: str = "iresnet50",
    face_size: int = 112,
    batch_size: int = 128,
    steps: int = 10,
    ratios: Sequence[float] = RATIOS,
    amp: bool = False,
) -> dict:
    """Images/s of a training step and of reconstruction at each of ``ratios`` (random faces; defaults: the
    ``paper`` sizes)."""
    if model not in MAE_CONFIGS or network not in IRESNET_CONFIGS:
        raise UserError(f"unknown --model {model!r} or --network {network!r}")
    if batch_size < 4 or batch_size % 4 or steps < 1 or not all(0 < r < 1 for r in ratios):
        raise UserError("need --batch-size a multiple of 4, --steps >= 1 and mask ratios in (0, 1)")
    config = MAEConfig(model=model, face_size=face_size, identities_per_batch=batch_size // 4, amp=amp)
    mae = build_mae(config).to(device)
    phi = build_recognizer(network, face_size).to(device).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(mae.parameters(), lr=config.lr, betas=config.betas)
    scaler = AmpScaler(device, amp)
    faces = torch.rand(batch_size, 3, face_size, face_size, device=device) * 2 - 1

    def train_step(config: MAEConfig) -> None:
        mae.train()
        with autocast(device, amp):
            loss = facemae_loss(mae, phi, faces, config)[0]
        optimizer.zero_grad(set_to_none=True)
        scaler(loss, optimizer)

    def reconstruct(ratio: float) -> None:
        mae.eval()
        with torch.no_grad(), autocast(device, amp):
            mae.reconstruct(inputs, ratio)

    report = {"device": str(device), "model": model, "phi": network, "face_size": face_size, "batch": batch_size}
    report |= {"amp": amp, "threads": torch.get_num_threads()}
    inputs = torch.nn.functional.interpolate(faces, size=mae.patch_embed.img_size, mode="bicubic")
    for ratio in ratios:
        ratio_config = dataclasses.replace(config, mask_ratio=ratio)
        seconds = _seconds_per_call(device, steps, lambda c=ratio_config: train_step(c))
        report[f"train_images_per_s@{ratio:g}"] = batch_size / seconds
        report[f"reconstruct_images_per_s@{ratio:g}"] = batch_size / _seconds_per_call(
            device, steps, lambda r=ratio: reconstruct(r)
        )
    return report


def format_result(report: dict) -> str:
    """The report as a few lines of text."""
    head = (
        f"{report['model']} + {report['phi']} at {report['face_size']} px, batch {report['batch']}, "
        f"{report['device']}{' AMP' if report['amp'] else ''}, {report['threads']} thread(s)"
    )
    lines = [head, "  mask ratio | training step (IRM) | reconstruction   [images/s]"]
    for key, value in report.items():
        if key.startswith("train_images_per_s@"):
            ratio = key.split("@")[1]
            lines.append(f"  {ratio:>10} | {value:19.1f} | {report[f'reconstruct_images_per_s@{ratio}']:.1f}")
    return "\n".join(lines)
