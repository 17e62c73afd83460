import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from lcbooster.bench import torchvision_op
from lcbooster.transforms import (
    OPS,
    RAND_AUGMENT_POOL,
    Views,
    _apply_ops,
    _auto_augment_table,
    _rand_augment_table,
    apply_op,
    auto_augment_cifar,
    autoaugment_magnitude,
    cutout,
    fixmatch_magnitude,
    jitter,
    normalize,
    rand_augment_mc,
    random_crop,
    random_flip,
)
from shared.errors import UserError

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def images(b=16, c=3, size=32, seed=0):
    return torch.randint(0, 256, (b, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_normalize():
    x = torch.full((2, 3, 4, 4), 51, dtype=torch.uint8)
    out = normalize(x, CIFAR_MEAN, CIFAR_STD)
    assert out.dtype == torch.float32
    expected = (torch.tensor(0.2) - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    torch.testing.assert_close(out[1, :, 2, 3], expected)
    torch.testing.assert_close(normalize(x.float() / 255, CIFAR_MEAN, CIFAR_STD), out)
    with pytest.raises(ValueError):
        normalize(x[:, :1], CIFAR_MEAN, CIFAR_STD)


@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_crop_without_padding_is_identity(mode):
    x = images()
    assert torch.equal(random_crop(x, 0, mode), x)


def test_reflect_crop_of_constant_image_stays_constant():
    x = torch.full((32, 3, 8, 8), 200, dtype=torch.uint8)
    assert torch.equal(random_crop(x, 4, "reflect"), x)
    assert (random_crop(x, 4, "constant") == 0).any()


@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_every_crop_is_a_window_of_the_padded_image(mode):
    x, p = images(64, 3, 12), 3
    out = random_crop(x, p, mode, generator=torch.Generator().manual_seed(1))
    padded = F.pad(x, (p,) * 4, mode=mode)
    offsets = set()
    for i in range(len(x)):
        hits = [
            (r, c)
            for r in range(2 * p + 1)
            for c in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, r : r + 12, c : c + 12])
        ]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 25  # 49 possible offsets, drawn per sample


def test_flip_half_the_samples():
    x = images(2000, 1, 4)
    out = random_flip(x, generator=torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert ((out == x).flatten(1).all(1) | flipped).all()
    assert 900 < int(flipped.sum()) < 1100


def test_cutout_matches_fixmatch_cutout_abs():
    """Same centres as FixMatch's CutoutAbs drawn with PIL: identical grey (clipped) squares."""
    b, size, v = 200, 32, 16
    x = torch.zeros(b, 3, size, size, dtype=torch.uint8)
    out = cutout(x, v, generator=torch.Generator().manual_seed(3))
    centres = torch.rand(b, 2, generator=torch.Generator().manual_seed(3)) * size
    clipped = 0
    for i, (cx, cy) in enumerate(centres.tolist()):
        img = Image.new("RGB", (size, size))
        x0, y0 = int(max(0, cx - v / 2.0)), int(max(0, cy - v / 2.0))
        x1, y1 = int(min(size, x0 + v)), int(min(size, y0 + v))
        ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), (127, 127, 127))
        assert torch.equal(out[i], torch.from_numpy(np.array(img)).permute(2, 0, 1))
        clipped += int(x1 == size or y1 == size)
    assert clipped > 10
    assert set(out.unique().tolist()) == {0, 127}
    filled = cutout(torch.zeros(4, 1, 8, 8), 4)
    assert set(filled.unique().tolist()) == {0.0, 0.5}


def test_fixmatch_magnitudes():
    assert fixmatch_magnitude("Brightness", 5, 32, 32) == pytest.approx(0.5)
    assert fixmatch_magnitude("Posterize", 1, 32, 32) == 4
    assert fixmatch_magnitude("Posterize", 9, 32, 32) == 7
    assert fixmatch_magnitude("Rotate", 9, 32, 32) == 27
    assert fixmatch_magnitude("ShearY", 5, 32, 32) == pytest.approx(0.15)
    assert fixmatch_magnitude("Solarize", 1, 32, 32) == 231
    assert fixmatch_magnitude("TranslateX", 9, 28, 32) == 8  # int(0.27 * 32)
    assert fixmatch_magnitude("TranslateY", 9, 28, 32) == 7  # int(0.27 * 28)
    assert fixmatch_magnitude("Equalize", 9, 32, 32) == 0


def test_autoaugment_magnitudes():
    assert autoaugment_magnitude("Posterize", 7, 1, 32, 32) == 5
    assert autoaugment_magnitude("Solarize", 2, 1, 32, 32) == pytest.approx(256 * 7 / 9)
    assert autoaugment_magnitude("Color", 9, -1, 32, 32) == pytest.approx(0.1)
    assert autoaugment_magnitude("TranslateY", 9, -1, 32, 32) == pytest.approx(-150 / 331 * 32)


