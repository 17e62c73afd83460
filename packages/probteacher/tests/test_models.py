"""The probabilistic Faster R-CNN: configuration table, normalisation, every mode on the tiny detector, overfit."""

import pytest
import torch
from torchvision.ops import box_iou

from probteacher.models import SIZES, DetectorConfig, DetectorTransform, ProbabilisticFasterRCNN, build_detector
from shared.errors import UserError

K = 3


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_detector(DetectorConfig(backbone="tiny", num_classes=K))


def images():
    return [torch.rand(3, 128, 128), torch.rand(3, 96, 128)]


def gt_targets():
    return [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 40.0], [60.0, 60.0, 100.0, 120.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[30.0, 20.0, 70.0, 70.0]]), "labels": torch.tensor([2])},
    ]


def pseudo(boxes, logits):
    n = len(boxes)
    return {
        "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(n, 4),
        "labels": torch.as_tensor(logits).reshape(n, K + 1).argmax(1),
        "soft_logits": torch.as_tensor(logits, dtype=torch.float32).reshape(n, K + 1),
        "sigma_raw": torch.randn(n, 4),
    }


def test_sizes_and_config():
    tiny_cfg = DetectorConfig(backbone="tiny", num_classes=K).resolved()
    assert tiny_cfg.anchor_sizes == ((16, 32, 64),) and tiny_cfg.aspect_ratios == ((0.5, 1.0, 2.0),)
    assert (tiny_cfg.rpn_pre_nms_top_n_train, tiny_cfg.rpn_post_nms_top_n_train) == (1000, 300)
    assert (tiny_cfg.rpn_pre_nms_top_n_test, tiny_cfg.rpn_post_nms_top_n_test) == (600, 100)
    assert tiny_cfg.box_head_dim == 256 and tiny_cfg.min_size == tiny_cfg.max_size == 128
    vgg = DetectorConfig().resolved()
    assert vgg.backbone == "vgg16" and vgg.normalisation == "caffe" and (vgg.min_size, vgg.max_size) == (600, 1333)
    assert (vgg.rpn_pre_nms_top_n_train, vgg.rpn_post_nms_top_n_train) == (12000, 2000)
    assert (vgg.rpn_pre_nms_top_n_test, vgg.rpn_post_nms_top_n_test) == (6000, 1000)
    assert vgg.rpn_positive_fraction == 0.25 and vgg.box_head_dim == 1024 and vgg.tau_cls == 0.5
    assert set(SIZES) >= {"tiny", "vgg16", "resnet50-fpn"}
    assert DetectorConfig(backbone="tiny", box_head_dim=64).resolved().box_head_dim == 64  # overrides win
    for bad in ({"backbone": "vgg19"}, {"num_classes": 0}, {"normalisation": "bgr"}, {"rpn_sigma_rescore": "x"}):
        with pytest.raises(UserError):
            DetectorConfig(**bad).resolved()


def test_caffe_and_imagenet_normalisation():
    img = torch.rand(3, 4, 5)
    caffe = DetectorTransform(600, 1333, "caffe").normalize(img)
    mean = torch.tensor([103.53, 116.28, 123.675])[:, None, None]
    assert torch.allclose(caffe, img.flip(0) * 255 - mean, atol=1e-4)
    imagenet = DetectorTransform(600, 1333, "imagenet").normalize(img)
    assert torch.allclose(imagenet[0], (img[0] - 0.485) / 0.229)
    with pytest.raises(UserError):
        DetectorTransform(600, 1333, "caffe").normalize(img.to(torch.uint8))


def test_supervised_mode(tiny):
    tiny.zero_grad()
    out = tiny(images(), gt_targets(), mode="supervised")
    assert set(out) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) and v.item() > 0 for v in out.values())
    sum(out.values()).backward()
    assert tiny.backbone.features[0].weight.grad.abs().sum() > 0
    assert tiny.rpn.head.bbox_pred.weight.grad.abs().sum() > 0
    assert tiny.anchor_parameters()[0].grad is None  # anchors blocked in the supervised branch


def test_unsupervised_mode_and_anchor_gradient(tiny):
    tiny.zero_grad()
    fg = [[0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]]
    targets = [pseudo([[10.0, 12.0, 50.0, 40.0], [60.0, 60.0, 100.0, 120.0]], fg), pseudo([], [])]
    out = tiny(images(), targets, mode="unsupervised")
    assert set(out) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in out.values())
    assert out["loss_rpn_cls"] > 0 and out["loss_rpn_loc"] > 0
    sum(out.values()).backward()
    assert tiny.anchor_parameters()[0].grad.abs().sum() > 0


def test_unsupervised_all_empty(tiny):
    tiny.zero_grad()
    out = tiny(images(), [pseudo([], []), pseudo([], [])], mode="unsupervised")
    assert all(torch.isfinite(v) and v.item() == 0 for v in out.values())
    sum(out.values()).backward()


