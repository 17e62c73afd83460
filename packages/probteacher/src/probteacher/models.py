"""The probabilistic Faster R-CNN of Probabilistic Teacher (Chen et al., ICML 2022) on torchvision.

``build_detector(DetectorConfig(...))`` composes torchvision's ``GeneralizedRCNNTransform`` (ImageNet or Caffe
normalisation), a backbone, the Gaussian RPN with learnable anchors and the probabilistic ROI heads.
``SIZES`` holds the per-backbone defaults (a timm-style table): ``vgg16`` is the official configuration
(anchors 128/256/512 x 0.5/1/2 on stride 16, RPN top-k 12000/2000 train and 6000/1000 test, 2 x 1024 box
head, min side 600 / max 1333, Caffe BGR inputs); ``tiny`` the CPU toy detector; ``resnet50-fpn`` an
extension on torchvision's FPN backbone. Fields of ``DetectorConfig`` left ``None`` come from ``SIZES``.
ROI features use torchvision's ``MultiScaleRoIAlign`` (``aligned=False``; detectron2's ROIAlignV2 samples half
a pixel differently); the tiny CPU detector the same samples as two small matrix products
(:class:`probteacher.roi_align.SeparableRoIAlign`, one sample per bin), whose backward is matrix products too.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import MultiScaleRoIAlign

from probteacher.anchors import LearnableAnchorGenerator
from probteacher.backbones import box_head, build_backbone
from probteacher.roi_align import SeparableRoIAlign
from probteacher.roi_heads import GaussianFastRCNNPredictor, ProbabilisticRoIHeads
from probteacher.rpn import MODES, GaussianRPNHead, ProbabilisticRPN
from shared.errors import UserError

__all__ = ["SIZES", "DetectorConfig", "DetectorTransform", "ProbabilisticFasterRCNN", "build_detector"]

#: Caffe (official VGG weights) pixel mean, BGR, on 0-255 inputs; std 1.
CAFFE_MEAN = (103.530, 116.280, 123.675)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: Per-backbone defaults for the ``None`` fields of :class:`DetectorConfig`.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "min_size": 128,
        "max_size": 128,
        "normalisation": "imagenet",
        "anchor_sizes": ((16, 32, 64),),
        "aspect_ratios": ((0.5, 1.0, 2.0),),
        "rpn_pre_nms_top_n_train": 1000,
        "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 600,
        "rpn_post_nms_top_n_test": 100,
        "box_head_dim": 256,
        "roi_sampling_ratio": 1,
        "roi_align": "separable",
    },
    "vgg16": {
        "min_size": 600,
        "max_size": 1333,
        "normalisation": "caffe",
        "anchor_sizes": ((128, 256, 512),),
        "aspect_ratios": ((0.5, 1.0, 2.0),),
        "rpn_pre_nms_top_n_train": 12000,
        "rpn_post_nms_top_n_train": 2000,
        "rpn_pre_nms_top_n_test": 6000,
        "rpn_post_nms_top_n_test": 1000,
        "box_head_dim": 1024,
        "roi_sampling_ratio": 0,
        "roi_align": "torchvision",
    },
    "resnet50-fpn": {
        "min_size": 600,
        "max_size": 1333,
        "normalisation": "imagenet",
        "anchor_sizes": ((32,), (64,), (128,), (256,), (512,)),
        "aspect_ratios": ((0.5, 1.0, 2.0),) * 5,
        "rpn_pre_nms_top_n_train": 2000,
        "rpn_post_nms_top_n_train": 2000,
        "rpn_pre_nms_top_n_test": 1000,
        "rpn_post_nms_top_n_test": 1000,
        "box_head_dim": 1024,
        "roi_sampling_ratio": 2,
        "roi_align": "torchvision",
    },
}
_ROI_FEATURES = {"tiny": ["0"], "vgg16": ["0"], "resnet50-fpn": ["0", "1", "2", "3"]}
_CHOICES = {
    "normalisation": ("imagenet", "caffe"),
    "model_type": ("gaussian", "laplace"),
    "rpn_bg_prob": ("correct", "official"),
    "rpn_sigma_rescore": ("correct", "official", "off"),
    "teacher_var_space": ("official", "rescaled"),
    "roi_align": ("torchvision", "separable"),
}


@dataclass
class DetectorConfig:
    """Everything that defines the detector. ``None`` fields take the ``SIZES[backbone]`` value.

    Defaults are the official ones: RPN 256 anchors / image with 25 % positives, IoU (0.3, 0.7), NMS 0.7;
    ROI 512 proposals / image with 25 % positives, IoU 0.5, score threshold 0.05, NMS 0.5, 100 detections;
    tau = (0.5, 0.5) (the official train.sh), EFL lambda = (0.5, 0.5), NLL floor 0.3. The ``compat`` flags
    choose between the official code's behaviour and the corrected one (see :class:`ProbabilisticRPN`).
    ``weights``: a local backbone state_dict (never downloaded); ``freeze_blocks``: ``None`` = the backbone's
    default (2 for VGG-16 as the official FREEZE_AT 2).
    """

    backbone: str = "vgg16"
    num_classes: int = 8
    min_size: int | None = None
    max_size: int | None = None
    normalisation: str | None = None
    anchor_sizes: tuple[tuple[float, ...], ...] | None = None
    aspect_ratios: tuple[tuple[float, ...], ...] | None = None
    learnable_anchors: bool = True
    rpn_pre_nms_top_n_train: int | None = None
    rpn_post_nms_top_n_train: int | None = None
    rpn_pre_nms_top_n_test: int | None = None
    rpn_post_nms_top_n_test: int | None = None
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.25
    rpn_bg_iou_thresh: float = 0.3
    rpn_fg_iou_thresh: float = 0.7
    rpn_nms_thresh: float = 0.7
    roi_batch_size_per_image: int = 512
    roi_positive_fraction: float = 0.25
    roi_iou_thresh: float = 0.5
    roi_sampling_ratio: int | None = None
    roi_align: str | None = None  # "torchvision", or "separable": its samples, a fast CPU backward (one map, ratio 1)
    box_head_dim: int | None = None
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    tau_cls: float = 0.5
    tau_loc: float = 0.5
    efl: bool = True
    efl_lambda_cls: float = 0.5
    efl_lambda_loc: float = 0.5
    model_type: str = "gaussian"
    nll_floor: float = 0.3
    rpn_bg_prob: str = "correct"
    rpn_sigma_rescore: str = "correct"
    teacher_var_space: str = "official"
    weights: str | None = None
    freeze_blocks: int | None = None

    def resolved(self) -> DetectorConfig:
        """A copy with the ``None`` size fields filled from ``SIZES`` and every choice validated."""
        if self.backbone not in SIZES:
            raise UserError(f"unknown backbone {self.backbone!r}: choose one of {', '.join(SIZES)}")
        if self.num_classes < 1:
            raise UserError(f"num_classes must be >= 1 (foreground classes), got {self.num_classes}")
        filled = {k: v for k, v in SIZES[self.backbone].items() if getattr(self, k) is None}
        cfg = dataclasses.replace(self, **filled)
        for name, choices in _CHOICES.items():
            if getattr(cfg, name) not in choices:
                raise UserError(f"{name} must be one of {', '.join(choices)}; got {getattr(cfg, name)!r}")
        cfg.anchor_sizes = tuple(tuple(s) for s in cfg.anchor_sizes)
        cfg.aspect_ratios = tuple(tuple(r) for r in cfg.aspect_ratios)
        if cfg.weights is not None:
            cfg.weights = str(cfg.weights)
        return cfg


class DetectorTransform(GeneralizedRCNNTransform):
    """torchvision's resize + pad transform with ImageNet or Caffe normalisation of [0, 1] RGB inputs.

    ``"caffe"`` (the official VGG weights): RGB -> BGR, x 255, minus (103.53, 116.28, 123.675), std 1.
    """

    def __init__(self, min_size: int, max_size: int, normalisation: str) -> None:
        caffe = normalisation == "caffe"
        super().__init__(
            min_size,
            max_size,
            list(CAFFE_MEAN) if caffe else list(IMAGENET_MEAN),
            [1.0, 1.0, 1.0] if caffe else list(IMAGENET_STD),
        )
        self.normalisation = normalisation

    def normalize(self, image: Tensor) -> Tensor:
        if not image.is_floating_point():
            raise UserError(f"images must be float tensors in [0, 1], got {image.dtype}")
        if self.normalisation == "caffe":
            image = image.flip(0) * 255.0
        return super().normalize(image)


class ProbabilisticFasterRCNN(GeneralizedRCNN):
    """Faster R-CNN with Gaussian RPN / ROI box outputs and learnable anchors, driven by a ``mode``.

    ``forward(images, targets=None, mode="inference")`` with images a list of (3, H, W) float RGB tensors in
    [0, 1] (sizes may differ):

    - ``"supervised"``: ground-truth targets {"boxes", "labels"}; returns {"loss_rpn_cls", "loss_rpn_loc",
      "loss_cls", "loss_box_reg"}; anchors get no gradient.
    - ``"unsupervised"``: pseudo-label targets {"boxes", "labels", "soft_logits", "sigma_raw"}; the same 4 keys
      (soft targets, KL, EFL); anchors get gradient (through the RPN localisation KL) when learnable.
    - ``"teacher"`` / ``"inference"``: per image {"boxes", "scores" (rescored by localisation certainty),
      "labels", "logits" (n, K+1), "sigma_raw" (n, 4)} in the input images' coordinates, computed without
      gradient. ``"teacher"`` uses the training proposal counts (the official teacher runs in train mode),
      ``"inference"`` the test ones.

    The behaviour depends on ``mode`` only, not on ``train()`` / ``eval()``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        rpn: ProbabilisticRPN,
        roi_heads: ProbabilisticRoIHeads,
        transform: DetectorTransform,
        config: DetectorConfig,
    ) -> None:
        super().__init__(backbone, rpn, roi_heads, transform)
        self.config = config

    @property
    def anchor_generator(self) -> LearnableAnchorGenerator:
        return self.rpn.anchor_generator

    def anchor_parameters(self) -> list[nn.Parameter]:
        """The anchor (w, h) parameters (to give them their own weight decay in the optimizer)."""
        return list(self.anchor_generator.anchor_wh)

    def forward(  # type: ignore[override]
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None, mode: str = "inference"
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if mode not in MODES:
            raise UserError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        training = mode in ("supervised", "unsupervised")
        if training:
            if targets is None or len(targets) != len(images):
                raise UserError(f"mode {mode!r} needs one target dict per image")
        else:
            targets = None
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        with torch.set_grad_enabled(training and torch.is_grad_enabled()):
            image_list, targets = self.transform(list(images), targets)
            if targets is not None:
                for target in targets:
                    boxes = target["boxes"]
                    if boxes.dim() != 2 or boxes.shape[-1] != 4 or bool((boxes[:, 2:] <= boxes[:, :2]).any()):
                        raise UserError("target boxes must be (n, 4) xyxy with x2 > x1 and y2 > y1")
            features = self.backbone(image_list.tensors)
            if isinstance(features, Tensor):
                features = OrderedDict([("0", features)])
            with self.anchor_generator.gradient(mode == "unsupervised"):
                proposals, rpn_losses = self.rpn(image_list, features, targets, mode=mode)
            detections, roi_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets, mode=mode)
        if training:
            return {**rpn_losses, **roi_losses}
        for det, size, original in zip(detections, image_list.image_sizes, original_sizes, strict=True):
            det["boxes"] = resize_boxes(det["boxes"], list(size), list(original))
        return detections


