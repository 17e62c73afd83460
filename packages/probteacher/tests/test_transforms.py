import torch
import torch.nn.functional as F

from probteacher.transforms import hflip, scale_down_paste, shortest_edge_size, strong_view, weak_view


def _smooth_image(height=96, width=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _marker_extent(image):
    """xyxy extent of the pixels brighter than 0.5 in channel 0."""
    mask = image[0] > 0.5
    ys, xs = mask.nonzero(as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def _marked(box, height=96, width=128):
    image = torch.zeros(3, height, width)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 1.0
    return image, {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([1])}


def test_hflip_moves_boxes_with_the_image():
    image, target = _marked((10, 20, 40, 50))
    flipped, out = hflip(image, target)
    torch.testing.assert_close(out["boxes"][0], _marker_extent(flipped))
    twice, back = hflip(flipped, out)
    assert torch.equal(twice, image) and torch.equal(back["boxes"], target["boxes"])
    assert out["labels"] is target["labels"]


def test_weak_view_resize_and_flip_keep_boxes_consistent():
    image, target = _marked((16, 24, 48, 72))
    flips = 0
    for seed in range(8):
        view, out = weak_view(image, target, torch.Generator().manual_seed(seed), min_size=(48, 64))
        assert min(view.shape[-2:]) in (48, 64)
        torch.testing.assert_close(out["boxes"][0], _marker_extent(view), atol=1.0, rtol=0)
        flips += int(out["boxes"][0, 0] > view.shape[-1] / 2)
    assert 0 < flips < 8
    assert shortest_edge_size(600, 3000, 600, 1333) == (267, 1333)


def test_scale_down_paste_keeps_boxes_consistent():
    image, target = _marked((20, 10, 100, 70))
    for seed in range(5):
        pasted, out = scale_down_paste(image, target, torch.Generator().manual_seed(seed), fill=0.0)
        assert pasted.shape == image.shape
        torch.testing.assert_close(out["boxes"][0], _marker_extent(pasted), atol=1.0, rtol=0)
    # the crop under the pasted box equals the resized original crop (smooth image: interpolation error only)
    smooth = _smooth_image()
    box = torch.tensor([[16.0, 8.0, 112.0, 88.0]])
    pasted, out = scale_down_paste(smooth, {"boxes": box, "soft_logits": torch.ones(1, 3)}, torch.Generator())
    x0, y0, x1, y1 = out["boxes"][0].round().int().tolist()
    crop = pasted[:, y0:y1, x0:x1]
    expected = F.interpolate(smooth[None, :, 8:88, 16:112], size=crop.shape[-2:], mode="bilinear", antialias=True)[0]
    assert (crop - expected).abs().mean() < 0.02
    assert torch.equal(out["soft_logits"], torch.ones(1, 3))


def test_scale_down_paste_fills_with_the_mean():
    image = _smooth_image()
    pasted, _ = scale_down_paste(image, {"boxes": torch.zeros(0, 4)}, torch.Generator(), ratio_range=(0.5, 0.5))
    torch.testing.assert_close(pasted[:, 0, 0], image.mean(dim=(1, 2)))


def test_strong_view_shape_range_and_determinism():
    image = _smooth_image()
    views = [strong_view(image, torch.Generator().manual_seed(s)) for s in (0, 0, 1, 2, 3)]
    for view in views:
        assert view.shape == image.shape and view.dtype == image.dtype
        assert view.min() >= 0 and view.max() <= 1
    assert torch.equal(views[0], views[1])
    assert not all(torch.equal(views[0], v) for v in views[2:])
