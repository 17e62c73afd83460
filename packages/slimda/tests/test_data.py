"""Readers of the real layouts (through shared.data's image helpers), the synthetic shifts and the embedded
datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.data import cache_dir, load_background_images, load_digits, load_mnist5k
from shared.errors import UserError
from slimda import data
from slimda.data import (
    EMBEDDED,
    SHIFTS,
    Domain,
    check_same_classes,
    embedded_root,
    load_domain,
    load_embedded,
    make_shift,
)


def _image(path: Path, value: tuple[int, int, int] | int, size: tuple[int, int] = (10, 20)) -> Path:
    """A solid image of ``size`` (height, width): RGB for a triple, greyscale for an int."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode, shape = ("RGB", (*size, 3)) if isinstance(value, tuple) else ("L", size)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode).save(path)
    return path


def _domain(name: str, classes: list[str]) -> Domain:
    n = len(classes)
    return Domain(name, torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.arange(n), classes, [""] * n)


# ----------------------------------------------------------------------------------------------- readers


def test_image_folder_sorted_classes_labels_and_decoding(tmp_path):
    dom = tmp_path / "dom"
    _image(dom / "bee" / "2.png", (0, 0, 255))
    _image(dom / "bee" / "1.JPG", (255, 0, 0), size=(40, 30))
    _image(dom / "ant" / "a.bmp", 100)
    _image(dom / "cat" / "nested" / "c.png", (0, 255, 0))
    (dom / "cat" / "notes.txt").write_text("not an image")
    _image(dom / ".hidden" / "x.png", 7)

    domain = load_domain(tmp_path, "dom", 12)
    assert domain.name == "dom" and domain.num_classes == 3 and domain.classes == ["ant", "bee", "cat"]
    assert [Path(p).relative_to(dom).as_posix() for p in domain.paths] == [
        "ant/a.bmp",
        "bee/1.JPG",
        "bee/2.png",
        "cat/nested/c.png",
    ]
    assert domain.images.dtype == torch.uint8 and domain.images.shape == (4, 3, 12, 12)
    assert domain.labels.dtype == torch.int64 and domain.labels.tolist() == [0, 1, 1, 2]
    assert (domain.images[0] == 100).all()  # greyscale -> 3 equal channels
    assert (domain.images[2] == torch.tensor([0, 0, 255], dtype=torch.uint8)[:, None, None]).all()
    assert abs(domain.images[1, 0].float().mean().item() - 255) < 3  # JPEG red, resized 40x30 -> 12x12


def test_office31_images_layout(tmp_path):
    _image(tmp_path / "amazon" / "images" / "bike" / "frame_0001.jpg", (9, 9, 9))
    _image(tmp_path / "amazon" / "images" / "back_pack" / "frame_0001.jpg", (9, 9, 9))
    domain = load_domain(tmp_path, "amazon", 8)
    assert domain.classes == ["back_pack", "bike"]
    assert domain.labels.tolist() == [0, 1]


def test_image_list_with_spaces_blank_lines_and_class_names(tmp_path):
    _image(tmp_path / "dom" / "my photo.png", (1, 2, 3))
    _image(tmp_path / "dom" / "b.png", (4, 5, 6))
    list_file = tmp_path / "lists" / "dom.txt"
    list_file.parent.mkdir()
    list_file.write_text("dom/my photo.png 2\n\n  dom/b.png   0  \n")

    domain = load_domain(tmp_path, "dom", 4, list_dir="lists")
    assert domain.paths == [str(tmp_path / "dom" / "my photo.png"), str(tmp_path / "dom" / "b.png")]
    assert domain.classes == ["0", "1", "2"] and domain.labels.tolist() == [2, 0]
    assert (domain.images[0] == torch.tensor([1, 2, 3], dtype=torch.uint8)[:, None, None]).all()
    named = load_domain(tmp_path, "dom", 4, list_dir="lists", classes=["x", "y", "z"])
    assert named.classes == ["x", "y", "z"]
    with pytest.raises(UserError, match="label 2, but only 2 class names"):
        load_domain(tmp_path, "dom", 4, list_dir="lists", classes=["x", "y"])


