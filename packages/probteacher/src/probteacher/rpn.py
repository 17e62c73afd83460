"""The Gaussian region proposal network of Probabilistic Teacher (Chen et al., ICML 2022).

Every anchor gets one objectness logit o (a Bernoulli) and 8 box numbers [mu_dx, mu_dy, mu_dw, mu_dh,
s_dx, s_dy, s_dw, s_dh]: each delta is a Gaussian N(mu, v) with variance v = sigmoid(s) (encoding weights
1, 1, 1, 1). Losses follow the official code:

- supervised: sum-BCE over the 256 sampled anchors per image (25 % positives) and the Gaussian NLL (floor 0.3)
  of the positives, both divided by 256 * N;
- unsupervised: anchors matched to the teacher's pseudo boxes (IoU >= 0.7 or best anchor per box), positives
  only, no sampling; a soft 2-way (bg, fg) cross-entropy towards the tempered teacher distribution and a KL
  from the teacher Gaussian to the student's for anchors whose teacher argmax is not background, both
  weighted by the Entropy Focal Loss and divided by 256 * N. The KL target mu_p = encode(anchor -> pseudo box)
  is where learnable anchors get their gradient.

Background is column 0 of the teacher logits (torchvision convention; the official code puts it last).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, permute_and_flatten
from torchvision.ops import boxes as box_ops

from probteacher import losses
from probteacher.anchors import LearnableAnchorGenerator
from shared.errors import UserError

__all__ = ["MODES", "GaussianRPNHead", "ProbabilisticRPN"]

#: Detector modes: losses for ground truth, losses for pseudo labels, pseudo-label inference, test inference.
MODES = ("supervised", "unsupervised", "teacher", "inference")

_EPS = 1e-9


class GaussianRPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs to A objectness logits and A*8 Gaussian box outputs per location.

    All convs are initialised N(0, 0.01^2) with zero bias (the official RPN head).
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 8, kernel_size=1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, boxes = [], []
        for feature in features:
            t = F.relu(self.conv(feature))
            logits.append(self.cls_logits(t))
            boxes.append(self.bbox_pred(t))
        return logits, boxes


def flatten_predictions(logits: list[Tensor], box_params: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-level head outputs -> objectness (N, M) and box parameters (N, M, 8), M = sum_l H_l W_l A_l.

    The anchor order matches :class:`~probteacher.anchors.LearnableAnchorGenerator` (location-major).
    """
    flat_logits, flat_boxes = [], []
    for lg, bx in zip(logits, box_params, strict=True):
        n, a, h, w = lg.shape
        flat_logits.append(permute_and_flatten(lg, n, a, 1, h, w).reshape(n, -1))
        flat_boxes.append(permute_and_flatten(bx, n, a, 8, h, w))
    return torch.cat(flat_logits, dim=1), torch.cat(flat_boxes, dim=1)