@pytest.mark.parametrize("mode", ["teacher", "inference"])
def test_inference_outputs(tiny, mode):
    imgs = images()
    dets = tiny(imgs, mode=mode)
    assert len(dets) == 2
    for det, img in zip(dets, imgs, strict=True):
        n = det["boxes"].shape[0]
        assert det["logits"].shape == (n, K + 1) and det["sigma_raw"].shape == (n, 4)
        assert det["scores"].shape == det["labels"].shape == (n,)
        assert not det["boxes"].requires_grad
        if n:
            p = torch.softmax(det["logits"], 1).gather(1, det["labels"][:, None])[:, 0]
            assert torch.allclose(det["scores"], p * (1 - torch.sigmoid(det["sigma_raw"]).mean(1)), atol=1e-6)
            assert det["labels"].min() >= 1
            assert det["boxes"][:, 2].max() <= img.shape[2] and det["boxes"][:, 3].max() <= img.shape[1]


def test_boxes_return_to_input_coordinates():
    torch.manual_seed(0)
    model = build_detector(DetectorConfig(backbone="tiny", num_classes=K, min_size=64, max_size=64))
    det = model([torch.rand(3, 128, 128)], mode="inference")[0]
    ref = build_detector(DetectorConfig(backbone="tiny", num_classes=K, min_size=64, max_size=64))
    ref.load_state_dict(model.state_dict())
    small = ref([torch.nn.functional.interpolate(torch.rand(3, 128, 128)[None], size=64)[0]], mode="inference")[0]
    assert det["boxes"].shape[0] > 0 and small["boxes"].shape[0] > 0
    assert det["boxes"].max() > 64  # rescaled back from the 64 px network input
    assert small["boxes"].max() <= 64


def test_bad_inputs(tiny):
    with pytest.raises(UserError):
        tiny(images(), mode="supervised")
    with pytest.raises(UserError):
        tiny(images(), gt_targets(), mode="train")
    bad = [{"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]]), "labels": torch.tensor([1])}] * 2
    with pytest.raises(UserError):
        tiny(images(), bad, mode="supervised")


def test_overfit_two_images():
    torch.manual_seed(0)
    cfg = DetectorConfig(
        backbone="tiny",
        num_classes=2,
        min_size=64,
        max_size=64,
        roi_batch_size_per_image=64,
        rpn_post_nms_top_n_train=64,
        rpn_post_nms_top_n_test=32,
    )
    model = build_detector(cfg)
    assert isinstance(model, ProbabilisticFasterRCNN)
    imgs = [torch.full((3, 64, 64), 0.2), torch.full((3, 64, 64), 0.2)]
    imgs[0][0, 10:34, 8:40] = 0.9  # a red box, class 1
    imgs[1][2, 30:58, 28:48] = 0.9  # a blue box, class 2
    imgs[1][1, 4:20, 4:20] = 0.9  # a green one, class 1
    targets = [
        {"boxes": torch.tensor([[8.0, 10.0, 40.0, 34.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[28.0, 30.0, 48.0, 58.0], [4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([2, 1])},
    ]
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    for _ in range(150):
        out = model(imgs, targets, mode="supervised")
        loss = sum(out.values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
    assert out["loss_rpn_cls"].item() < 0.1 and out["loss_cls"].item() < 0.25  # from log 2 and log 3
    dets = model(imgs, mode="inference")
    for det, target in zip(dets, targets, strict=True):
        iou = box_iou(target["boxes"], det["boxes"])
        assert (iou.max(1).values > 0.5).all()
        # the label of each object's highest-scoring detection (IoU > 0.5), as AP ranks them: a low-score
        # duplicate of another class may overlap an object more than its top detection does
        top = torch.where(iou > 0.5, det["scores"], -1.0).argmax(1)
        assert torch.equal(det["labels"][top], target["labels"])


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50-fpn"])
def test_paper_backbones_build_and_run(backbone):
    cfg = DetectorConfig(backbone=backbone, num_classes=2, min_size=64, max_size=96, rpn_pre_nms_top_n_test=200)
    model = build_detector(cfg)
    sizes = cfg.resolved().anchor_sizes
    assert model.anchor_generator.num_anchors_per_location() == [3 * len(s) for s in sizes]
    det = model([torch.rand(3, 64, 80)], mode="inference")[0]
    assert det["logits"].shape[1] == 3
    target = [{"boxes": torch.tensor([[5.0, 5.0, 40.0, 40.0]]), "labels": torch.tensor([1])}]
    out = model([torch.rand(3, 64, 80)], target, mode="supervised")
    assert all(torch.isfinite(v) for v in out.values())