def _list_domain(root: Path, content: str | bytes) -> Path:
    """An image-list domain ``dom`` under ``root``: ``image_list/dom.txt`` holding ``content``."""
    list_file = root / "image_list" / "dom.txt"
    list_file.parent.mkdir(parents=True, exist_ok=True)
    list_file.write_bytes(content if isinstance(content, bytes) else content.encode())
    return list_file


@pytest.mark.parametrize("bad_line", ["dom/b.png", "dom/b.png one", "dom/b.png -1"])
def test_malformed_list_line_names_file_and_line(tmp_path, bad_line):
    _image(tmp_path / "dom" / "b.png", 0)
    list_file = _list_domain(tmp_path, f"dom/b.png 0\n\n{bad_line}\n")
    with pytest.raises(UserError, match=rf"{list_file}:3 is not"):
        load_domain(tmp_path, "dom", 4)


def test_binary_list_file_is_refused(tmp_path):
    list_file = _list_domain(tmp_path, b"\xff\xfe\x00binary 0\n")
    with pytest.raises(UserError, match=rf"image list {list_file} is not UTF-8"):
        load_domain(tmp_path, "dom", 4)


def test_missing_listed_images_are_reported_together(tmp_path):
    _image(tmp_path / "present.png", 0)
    names = [f"gone{i}.png" for i in range(7)]
    list_file = _list_domain(tmp_path, "present.png 0\n" + "".join(f"{name} 1\n" for name in names))
    with pytest.raises(UserError) as error:
        load_domain(tmp_path, "dom", 4)
    message = str(error.value)
    assert message.startswith(f"7 of 8 images listed in {list_file} are missing under {tmp_path} (")
    assert all(name in message for name in names[:5]) and "gone5" not in message and "present" not in message


def test_corrupt_image_is_named(tmp_path):
    _image(tmp_path / "dom" / "cls" / "good.png", 0)
    bad = tmp_path / "dom" / "cls" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(UserError, match=rf"cannot read image {bad}"):
        load_domain(tmp_path, "dom", 8)


def test_missing_domain_lists_what_exists(tmp_path):
    _image(tmp_path / "amazon" / "images" / "bike" / "1.jpg", 0)
    _image(tmp_path / "dslr" / "bike" / "1.jpg", 0)
    (tmp_path / "image_list").mkdir()
    (tmp_path / "image_list" / "webcam.txt").write_text("")
    with pytest.raises(UserError) as error:
        load_domain(tmp_path, "amzon", 8)
    message = str(error.value)
    assert "'amzon' not found" in message and "image_list/amzon.txt" in message and "list/amzonList.txt" in message
    assert message.endswith("domains found there: amazon, dslr, webcam")
    with pytest.raises(UserError, match="data folder not found"):
        load_domain(tmp_path / "nowhere", "amazon", 8)


def test_imageclef_list_layout(tmp_path):
    _image(tmp_path / "i" / "119_0001.jpg", (200, 0, 0))  # ImageCLEF-DA: flat image folders, labels in list/
    _image(tmp_path / "i" / "119_0002.jpg", (0, 0, 200))
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "iList.txt").write_text("i/119_0001.jpg 0\ni/119_0002.jpg 11\n")
    domain = load_domain(tmp_path, "i", 8)
    assert domain.num_classes == 12 and domain.labels.tolist() == [0, 11]
    assert domain.paths == [str(tmp_path / "i" / "119_0001.jpg"), str(tmp_path / "i" / "119_0002.jpg")]


def test_empty_domain_is_an_error(tmp_path):
    (tmp_path / "dom" / "cls").mkdir(parents=True)
    with pytest.raises(UserError, match=rf"{tmp_path / 'dom'} holds no images in class folders"):
        load_domain(tmp_path, "dom", 8)
    _list_domain(tmp_path / "lists", "\n")
    with pytest.raises(UserError, match=r"domain 'dom' has no images in .*image_list/dom\.txt"):
        load_domain(tmp_path / "lists", "dom", 8)


def test_check_same_classes():
    office = [f"c{i:02d}" for i in range(31)]
    check_same_classes(_domain("amazon", office), _domain("webcam", office))
    check_same_classes(_domain("amazon", office), _domain("list", [str(i) for i in range(31)]))
    with pytest.raises(UserError, match=r"source amazon has 31 classes, target webcam has 30 \(only in source: c30;"):
        check_same_classes(_domain("amazon", office), _domain("webcam", office[:30]))
    renamed = [*office[:30], "zebra"]
    with pytest.raises(UserError, match="only in source: c30; only in target: zebra"):
        check_same_classes(_domain("amazon", office), _domain("webcam", renamed))