def roi_pool(cfg: DetectorConfig, pooled: int) -> nn.Module:
    """torchvision's ``MultiScaleRoIAlign``, or :class:`SeparableRoIAlign` (one feature map, one sample per bin)."""
    names = _ROI_FEATURES[cfg.backbone]
    if cfg.roi_align == "separable":
        if len(names) != 1 or cfg.roi_sampling_ratio != 1:
            raise UserError("roi_align separable needs a single-map backbone and roi_sampling_ratio 1")
        return SeparableRoIAlign(names[0], pooled)
    return MultiScaleRoIAlign(names, pooled, cfg.roi_sampling_ratio)


def build_detector(config: DetectorConfig) -> ProbabilisticFasterRCNN:
    """Build the detector described by ``config`` (``None`` fields from ``SIZES[config.backbone]``)."""
    cfg = config.resolved()
    backbone = build_backbone(
        cfg.backbone, weights=Path(cfg.weights) if cfg.weights else None, freeze_blocks=cfg.freeze_blocks
    )
    anchors = LearnableAnchorGenerator(cfg.anchor_sizes, cfg.aspect_ratios, learnable=cfg.learnable_anchors)
    num_anchors = anchors.num_anchors_per_location()
    if len(set(num_anchors)) != 1:
        raise UserError(f"every feature level needs the same number of anchors (one shared head), got {num_anchors}")
    shared = {
        "tau_cls": cfg.tau_cls,
        "tau_loc": cfg.tau_loc,
        "efl": cfg.efl,
        "efl_lambda_cls": cfg.efl_lambda_cls,
        "efl_lambda_loc": cfg.efl_lambda_loc,
        "model_type": cfg.model_type,
        "nll_floor": cfg.nll_floor,
    }
    roi_weights = (10.0, 10.0, 5.0, 5.0)
    rpn = ProbabilisticRPN(
        anchors,
        GaussianRPNHead(backbone.out_channels, num_anchors[0]),
        cfg.rpn_fg_iou_thresh,
        cfg.rpn_bg_iou_thresh,
        cfg.rpn_batch_size_per_image,
        cfg.rpn_positive_fraction,
        {"training": cfg.rpn_pre_nms_top_n_train, "testing": cfg.rpn_pre_nms_top_n_test},
        {"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test},
        cfg.rpn_nms_thresh,
        rpn_bg_prob=cfg.rpn_bg_prob,
        rpn_sigma_rescore=cfg.rpn_sigma_rescore,
        teacher_var_space=cfg.teacher_var_space,
        roi_box_weights=roi_weights,
        **shared,
    )
    pooled = 7
    roi_heads = ProbabilisticRoIHeads(
        roi_pool(cfg, pooled),
        box_head(cfg.backbone, backbone.out_channels, pooled, cfg.box_head_dim),
        GaussianFastRCNNPredictor(cfg.box_head_dim, cfg.num_classes + 1),
        cfg.roi_iou_thresh,
        cfg.roi_iou_thresh,
        cfg.roi_batch_size_per_image,
        cfg.roi_positive_fraction,
        roi_weights,
        cfg.score_thresh,
        cfg.nms_thresh,
        cfg.detections_per_img,
        **shared,
    )
    transform = DetectorTransform(cfg.min_size, cfg.max_size, cfg.normalisation)
    return ProbabilisticFasterRCNN(backbone, rpn, roi_heads, transform, cfg)