class ProbabilisticRPN(RegionProposalNetwork):
    """torchvision ``RegionProposalNetwork`` with Gaussian box outputs and the PT losses.

    Takes torchvision's arguments plus the PT ones:

    - ``tau_cls``, ``tau_loc``: teacher temperatures (class distribution, variance);
    - ``efl``, ``efl_lambda_cls``, ``efl_lambda_loc``: the Entropy Focal Loss and its exponents;
    - ``model_type``: ``"gaussian"`` or ``"laplace"`` (scale b = sqrt(v)); ``nll_floor``: the NLL's 0.3;
    - ``rpn_bg_prob``: the student's unsupervised background probability, ``"correct"`` sigmoid(-o) or
      ``"official"`` sigmoid(1 - o) (the official code's slip);
    - ``rpn_sigma_rescore``: how proposals are ranked before NMS: ``"correct"`` multiplies the objectness
      probability by (1 - mean_d sigmoid(s_d)) of the same anchors, ``"official"`` multiplies the *logit* by
      that factor taken from the first k anchors of the level (the official ``narrow`` slip), ``"off"``
      uses the plain probability;
    - ``teacher_var_space``: the teacher's variances come from the ROI head (encoding weights
      ``roi_box_weights``); ``"official"`` reuses them as RPN-delta variances as the official code does,
      ``"rescaled"`` divides them by the squared ROI weights to put them in RPN delta units (the EFL weight
      is computed from the un-tempered, un-rescaled teacher variance in both cases).

    ``forward(images, features, targets, mode)`` returns (proposals per image, losses); the proposal counts
    are the training ones in every mode but ``"inference"`` (the official teacher runs in train mode).
    """

    def __init__(
        self,
        anchor_generator: LearnableAnchorGenerator,
        head: nn.Module,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        pre_nms_top_n: dict[str, int],
        post_nms_top_n: dict[str, int],
        nms_thresh: float,
        score_thresh: float = 0.0,
        *,
        tau_cls: float = 0.5,
        tau_loc: float = 0.5,
        efl: bool = True,
        efl_lambda_cls: float = 0.5,
        efl_lambda_loc: float = 0.5,
        model_type: Literal["gaussian", "laplace"] = "gaussian",
        nll_floor: float = 0.3,
        rpn_bg_prob: Literal["correct", "official"] = "correct",
        rpn_sigma_rescore: Literal["correct", "official", "off"] = "correct",
        teacher_var_space: Literal["official", "rescaled"] = "official",
        roi_box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
    ) -> None:
        super().__init__(
            anchor_generator,
            head,
            fg_iou_thresh,
            bg_iou_thresh,
            batch_size_per_image,
            positive_fraction,
            pre_nms_top_n,
            post_nms_top_n,
            nms_thresh,
            score_thresh=score_thresh,
        )
        _check_choice("model_type", model_type, ("gaussian", "laplace"))
        _check_choice("rpn_bg_prob", rpn_bg_prob, ("correct", "official"))
        _check_choice("rpn_sigma_rescore", rpn_sigma_rescore, ("correct", "official", "off"))
        _check_choice("teacher_var_space", teacher_var_space, ("official", "rescaled"))
        if not (tau_cls > 0 and tau_loc > 0):
            raise UserError(f"temperatures tau_cls and tau_loc must be > 0, got {tau_cls} and {tau_loc}")
        self.tau_cls = tau_cls
        self.tau_loc = tau_loc
        self.efl = efl
        self.efl_lambda_cls = efl_lambda_cls
        self.efl_lambda_loc = efl_lambda_loc
        self.model_type = model_type
        self.nll_floor = nll_floor
        self.rpn_bg_prob = rpn_bg_prob
        self.rpn_sigma_rescore = rpn_sigma_rescore
        self.teacher_var_space = teacher_var_space
        self.roi_box_weights = tuple(float(w) for w in roi_box_weights)

    def _loss_normaliser(self, num_images: int) -> int:
        return self.fg_bg_sampler.batch_size_per_image * num_images

    def filter_proposals(  # type: ignore[override]
        self,
        proposals: Tensor,
        objectness: Tensor,
        sigma_raw: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
        training_counts: bool = True,
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level top-k by objectness, σ rescoring, clip, small-box removal, NMS, top-n per image.

        ``proposals`` (N, M, 4), ``objectness`` (N, M) logits, ``sigma_raw`` (N, M, 4); all detached here.
        Returns per image the kept boxes, their scores (probabilities after rescoring) and raw σ (k, 4).
        """
        key = "training" if training_counts else "testing"
        pre_n, post_n = self._pre_nms_top_n[key], self._post_nms_top_n[key]
        num_images = proposals.shape[0]
        proposals, objectness, sigma_raw = proposals.detach(), objectness.detach(), sigma_raw.detach()
        batch = torch.arange(num_images, device=proposals.device)[:, None]
        scores, indices, levels, sigmas = [], [], [], []
        offset = 0
        for level, logits in enumerate(objectness.split(num_anchors_per_level, dim=1)):
            k = min(pre_n, logits.shape[1])
            top_logits, top_idx = logits.topk(k, dim=1)
            top_idx = top_idx + offset
            top_sigma = sigma_raw[batch, top_idx]
            if self.rpn_sigma_rescore == "correct":
                score = torch.sigmoid(top_logits) * (1 - torch.sigmoid(top_sigma).mean(-1))
            elif self.rpn_sigma_rescore == "official":
                first_sigma = sigma_raw[:, offset : offset + k]
                score = torch.sigmoid(top_logits * (1 - torch.sigmoid(first_sigma).mean(-1)))
            else:
                score = torch.sigmoid(top_logits)
            scores.append(score)
            indices.append(top_idx)
            sigmas.append(top_sigma)
            levels.append(torch.full_like(top_idx, level))
            offset += logits.shape[1]
        scores, indices, levels, sigmas = (torch.cat(x, dim=1) for x in (scores, indices, levels, sigmas))
        boxes = proposals[batch, indices]
        final_boxes, final_scores, final_sigmas = [], [], []
        for b, sc, lv, sg, shape in zip(boxes, scores, levels, sigmas, image_shapes, strict=True):
            b = box_ops.clip_boxes_to_image(b, shape)
            keep = box_ops.remove_small_boxes(b, self.min_size)
            keep = keep[sc[keep] >= self.score_thresh]
            keep = keep[box_ops.batched_nms(b[keep], sc[keep], lv[keep], self.nms_thresh)][:post_n]
            final_boxes.append(b[keep])
            final_scores.append(sc[keep])
            final_sigmas.append(sg[keep])
        return final_boxes, final_scores, final_sigmas

    def _match(self, pseudo_boxes: Tensor, anchors: Tensor) -> Tensor:
        """Matched box index per anchor (>= 0), -1 below 0.3, -2 between; all -1 without boxes."""
        if pseudo_boxes.numel() == 0:
            return torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device)
        return self.proposal_matcher(box_ops.box_iou(pseudo_boxes, anchors))

    def supervised_loss(
        self, anchors: list[Tensor], objectness: Tensor, box_params: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """The official source RPN losses (sum-BCE and Gaussian/Laplace NLL over 256 sampled anchors / image)."""
        labels, matched_boxes = [], []
        for anchors_i, target in zip(anchors, targets, strict=True):
            gt = target["boxes"]
            matched = self._match(gt, anchors_i)
            lab = (matched >= 0).to(objectness.dtype)
            lab[matched == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(lab)
            matched_boxes.append(gt[matched.clamp(min=0)] if gt.numel() else torch.zeros_like(anchors_i))
        pos, neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos))[0]
        sampled = torch.cat([pos, torch.where(torch.cat(neg))[0]])
        labels = torch.cat(labels)
        norm = self._loss_normaliser(len(anchors))
        loss_cls = F.binary_cross_entropy_with_logits(objectness.reshape(-1)[sampled], labels[sampled], reduction="sum")
        flat = box_params.reshape(-1, 8)[pos]
        reg_targets = self.box_coder.encode_single(torch.cat(matched_boxes)[pos], torch.cat(anchors)[pos].detach())
        nll = losses.laplace_nll if self.model_type == "laplace" else losses.gaussian_nll
        loss_loc = nll(flat[:, :4], flat[:, 4:], reg_targets, floor=self.nll_floor).sum()
        return {"loss_rpn_cls": loss_cls / norm, "loss_rpn_loc": loss_loc / norm}

    def unsupervised_loss(
        self, anchors: list[Tensor], objectness: Tensor, box_params: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """The official target RPN losses towards the teacher's pseudo boxes (see the module docstring).

        ``targets`` are pseudo-label dicts with "boxes", "soft_logits" (n, K+1) and "sigma_raw" (n, 4, raw,
        ROI space). Anchors may carry gradient; it reaches them only through mu_p of the localisation KL.
        """
        num_anchors = objectness.shape[1]
        flat_idx, logits, sigma, boxes, pos_anchors = [], [], [], [], []
        for i, (anchors_i, target) in enumerate(zip(anchors, targets, strict=True)):
            with torch.no_grad():
                matched = self._match(target["boxes"], anchors_i.detach())
            pos = torch.where(matched >= 0)[0]
            j = matched[pos]
            flat_idx.append(pos + i * num_anchors)
            logits.append(target["soft_logits"][j])
            sigma.append(target["sigma_raw"][j])
            boxes.append(target["boxes"][j])
            pos_anchors.append(anchors_i[pos])
        flat_idx, logits, sigma, boxes, pos_anchors = (
            torch.cat(x) for x in (flat_idx, logits, sigma, boxes, pos_anchors)
        )
        logits, sigma, boxes = logits.detach(), sigma.detach(), boxes.detach()
        norm = self._loss_normaliser(len(anchors))

        o = objectness.reshape(-1)[flat_idx]
        teacher_bg = torch.softmax(logits / self.tau_cls, dim=-1)[:, 0]
        target_2way = torch.stack([teacher_bg, 1 - teacher_bg], dim=-1)
        bg_logit = -o if self.rpn_bg_prob == "correct" else 1 - o
        student_2way = torch.stack([torch.sigmoid(bg_logit), torch.sigmoid(o)], dim=-1)
        cls_terms = (target_2way * -torch.log(student_2way + _EPS)).sum(-1)
        if self.efl:
            cls_terms = cls_terms * losses.categorical_efl_weight(logits, self.efl_lambda_cls)

        fg = logits.argmax(dim=-1) != 0
        params = box_params.reshape(-1, 8)[flat_idx[fg]]
        mu_p = self.box_coder.encode_single(boxes[fg], pos_anchors[fg])
        v_teacher = torch.sigmoid(sigma[fg])
        v_p = self.tau_loc * v_teacher
        if self.teacher_var_space == "rescaled":
            v_p = v_p / torch.as_tensor(self.roi_box_weights, dtype=v_p.dtype, device=v_p.device) ** 2
        v_q = torch.sigmoid(params[:, 4:])
        if self.model_type == "laplace":
            loc_terms = losses.laplace_kl(mu_p, v_p, params[:, :4], v_q)
            weight = losses.laplace_efl_weight(v_teacher, self.efl_lambda_loc) if self.efl else None
        else:
            loc_terms = losses.gaussian_kl(mu_p, v_p, params[:, :4], v_q)
            weight = losses.gaussian_efl_weight(v_teacher, self.efl_lambda_loc) if self.efl else None
        if weight is not None:
            loc_terms = loc_terms * weight
        return {"loss_rpn_cls": cls_terms.sum() / norm, "loss_rpn_loc": loc_terms.sum() / norm}

    def forward(  # type: ignore[override]
        self,
        images: ImageList,
        features: dict[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        mode: str = "inference",
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals (k, 4) per image (from detached means) and the losses of ``mode`` (empty when inferring)."""
        _check_choice("mode", mode, MODES)
        feats = list(features.values())
        logits, box_params = self.head(feats)
        anchors = self.anchor_generator(images, feats)
        num_anchors_per_level = [lg[0].numel() for lg in logits]
        objectness, box_params = flatten_predictions(logits, box_params)
        num_images = objectness.shape[0]
        with torch.no_grad():
            proposals = self.box_coder.decode(box_params[..., :4].reshape(-1, 4), [a.detach() for a in anchors])
        boxes, _, _ = self.filter_proposals(
            proposals.view(num_images, -1, 4),
            objectness,
            box_params[..., 4:],
            images.image_sizes,
            num_anchors_per_level,
            training_counts=mode != "inference",
        )
        if mode in ("supervised", "unsupervised"):
            if targets is None:
                raise UserError(f"the RPN's {mode!r} mode needs targets")
            loss = self.supervised_loss if mode == "supervised" else self.unsupervised_loss
            return boxes, loss(anchors, objectness, box_params, targets)
        return boxes, {}


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