# ------------------------------------------------------------------------------------------------ shifts


def _digits16(n: int = 32) -> torch.Tensor:
    return load_digits(16).x_train[:n]


@pytest.mark.parametrize("shift", SHIFTS)
def test_make_shift_shape_range_and_seed(shift):
    x = _digits16()
    out = make_shift(x, shift, seed=3)
    assert out.shape == (len(x), 3, 16, 16) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, make_shift(x, shift, seed=3))
    assert not torch.equal(out, make_shift(x, shift, seed=4))
    assert not torch.allclose(out, x.expand(-1, 3, -1, -1), atol=0.05)


def test_make_shift_rejects_unknown_shift_and_bad_shape():
    with pytest.raises(UserError, match="unknown shift 'blur': choose from mnistm, invert, fog, rotate"):
        make_shift(_digits16(), "blur", 0)
    with pytest.raises(ValueError, match="float images"):
        make_shift(torch.rand(2, 3, 16, 16), "fog", 0)


def test_mnistm_inverts_a_texture_crop_under_the_stroke():
    n = 8
    background = make_shift(torch.zeros(n, 1, 16, 16), "mnistm", seed=5)
    stroke = torch.zeros(n, 1, 16, 16)
    stroke[:, :, 4:12, 6:9] = 1.0
    out = make_shift(stroke, "mnistm", seed=5)
    under = stroke.expand(-1, 3, -1, -1).bool()
    assert torch.allclose(out[under], 1 - background[under]) and torch.equal(out[~under], background[~under])
    textures = torch.stack(list(load_background_images(list(data.MNISTM_TEXTURES), size=64).values()))
    crops = textures.unfold(2, 16, 1).unfold(3, 16, 1)  # (T, 3, 49, 49, 16, 16): every 16x16 crop
    for patch in background:
        distance = (crops - patch[:, None, None]).abs().amax(dim=(1, 4, 5))
        assert distance.min() < 1e-6
    assert len({tuple(p.flatten()[:8].tolist()) for p in background}) == n


def test_invert_tints_the_negative():
    x = _digits16()
    out = make_shift(x, "invert", seed=0)
    assert torch.all(out <= 1 - x + 1e-6)
    paper = out[:, :, 0, 0]  # the corners are blank: they show the tint colour itself
    assert paper.min() >= 0.5 and paper.std(dim=0).min() > 0.05


def test_fog_lifts_and_blurs():
    out = make_shift(torch.zeros(64, 1, 16, 16), "fog", seed=0)
    means = out.mean(dim=(1, 2, 3))
    assert means.min() > 0.6 * 0.7 - 0.01 and means.max() < 0.6 * 0.9 + 0.01 and means.std() > 0.02
    assert 0.02 < (out - means[:, None, None, None]).std() < 0.04


def _orientation_degrees(images: torch.Tensor) -> torch.Tensor:
    """Orientation of each image's mass from its second moments."""
    h, w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    mass = images[:, 0]
    mu20, mu02, mu11 = ((mass * a * b).sum(dim=(1, 2)) for a, b in ((xs, xs), (ys, ys), (xs, ys)))
    return torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))


def test_rotate_turns_each_image_within_30_degrees():
    line = torch.zeros(64, 1, 32, 32)
    line[:, :, 15:17, 4:28] = 1.0
    angles = _orientation_degrees(make_shift(line, "rotate", seed=0))
    assert angles.abs().max() <= 31 and angles.abs().max() > 20 and angles.std() > 10


# -------------------------------------------------------------------------------------- embedded datasets


def _generation_order(domain: Domain) -> torch.Tensor:
    """Indices that put the domain's images in generation order (the index is the PNG's file name)."""
    return torch.tensor([int(Path(path).stem) for path in domain.paths]).argsort()


