"""The ImageFolder reader, the timm transforms, Mixup/CutMix and the embedded digits tree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from iformer import data, transforms
from iformer.data import (
    EVAL_SPLITS,
    TRAIN_SPLITS,
    find_split,
    image_folder,
    load_image_folder_tensors,
    write_digits_image_folder,
)
from iformer.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MixupCutmix,
    RandAugmentSpec,
    eval_transform,
    parse_rand_augment,
    smooth_one_hot,
    train_transform,
)
from shared.data import load_digits
from shared.errors import UserError


def _rgb(height: int = 16, width: int = 16, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture
def tiny_tree(tmp_path):
    """2 classes, 3 images each (PNG and JPEG), 16x16 RGB."""
    for c, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for i in range(3):
            _rgb(seed=10 * c + i).save(tmp_path / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return tmp_path


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    return write_digits_image_folder(tmp_path_factory.mktemp("digits") / "tree")


# --- split search and ImageFolder reader ---


@pytest.mark.parametrize(("split", "name"), [("train", n) for n in TRAIN_SPLITS] + [("eval", n) for n in EVAL_SPLITS])
def test_find_split_accepts_each_name(tmp_path, split, name):
    (tmp_path / name).mkdir()
    (tmp_path / "other").mkdir()
    assert find_split(tmp_path, split) == tmp_path / name


def test_find_split_prefers_the_first_name(tmp_path):
    for name in ("val", "validation", "training", "train"):
        (tmp_path / name).mkdir()
    assert find_split(tmp_path, "eval") == tmp_path / "validation"
    assert find_split(tmp_path, "train") == tmp_path / "train"


def test_find_split_error_names_root_and_names(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError) as err:
        find_split(tmp_path, "eval")
    message = str(err.value)
    assert str(tmp_path) in message and "\n" not in message
    assert all(name in message for name in EVAL_SPLITS)
    with pytest.raises(UserError, match="not found"):
        find_split(tmp_path / "missing", "train")


def test_image_folder_reads_a_tree(tiny_tree):
    dataset = image_folder(tiny_tree)
    assert dataset.classes == ["cat", "dog"]
    assert sorted(dataset.targets) == [0, 0, 0, 1, 1, 1]
    img, label = dataset[4]
    assert (img.mode, img.size, label) == ("RGB", (16, 16), 1)
    x, _ = image_folder(tiny_tree, transform=eval_transform(8))[0]
    assert x.shape == (3, 8, 8)


def test_image_folder_missing(tmp_path):
    with pytest.raises(UserError, match="not found"):
        image_folder(tmp_path / "nowhere")


def test_image_folder_rejects_a_flat_folder(tmp_path):
    _rgb().save(tmp_path / "a.png")
    with pytest.raises(UserError, match=r"holds no images in class folders <root>/<class>/<image>") as err:
        image_folder(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_image_folder_rejects_class_folders_without_images(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="holds no images in class folders"):
        image_folder(tmp_path)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_image_names_the_file(tiny_tree, kind):
    bad = tiny_tree / "dog" / "9.png"
    good = (tiny_tree / "dog" / "1.png").read_bytes()
    bad.write_bytes(b"not an image at all" if kind == "garbage" else good[: len(good) // 2])
    dataset = image_folder(tiny_tree)
    index = [path for path, _ in dataset.samples].index(bad)
    with pytest.raises(UserError) as err:
        dataset[index]
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


# --- transforms ---


@pytest.mark.parametrize("in_chans", [3, 1])
def test_transform_shapes(in_chans):
    img = _rgb(40, 30)
    torch.manual_seed(0)
    for transform in (train_transform(24, in_chans=in_chans), eval_transform(24, in_chans=in_chans)):
        x = transform(img)
        assert x.shape == (in_chans, 24, 24) and x.dtype == torch.float32


def test_eval_transform_is_deterministic_and_timm_sized():
    img = _rgb(300, 260)
    transform = eval_transform(224)
    assert torch.equal(transform(img), transform(img))
    resize = next(t for t in transform.transforms if isinstance(t, T.Resize))
    assert resize.size == 248 and resize.interpolation == InterpolationMode.BICUBIC  # int(224 / 0.9)
    assert next(t for t in eval_transform(384, crop_pct=1.0).transforms if isinstance(t, T.Resize)).size == 384


def test_transforms_normalize_with_the_given_stats():
    img = Image.new("RGB", (20, 20), (51, 102, 204))
    expected = (torch.tensor([51, 102, 204]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    plain = train_transform(8, auto_augment=None, hflip=0.0, scale=(1, 1), ratio=(1, 1), re_prob=0.0)
    for x in (eval_transform(8)(img), plain(img)):
        torch.testing.assert_close(x, expected.view(3, 1, 1).expand(3, 8, 8))
    gray = eval_transform(8, in_chans=1)(Image.new("L", (20, 20), 100).convert("RGB"))
    expected_gray = (100 / 255 - sum(IMAGENET_MEAN) / 3) / (sum(IMAGENET_STD) / 3)
    torch.testing.assert_close(gray, torch.full((1, 8, 8), expected_gray))


def test_train_crop_draws_bilinear_or_bicubic():
    img = _rgb(16, 16)
    references = {mode: TF.to_tensor(TF.resize(img, [24, 24], mode)) for mode in transforms._RANDOM_INTERPOLATION}
    transform = train_transform(24, auto_augment=None, hflip=0.0, scale=(1, 1), ratio=(1, 1), re_prob=0.0)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.manual_seed(0)
    seen = []
    for _ in range(20):
        x = transform(img) * std + mean
        seen += [mode for mode, ref in references.items() if torch.allclose(x, ref, atol=1e-5)]
    assert len(seen) == 20 and set(seen) == set(transforms._RANDOM_INTERPOLATION)


def test_train_transform_is_random_and_seeded():
    img = _rgb(40, 40)
    transform = train_transform(24)
    torch.manual_seed(1)
    first = [transform(img) for _ in range(3)]
    torch.manual_seed(1)
    again = [transform(img) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("rand-m9-mstd0.5-inc1", RandAugmentSpec(2, 9.0, 0.5, True)),
        ("rand-n3-m7", RandAugmentSpec(3, 7.0, 0.0, False)),
        ("rand-inc0-mstd1-m10-n1", RandAugmentSpec(1, 10.0, 1.0, False)),
        ("rand", RandAugmentSpec(2, 10.0, 0.0, False)),
    ],
)
def test_parse_rand_augment(spec, expected):
    assert parse_rand_augment(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "augmix-m3", "original", "rand-m11", "rand-x3", "rand-m9-m8", "rand-n1.5", "rand-inc2", "rand-m"]
)
def test_bad_rand_augment_strings(spec):
    with pytest.raises(UserError, match=r"rand-m9-mstd0\.5-inc1"):
        parse_rand_augment(spec)
    if spec:
        with pytest.raises(UserError):
            train_transform(24, auto_augment=spec)


def test_rand_augment_magnitude_noise_and_op_probability(monkeypatch):
    drawn = []

    class Recorder:
        def __init__(self, num_ops, magnitude, num_magnitude_bins, interpolation, fill):
            drawn.append((num_ops, magnitude, num_magnitude_bins, interpolation, fill))

        def __call__(self, img):
            return img

    monkeypatch.setattr(T, "RandAugment", Recorder)
    augment = train_transform(16, interpolation="bicubic").transforms[2]
    assert isinstance(augment, transforms.NoisyRandAugment)
    torch.manual_seed(0)
    for _ in range(2000):
        augment(None)
    magnitudes = torch.tensor([m for _, m, *_ in drawn], dtype=torch.float64)
    assert 0.45 * 4000 < len(drawn) < 0.55 * 4000  # 2 ops per image, each applied with probability 0.5
    assert {(n, bins, interp) for n, _, bins, interp, _ in drawn} == {(1, 101, InterpolationMode.BICUBIC)}
    assert drawn[0][4] == [124, 116, 104]  # the mean pixel
    assert abs(magnitudes.mean() - 90) < 0.5 and abs(magnitudes.std() - 5) < 0.5  # N(9, 0.5) in tenths


# --- Mixup / CutMix ---


def test_smooth_one_hot_values():
    targets = smooth_one_hot(torch.tensor([2, 0]), 4, 0.2)
    torch.testing.assert_close(targets, torch.tensor([[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]]))


@pytest.mark.parametrize("kwargs", [{"mixup_alpha": 0.0, "cutmix_alpha": 0.0}, {"prob": 0.0}])
def test_no_mixing_only_smooths(kwargs):
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 3, 9, 3])
    x_out, targets = MixupCutmix(10, label_smoothing=0.1, **kwargs)(x, y)
    assert torch.equal(x_out, x)
    expected = torch.full((4, 10), 0.01)
    expected[torch.arange(4), y] = 0.91
    torch.testing.assert_close(targets, expected)


def test_targets_are_distributions():
    torch.manual_seed(0)
    mix = MixupCutmix(10)
    for _ in range(20):
        _, targets = mix(torch.rand(6, 3, 16, 16), torch.randint(10, (6,)))
        assert targets.shape == (6, 10) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(6))
        assert targets.min() >= 0.01 - 1e-6  # at least the smoothing floor


def test_mixup_blends_with_the_reversed_batch():
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    x_before = x.clone()
    torch.manual_seed(0)
    x_out, targets = MixupCutmix(4, cutmix_alpha=0.0, label_smoothing=0.0)(x, y)
    lam = targets[0, 0].item()
    assert 0 < lam < 1 and targets[0, 3].item() == pytest.approx(1 - lam)
    torch.testing.assert_close(x_out, lam * x + (1 - lam) * x.flip(0))
    assert torch.equal(x, x_before)


def test_cutmix_lam_is_the_area_left():
    x = torch.arange(1.0, 5.0).view(4, 1, 1, 1).expand(4, 2, 32, 32).contiguous()
    y = torch.arange(4)
    mix = MixupCutmix(4, mixup_alpha=0.0, label_smoothing=0.0)
    torch.manual_seed(0)
    cut = []
    for _ in range(10):
        x_out, targets = mix(x, y)
        pasted = x_out != x
        assert torch.equal(x_out[pasted], x.flip(0)[pasted])
        assert all(torch.equal(pasted[i], pasted[0]) for i in range(4))  # one box for the batch
        area = pasted[0, 0].float().mean().item()
        assert targets[0, 0].item() == pytest.approx(1 - area) and targets[0, 3].item() == pytest.approx(area)
        rows, cols = pasted[0, 0].any(1).sum(), pasted[0, 0].any(0).sum()
        assert pasted[0, 0].sum() == rows * cols  # a rectangle
        cut.append(area)
    assert 0 < max(cut) < 1


@pytest.mark.parametrize(("switch_prob", "cutmix_share"), [(0.0, 0.0), (1.0, 1.0), (0.5, 0.5)])
def test_switch_prob_picks_cutmix(switch_prob, cutmix_share):
    x = torch.arange(1.0, 5.0).view(4, 1, 1, 1).expand(4, 1, 16, 16).contiguous()
    mix = MixupCutmix(4, switch_prob=switch_prob)
    torch.manual_seed(0)
    used_cutmix = []
    for _ in range(200):
        x_out, _ = mix(x, torch.arange(4))
        if not torch.equal(x_out, x):
            used_cutmix.append(bool(torch.equal(x_out, x_out.round())))  # cutmix only copies whole values
    assert abs(sum(used_cutmix) / len(used_cutmix) - cutmix_share) < 0.1


def test_mixup_cutmix_follows_the_torch_seed():
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    mix = MixupCutmix(4)
    torch.manual_seed(3)
    first = [mix(x, y) for _ in range(4)]
    torch.manual_seed(3)
    again = [mix(x, y) for _ in range(4)]
    for (xa, ta), (xb, tb) in zip(first, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ta, tb)


@pytest.mark.parametrize("kwargs", [{"mixup_alpha": -1.0}, {"prob": 1.5}, {"label_smoothing": 1.0}])
def test_mixup_rejects_bad_options(kwargs):
    with pytest.raises(UserError):
        MixupCutmix(10, **kwargs)


# --- the embedded digits as an ImageFolder tree ---


def test_digits_tree_layout(digits_root):
    for split, count in (("train", 1442), ("val", 355)):
        folders = sorted(p.name for p in (digits_root / split).iterdir())
        assert folders == [str(c) for c in range(10)]
        files = list((digits_root / split).glob("*/*.png"))
        assert len(files) == count
    with Image.open(files[0]) as img:
        assert (img.mode, img.size) == ("L", (32, 32))


def test_digits_tree_is_reused(digits_root, monkeypatch):
    def fail(size=None):
        raise AssertionError("the digits were written again")

    monkeypatch.setattr(data, "load_digits", fail)
    assert write_digits_image_folder(digits_root) == digits_root
    with pytest.raises(UserError, match="another size"):
        write_digits_image_folder(digits_root, size=16)


def test_interrupted_digits_write_leaves_nothing(tmp_path, monkeypatch):
    saved = []
    original_save = Image.Image.save

    def save_then_fail(self, *args, **kwargs):
        if len(saved) == 100:
            raise KeyboardInterrupt
        saved.append(args[0])
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_digits_image_folder(tmp_path / "tree", size=8)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_digits_image_folder(tmp_path / "tree", size=8)
    assert len(list((tmp_path / "tree").glob("*/*/*.png"))) == 1797


def test_digits_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "tree" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="not a complete digits ImageFolder tree"):
        write_digits_image_folder(tmp_path / "tree")


@pytest.mark.parametrize("in_chans", [3, 1])
def test_digits_read_back_through_the_reader(digits_root, in_chans):
    reference = load_digits(size=32)
    splits = (("train", reference.x_train, reference.y_train), ("eval", reference.x_test, reference.y_test))
    for split, x_ref, y_ref in splits:
        x, y, classes = load_image_folder_tensors(find_split(digits_root, split), 32, in_chans)
        assert classes == [str(c) for c in range(10)]
        assert x.shape == (len(y_ref), in_chans, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(torch.bincount(y, minlength=10), torch.bincount(y_ref, minlength=10))
        order = torch.sort(y_ref, stable=True).indices  # ImageFolder lists class by class, files in index order
        assert torch.equal(y, y_ref[order])
        assert (x - x_ref[order]).abs().max() <= 0.5 / 255 + 1e-6  # rounded to 8 bits
        assert torch.equal(x[:, :1].expand_as(x), x)


def test_image_folder_tensors_resize(tiny_tree):
    x, y, classes = load_image_folder_tensors(tiny_tree, 8, 3)
    assert x.shape == (6, 3, 8, 8) and x.min() >= 0 and x.max() <= 1
    assert y.tolist() == [0, 0, 0, 1, 1, 1] and classes == ["cat", "dog"]
