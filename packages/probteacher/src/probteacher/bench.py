"""``probteacher-bench``: what an adaptation step of Probabilistic Teacher costs beside a plain Faster R-CNN step.

Three measurements, interleaved in one process so that both sides see the same machine state:

- **PT adaptation step**: the EMA update, the teacher on the weak target views, the student supervised on the
  source views (strong + weak) and unsupervised on the strong target views, backward and optimizer step
  (:func:`probteacher.engine.adaptation_losses`, the training loop's own code);
- **plain supervised step**: torchvision's ``FasterRCNN`` with the same backbone, anchors, RPN / ROI sizes, image
  size and the same source views, backward and step: the detector PT starts from;
- **evaluation**: the detector in inference mode (images/s).

Images per second count the source images of a step (each in two views), so ``overhead = plain images/s / PT
images/s`` is the cost of PT's teacher pass, target branch and probabilistic heads. Timings are medians over
``steps`` after ``warmup`` untimed steps. Images are the toy-fog set, resized to ``size``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from probteacher.backbones import box_head, build_backbone
from probteacher.config import build_config
from probteacher.data import InfiniteBatches
from probteacher.ema import ema_update
from probteacher.engine import (
    StudentStep,
    adaptation_losses,
    build_models,
    build_optimizer,
    load_split,
    resolve_data,
    source_views,
)
from probteacher.models import roi_pool
from shared.errors import UserError


def plain_faster_rcnn(student: torch.nn.Module) -> FasterRCNN:
    """torchvision's Faster R-CNN with the student's backbone type, anchors, RPN / ROI settings and image size."""
    cfg = student.config
    backbone = build_backbone(cfg.backbone)
    pooled = 7
    model = FasterRCNN(
        backbone,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        image_mean=list(student.transform.image_mean),
        image_std=list(student.transform.image_std),
        rpn_anchor_generator=AnchorGenerator(cfg.anchor_sizes, cfg.aspect_ratios),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_head=box_head(cfg.backbone, backbone.out_channels, pooled, cfg.box_head_dim),
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, cfg.num_classes + 1),
        box_batch_size_per_image=cfg.roi_batch_size_per_image,
    )
    model.roi_heads.box_roi_pool = roi_pool(cfg, pooled)  # FasterRCNN's type check admits MultiScaleRoIAlign only
    return model


def _resized(batch: tuple[list[torch.Tensor], list[dict[str, Any]]], size: int):
    images, targets = batch
    out_images, out_targets = [], []
    for image, target in zip(images, targets, strict=True):
        h, w = image.shape[-2:]
        if (h, w) != (size, size):
            image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
            scale = torch.tensor([size / w, size / h, size / w, size / h])
            target = {**target, "boxes": target["boxes"] * scale}
        out_images.append(image)
        out_targets.append(target)
    return out_images, out_targets


def run(
    device: torch.device,
    *,
    detector: str = "tiny",
    batch_size: int = 2,
    size: int = 128,
    steps: int = 10,
    warmup: int = 3,
) -> dict[str, Any]:
    """Median seconds of a PT adaptation step, a plain Faster R-CNN step and an inference batch; images/s."""
    if batch_size < 1 or steps < 1 or warmup < 0 or size < 32:
        raise UserError("--batch-size and --steps must be >= 1, --warmup >= 0 and --size >= 32")
    base = build_config("demo").detector_overrides if detector == "tiny" else {}
    config = build_config(
        "demo",
        detector=detector,
        batch_source=batch_size,
        batch_target=batch_size,
        detector_overrides={**base, "min_size": size, "max_size": size},
    )
    specs = resolve_data(config, quiet=True)
    names = config.class_names
    source = InfiniteBatches(load_split(specs["source"], names, "source"), batch_size, 0)
    target = InfiniteBatches(load_split(specs["target"], names, "target"), batch_size, 1)
    student, teacher = build_models(config, device)
    teacher.load_state_dict(student.state_dict())
    model = StudentStep(student)
    optimizer = build_optimizer(student, config)
    plain = plain_faster_rcnn(student).to(device).train()
    plain_optimizer = build_optimizer(plain, config)  # the same (fused) AdamW as PT's
    g = torch.Generator().manual_seed(0)

    def pt_step() -> None:
        images, labels = source_views(*_resized(next(source), size), g, device, paste_weak=False, paste_strong=True)
        target_images, target_records = _resized(next(target), size)
        ema_update(teacher, student, config.ema_keep_rate)
        _, total, _ = adaptation_losses(
            model, teacher, config, images, labels, target_images, target_records, g=g, device=device
        )
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    def plain_step() -> None:
        images, labels = source_views(*_resized(next(source), size), g, device, paste_weak=False, paste_strong=True)
        total = sum(plain(images, labels).values())
        plain_optimizer.zero_grad(set_to_none=True)
        total.backward()
        plain_optimizer.step()

    def inference() -> None:
        images, _ = _resized(next(target), size)
        with torch.no_grad():
            student([im.to(device) for im in images], mode="inference")

    timings: dict[str, list[float]] = {"pt": [], "plain": [], "inference": []}
    for step in range(warmup + steps):
        for name, fn in (("pt", pt_step), ("plain", plain_step), ("inference", inference)):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= warmup:
                timings[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in timings.items()}
    pt_rate, plain_rate = batch_size / median["pt"], batch_size / median["plain"]
    return {
        "detector": detector,
        "size": size,
        "batch_size": batch_size,
        "steps": steps,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seconds": {k: round(v, 4) for k, v in median.items()},
        "pt_images_per_s": round(pt_rate, 2),
        "plain_images_per_s": round(plain_rate, 2),
        "pt_overhead": round(plain_rate / pt_rate, 2),
        "inference_images_per_s": round(batch_size / median["inference"], 2),
        "parameters": sum(p.numel() for p in student.parameters()),
    }