VALUES = {"Brightness": 0.86, "Color": 0.32, "Contrast": 1.9, "Sharpness": 0.14, "Posterize": 4, "Rotate": -27.0}
VALUES |= {"ShearX": 0.3, "ShearY": -0.12, "Solarize": 199.1, "TranslateX": 8, "TranslateY": -14.5}


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", OPS)
def test_each_op_matches_torchvision_v2_per_image(name, channels):
    """Batched ops with per-sample parameters equal v2 on single images (±1 grey level on a few pixels at most)."""
    x = images(32, channels, 32)
    out = apply_op(x, name, VALUES.get(name, 0.0))
    expected = torch.stack([torchvision_op(image, name, VALUES.get(name, 0.0)) for image in x])
    diff = (out.int() - expected.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    assert torch.equal(out, x) == (name == "Identity" or (name == "Color" and channels == 1))


@pytest.mark.parametrize("table", [_rand_augment_table, _auto_augment_table])
def test_mixed_batch_equals_each_op_alone(table):
    rows = table(32, 32, torch.device("cpu"))
    x = images(96)
    codes = torch.randint(len(rows), (96,), generator=torch.Generator().manual_seed(0))
    out = _apply_ops(x, rows[codes], fill=128)
    for i in range(96):
        assert torch.equal(out[i : i + 1], _apply_ops(x[i : i + 1], rows[codes[i : i + 1]], fill=128))


def test_rand_augment_mc_shape_determinism_and_change():
    x = images(64)
    torch.manual_seed(0)
    a = rand_augment_mc(x)
    torch.manual_seed(0)
    b = rand_augment_mc(x)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)
    assert (a != x).flatten(1).any(1).all()  # Cutout always applies
    no_cutout = rand_augment_mc(x, cutout_size=0, generator=torch.Generator().manual_seed(0))
    changed = (no_cutout != x).flatten(1).any(1).float().mean()
    assert 0.5 < changed < 1.0  # P(no op fires, or only Identity) ≈ 0.29
    grey = rand_augment_mc(images(8, 1, 28))
    assert grey.shape == (8, 1, 28, 28)
    with pytest.raises(TypeError):
        rand_augment_mc(x.float())


def test_auto_augment_shape_determinism_and_change():
    x = images(64)
    a = auto_augment_cifar(x, generator=torch.Generator().manual_seed(5))
    b = auto_augment_cifar(x, generator=torch.Generator().manual_seed(5))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)
    assert 0.3 < (a != x).flatten(1).any(1).float().mean() < 1.0
    assert auto_augment_cifar(images(8, 1, 28)).shape == (8, 1, 28, 28)


def test_jitter():
    x = torch.full((64, 1, 8, 8), 0.5)
    x[:, :, :4] = 0.25
    out = jitter(x, generator=torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1
    assert out[:, 0, 0, 0].unique().numel() == 64  # per-sample factors
    assert torch.equal(jitter(x, 0.0, 0.0), x)
    assert torch.equal(jitter(x, generator=torch.Generator().manual_seed(0)), out)


@pytest.mark.parametrize(
    ("views", "c", "size"),
    [
        (Views.for_cifar(CIFAR_MEAN, CIFAR_STD, "rand"), 3, 32),
        (Views.for_cifar(CIFAR_MEAN, CIFAR_STD, "auto"), 3, 32),
        (Views.for_cifar(CIFAR_MEAN, CIFAR_STD, "none", pad_mode="constant"), 3, 32),
        (Views.for_digits((0.13,), (0.31,), 28), 1, 28),
        (Views.for_digits((0.13,), (0.31,), 8), 1, 8),
    ],
)
def test_views(views, c, size):
    x = images(16, c, size)
    for view in (views.weak, views.strong, views.test):
        out = view(x)
        assert out.shape == x.shape and out.dtype == torch.float32
    torch.testing.assert_close(views.test(x), normalize(x, views.mean, views.std))
    constant = torch.full((2, c, size, size), 102, dtype=torch.uint8)
    expected = (0.4 - torch.tensor(views.mean)) / torch.tensor(views.std)
    torch.testing.assert_close(views.test(constant), expected.view(1, c, 1, 1).expand(2, c, size, size))
    a = views.strong(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, views.strong(x, generator=torch.Generator().manual_seed(2)))
    same_as_weak = torch.equal(a, views.weak(x, generator=torch.Generator().manual_seed(2)))
    assert same_as_weak == (views.strong_aug == "none")


def test_view_settings():
    digits28, digits8 = Views.for_digits((0.1,), (0.3,), 28), Views.for_digits((0.1,), (0.3,), 8)
    assert (digits28.padding, digits28.cutout, digits28.flip) == (2, 8, False)
    assert (digits8.padding, digits8.cutout, digits8.pad_mode) == (1, 2, "constant")
    cifar = Views.for_cifar(CIFAR_MEAN, CIFAR_STD)
    assert (cifar.padding, cifar.cutout, cifar.pad_mode) == (4, 16, "reflect")
    assert Views.for_cifar(CIFAR_MEAN, CIFAR_STD, "auto").cutout is None
    plain = Views(CIFAR_MEAN, CIFAR_STD, padding=0, flip=False, strong_aug="none", cutout=None)
    x = images(4)
    assert torch.equal(plain.weak(x), plain.test(x)) and torch.equal(plain.strong(x), plain.test(x))
    for bad in ({"strong_aug": "randaugment"}, {"pad_mode": "edge"}, {"std": (0.2,)}):
        with pytest.raises(UserError):
            Views(**{"mean": CIFAR_MEAN, "std": CIFAR_STD} | bad)


def test_pool_is_fixmatch():
    assert len(RAND_AUGMENT_POOL) == 14 and len(set(RAND_AUGMENT_POOL)) == 14