def _assert_equals_generated(domain: Domain, images: torch.Tensor, labels: torch.Tensor) -> None:
    assert domain.classes == [str(i) for i in range(10)]
    assert sorted(int(Path(p).stem) for p in domain.paths) == list(range(len(labels)))
    assert torch.equal(domain.labels, torch.tensor([int(Path(p).parent.name) for p in domain.paths]))
    order = _generation_order(domain)
    assert torch.equal(domain.labels[order], labels)
    assert (domain.images[order].float() / 255 - images).abs().max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_written_once(name, monkeypatch):
    root = embedded_root(name)
    marker = root / "COMPLETE"
    written = marker.stat().st_mtime_ns

    def fail(*args):
        raise AssertionError("the embedded dataset was written again")

    monkeypatch.setattr(data, "_write_domains", fail)
    monkeypatch.setattr(data, "generate_embedded", fail)
    assert embedded_root(name) == root == cache_dir("slimda", name)
    assert marker.stat().st_mtime_ns == written
    source, target = data.EMBEDDED_DOMAINS[name]
    for domain in (source, target):
        listed = (root / "image_list" / f"{domain}.txt").read_text().splitlines()
        assert len(listed) == len(list((root / domain).rglob("*.png"))) > 0


def test_mnist_digits_is_all_of_mnist5k_and_uci_digits():
    source, target = load_embedded("mnist-digits")
    assert (source.name, len(source.labels), target.name, len(target.labels)) == ("mnist", 5000, "digits", 1797)
    mnist, digits = load_mnist5k(16), load_digits(16)
    _assert_equals_generated(source, torch.cat([mnist.x_train, mnist.x_test]), torch.cat([mnist.y_train, mnist.y_test]))
    _assert_equals_generated(
        target, torch.cat([digits.x_train, digits.x_test]), torch.cat([digits.y_train, digits.y_test])
    )
    listed = load_domain(embedded_root("mnist-digits"), "digits", 16, list_dir="image_list")
    assert torch.equal(listed.images[_generation_order(listed)], target.images[_generation_order(target)])


def test_toy_digits_splits_uci_digits_by_parity_within_class():
    source, target = load_embedded("toy-digits")
    split = load_digits(16)
    x, y = torch.cat([split.x_train, split.x_test]), torch.cat([split.y_train, split.y_test])
    seen: dict[int, int] = {}
    rank = []
    for label in y.tolist():
        rank.append(seen.get(label, 0))
        seen[label] = rank[-1] + 1
    even = torch.tensor(rank) % 2 == 0
    assert (source.name, target.name) == ("digits", "digits-m")
    assert len(source.labels) + len(target.labels) == 1797 and abs(len(source.labels) - len(target.labels)) <= 10
    assert set(source.labels.tolist()) == set(target.labels.tolist()) == set(range(10))
    _assert_equals_generated(source, x[even], y[even])
    _assert_equals_generated(target, make_shift(x[~even], "mnistm", seed=0), y[~even])
    check_same_classes(source, target)


def _tiny_domains(name: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {domain: (torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])) for domain in data.EMBEDDED_DOMAINS[name]}


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(data, "generate_embedded", _tiny_domains)
    real_write = data._write_domains

    def write_then_crash(root, domains):
        real_write(root, domains)
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "_write_domains", write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        embedded_root("toy-digits")
    assert list(cache_dir("slimda").iterdir()) == []
    monkeypatch.setattr(data, "_write_domains", real_write)
    source, target = load_embedded("toy-digits")
    assert len(source.labels) == len(target.labels) == 4 and source.num_classes == 4
    assert [p.name for p in cache_dir("slimda").iterdir()] == ["toy-digits"]


def test_concurrent_writer_keeps_the_first_complete_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(data, "generate_embedded", _tiny_domains)
    real_write = data._write_domains
    winner = cache_dir("slimda", "mnist-digits")

    def other_process_finishes_first(root, domains):
        real_write(root, domains)
        real_write(winner, domains)
        (winner / "COMPLETE").write_text("the other writer")

    monkeypatch.setattr(data, "_write_domains", other_process_finishes_first)
    assert embedded_root("mnist-digits") == winner
    assert (winner / "COMPLETE").read_text() == "the other writer"
    assert [p.name for p in cache_dir("slimda").iterdir()] == ["mnist-digits"]


def test_unknown_embedded_name():
    with pytest.raises(UserError, match="embedded dataset must be one of mnist-digits, toy-digits"):
        load_embedded("svhn")
