"""Probabilistic ROI heads of the Probabilistic Teacher detector (Chen et al., ICML 2022).

Each proposal gets a categorical distribution over K+1 classes (column 0 = background, torchvision's
convention; the official detectron2 code puts background last) and, per class, a univariate Gaussian (or
Laplace) per box delta: 4 means and 4 raw variance outputs s with variance v = sigmoid(s).

Three uses, chosen by ``mode`` (not by ``self.training``: the official teacher stays in train mode):

- ``"supervised"``: torchvision's sampling (ground truth appended, 512 proposals per image, 25% positives,
  IoU 0.5), cross-entropy plus the Gaussian negative log-likelihood of the ground-truth class.
- ``"unsupervised"``: proposals matched to the teacher's pseudo boxes (IoU >= 0.5, no low-quality matches, no
  ground-truth appending, no sampling); soft cross-entropy towards the tempered teacher logits and KL from the
  tempered teacher Gaussian to the student's, both weighted by the Entropy Focal Loss.
- ``"teacher"`` / ``"inference"``: per-class decoded means, scores rescored by localisation certainty, class-wise
  NMS; every detection carries its proposal's logits and its class's raw variances (the pseudo-label payload).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

from probteacher import losses

__all__ = ["MODES", "GaussianFastRCNNPredictor", "ProbabilisticRoIHeads"]

MODES = ("supervised", "unsupervised", "teacher", "inference")


class GaussianFastRCNNPredictor(nn.Module):
    """``cls_score`` Linear(in, K+1) and ``bbox_pred`` Linear(in, (K+1)*8), initialised as the official code
    (weights N(0, 0.01^2) and N(0, 0.001^2), biases 0). The background slot of ``bbox_pred`` is never used.

    Returns ``(logits (R, K+1), box_params (R, K+1, 8))`` with ``box_params[..., :4]`` the mean deltas and
    ``box_params[..., 4:]`` the raw variances.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 8)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x).view(-1, self.num_classes, 8)


class ProbabilisticRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` (same constructor arguments) with the probabilistic losses and inference.

    Extra arguments: ``tau_cls``/``tau_loc`` (teacher temperatures, 0.5 as the official ``train.sh``), ``efl``
    with ``efl_lambda_cls``/``efl_lambda_loc`` (Entropy Focal Loss exponents), ``model_type`` ("gaussian" or
    "laplace") and ``nll_floor`` (0.3: the official likelihood normaliser uses v + 0.3).
    """

    def __init__(
        self,
        *args,
        tau_cls: float = 0.5,
        tau_loc: float = 0.5,
        efl: bool = True,
        efl_lambda_cls: float = 0.5,
        efl_lambda_loc: float = 0.5,
        model_type: str = "gaussian",
        nll_floor: float = 0.3,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if model_type not in ("gaussian", "laplace"):
            raise ValueError(f"model_type must be 'gaussian' or 'laplace', got {model_type!r}")
        self.tau_cls = tau_cls
        self.tau_loc = tau_loc
        self.efl = efl
        self.efl_lambda_cls = efl_lambda_cls
        self.efl_lambda_loc = efl_lambda_loc
        self.model_type = model_type
        self.nll_floor = nll_floor

    def _predict(
        self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and box parameters in float32 (losses and rescoring stay in full precision under autocast)."""
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        logits, box_params = self.box_predictor(box_features)
        return logits.float(), box_params.float()

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
        mode: str = "inference",
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Return ``(detections, losses)``: losses ``{"loss_cls", "loss_box_reg"}`` in the training modes (no
        detections), detections ``{"boxes", "scores", "labels", "logits", "sigma_raw"}`` per image otherwise."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "supervised":
            return [], self.supervised_loss(features, proposals, image_shapes, targets)
        if mode == "unsupervised":
            return [], self.unsupervised_loss(features, proposals, image_shapes, targets)
        logits, box_params = self._predict(features, proposals, image_shapes)
        return self.postprocess_detections(logits, box_params, proposals, image_shapes), {}

    def _nll(self, mu: torch.Tensor, s_raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nll = losses.laplace_nll if self.model_type == "laplace" else losses.gaussian_nll
        return nll(mu, s_raw, target, floor=self.nll_floor)

    def supervised_loss(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None,
    ) -> dict[str, torch.Tensor]:
        """Official source losses: mean cross-entropy over the sampled proposals, and the likelihood loss of the
        ground-truth class's deltas summed over foreground proposals and divided by the number sampled."""
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        logits, box_params = self._predict(features, proposals, image_shapes)
        labels = torch.cat(labels)
        regression_targets = torch.cat(regression_targets)
        loss_cls = F.cross_entropy(logits, labels)
        fg = torch.where(labels > 0)[0]
        params = box_params[fg, labels[fg]]
        nll = self._nll(params[:, :4], params[:, 4:], regression_targets[fg])
        return {"loss_cls": loss_cls, "loss_box_reg": nll.sum() / max(labels.numel(), 1)}

    def match_pseudo_labels(
        self, proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image, the proposals whose best IoU with a pseudo box is >= the foreground threshold (no
        low-quality matches, no ground-truth appending, no sampling) and the index of that box. An image
        without pseudo boxes keeps nothing (torchvision's ``Matcher`` would raise)."""
        kept, matched = [], []
        for props, target in zip(proposals, targets, strict=True):
            pseudo = target["boxes"].to(props.dtype)
            if pseudo.numel() == 0 or props.numel() == 0:
                kept.append(props.new_zeros((0, 4)))
                matched.append(torch.zeros(0, dtype=torch.int64, device=props.device))
                continue
            best_iou, best = box_ops.box_iou(pseudo, props).max(dim=0)
            keep = best_iou >= self.proposal_matcher.high_threshold
            kept.append(props[keep])
            matched.append(best[keep])
        return kept, matched

    def unsupervised_loss(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None,
    ) -> dict[str, torch.Tensor]:
        """Official target losses on the matched proposals.

        ``loss_cls`` = sum_i w_cls(j) * soft-CE(student_i, softmax(teacher_j / tau_cls)) / #matched;
        ``loss_box_reg`` = mean over (proposals whose teacher argmax is not background, 4 deltas) of
        w_loc * KL(N(mu_p, v_p) || N(mu_q, v_q)) with mu_p = encode(proposal -> pseudo box), v_p = tau_loc *
        sigmoid(sigma_raw) and (mu_q, v_q) the student's outputs for the teacher's argmax class. The EFL weights
        use the un-tempered teacher. No matches give zero losses that still reach the head's parameters.
        """
        if targets is None:
            raise ValueError("the unsupervised ROI loss needs pseudo-label targets")
        kept, matched = self.match_pseudo_labels(proposals, targets)
        logits, box_params = self._predict(features, kept, image_shapes)
        props = torch.cat(kept)
        teacher_logits = torch.cat([t["soft_logits"][m] for t, m in zip(targets, matched, strict=True)]).float()
        sigma_raw = torch.cat([t["sigma_raw"][m] for t, m in zip(targets, matched, strict=True)]).float()
        pseudo_boxes = torch.cat([t["boxes"][m] for t, m in zip(targets, matched, strict=True)]).to(props.dtype)

        w_cls = losses.categorical_efl_weight(teacher_logits, self.efl_lambda_cls if self.efl else 0.0)
        soft_ce = losses.soft_cross_entropy(logits, teacher_logits, self.tau_cls)
        loss_cls = (w_cls * soft_ce).sum() / max(logits.shape[0], 1)

        cls_star = teacher_logits.argmax(dim=1)
        fg = torch.where(cls_star > 0)[0]
        params = box_params[fg, cls_star[fg]]
        mu_p = self.box_coder.encode_single(pseudo_boxes[fg], props[fg])
        v_teacher = torch.sigmoid(sigma_raw[fg])
        if self.model_type == "laplace":
            kl = losses.laplace_kl(mu_p, self.tau_loc * v_teacher, params[:, :4], torch.sigmoid(params[:, 4:]))
            w_loc = losses.laplace_efl_weight(v_teacher, self.efl_lambda_loc if self.efl else 0.0)
        else:
            kl = losses.gaussian_kl(mu_p, self.tau_loc * v_teacher, params[:, :4], torch.sigmoid(params[:, 4:]))
            w_loc = losses.gaussian_efl_weight(v_teacher, self.efl_lambda_loc if self.efl else 0.0)
        loss_box_reg = (w_loc * kl).sum() / max(kl.numel(), 1)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg}

    def postprocess_detections(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """Official inference (the teacher's pseudo-labelling uses the same routine): per-class decoded means;
        candidates with softmax p_c > ``score_thresh`` (background dropped); score = p_c * (1 - mean_d
        sigmoid(s_c,d)); class-wise NMS on the rescored score; the top ``detections_per_img``. Each detection
        keeps its proposal's K+1 logits and its class's 4 raw variances."""
        num_classes = class_logits.shape[-1]
        boxes_per_image = [p.shape[0] for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression[..., :4].flatten(1), proposals)
        probs = F.softmax(class_logits, dim=-1)
        rescored = probs * (1.0 - torch.sigmoid(box_regression[..., 4:]).mean(dim=-1))
        results = []
        for boxes, p, scores, logits, params, shape in zip(
            pred_boxes.split(boxes_per_image),
            probs.split(boxes_per_image),
            rescored.split(boxes_per_image),
            class_logits.split(boxes_per_image),
            box_regression.split(boxes_per_image),
            image_shapes,
            strict=True,
        ):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)[:, 1:].reshape(-1, 4)
            flat = torch.arange(boxes.shape[0], device=boxes.device)
            prop_idx = flat // (num_classes - 1)
            labels = flat % (num_classes - 1) + 1
            keep = torch.where(p[:, 1:].reshape(-1) > self.score_thresh)[0]
            keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
            scores = scores[:, 1:].reshape(-1)
            keep = keep[box_ops.batched_nms(boxes[keep], scores[keep], labels[keep], self.nms_thresh)]
            keep = keep[: self.detections_per_img]
            results.append(
                {
                    "boxes": boxes[keep],
                    "scores": scores[keep],
                    "labels": labels[keep],
                    "logits": logits[prop_idx[keep]],
                    "sigma_raw": params[prop_idx[keep], labels[keep], 4:],
                }
            )
        return results
