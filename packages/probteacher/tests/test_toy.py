import numpy as np
import pytest
import torch

from probteacher.data import VOCDetection
from probteacher.toy import (
    DIGIT_CLASSES,
    FOG_LEVELS,
    TOY_CLASSES,
    apply_fog,
    cached_toy_fog,
    make_toy_fog,
    toy_dataset_key,
)
from shared.errors import UserError

SMALL = {"n_source_train": 6, "n_target_train": 6, "n_test": 3, "workers": 1}


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_make_toy_fog_is_deterministic_and_domains_differ(tmp_path):
    first = make_toy_fog(tmp_path / "a", seed=3, **SMALL)
    make_toy_fog(tmp_path / "b", seed=3, **SMALL)
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    files_a.pop(next(k for k in files_a if k.name == "meta.json"))  # holds the elapsed time
    files_b.pop(next(k for k in files_b if k.name == "meta.json"))
    assert files_a == files_b
    source = VOCDetection(tmp_path / "a" / "source", "train", TOY_CLASSES)
    target = VOCDetection(tmp_path / "a" / "target", "train", TOY_CLASSES)
    assert not any(torch.equal(source[i][1]["boxes"], target[i][1]["boxes"]) for i in range(6))
    counts = [len(r.boxes) for r in source.records]
    assert min(counts) >= 1 and max(counts) <= 5
    assert first["splits"]["target/test"]["images"] == 3
    assert abs(first["mean_transmission"] - FOG_LEVELS["dense"]) < 0.01
    for record in source.records + target.records:  # objects are 14-40 px
        assert (record.boxes[:, 2:] - record.boxes[:, :2]).min() >= 10
    with pytest.raises(UserError, match="not empty"):
        make_toy_fog(tmp_path / "a", **SMALL)


def test_fog_lowers_contrast_at_the_level_asked():
    images = torch.rand(4, 3, 64, 64)
    for name, level in FOG_LEVELS.items():
        foggy, t = apply_fog(images, level, np.random.default_rng(0))
        assert foggy.shape == images.shape and foggy.min() >= 0 and foggy.max() <= 1
        torch.testing.assert_close(t.mean(dim=(1, 2)), torch.full((4,), level), atol=1e-3, rtol=0)
        assert foggy.std() < 0.5 * images.std(), name
        assert t[:, 0].mean() < t[:, -1].mean()  # the top of the image is farther away


def test_scale_shift_enlarges_target_objects_and_digits(tmp_path):
    make_toy_fog(tmp_path / "s", scale_shift=1.8, objects="digits", **SMALL)
    source = VOCDetection(tmp_path / "s" / "source", "train", DIGIT_CLASSES)
    target = VOCDetection(tmp_path / "s" / "target", "train", DIGIT_CLASSES)
    side = lambda d: np.sqrt(np.concatenate([np.prod(r.boxes[:, 2:] - r.boxes[:, :2], 1) for r in d.records]))  # noqa: E731
    assert side(target).mean() > 1.4 * side(source).mean()
    assert target.summary()["objects"] > 0 and set(target.summary()["per_class"]) == set(DIGIT_CLASSES)


def test_bad_arguments_and_cache(tmp_path):
    with pytest.raises(UserError, match="fog-level"):
        make_toy_fog(tmp_path / "x", fog_level="thick", **SMALL)
    with pytest.raises(UserError, match="objects"):
        make_toy_fog(tmp_path / "x", objects="cars", **SMALL)
    with pytest.raises(UserError, match="scale-shift"):
        make_toy_fog(tmp_path / "x", scale_shift=3.0, **SMALL)
    params = {k: v for k, v in SMALL.items() if k != "workers"}
    assert toy_dataset_key(**params) != toy_dataset_key(**params, seed=1)
    folder = cached_toy_fog(**params)
    stamp = (folder / "meta.json").stat().st_mtime_ns
    assert cached_toy_fog(**params) == folder and (folder / "meta.json").stat().st_mtime_ns == stamp
    assert VOCDetection(folder / "target", "test", TOY_CLASSES).summary()["images"] == 3
