"""CIFAR pickle reader/writer, the embedded datasets, and the Clothing1M/WebVision list readers."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lcbooster.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    ImageList,
    ImageListDataset,
    embedded_dataset,
    load_cifar,
    load_clothing1m,
    load_embedded,
    load_images,
    load_webvision,
    write_cifar_pickles,
)
from shared.data import load_digits, load_mnist5k
from shared.errors import UserError


def _images(n: int, shape=(3, 32, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _user_error(call) -> str:
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture
def cifar10(tmp_path):
    x_train, x_test = _images(20), _images(6, seed=1)
    y_train, y_test = np.arange(20) % 10, np.array([3, 1, 4, 1, 5, 9])
    names = [f"class{i}" for i in range(10)]
    folder = write_cifar_pickles(tmp_path, x_train, y_train, x_test, y_test, class_names=names)
    return folder, x_train, y_train, x_test, y_test, names


def test_cifar10_round_trip(cifar10, tmp_path):
    folder, x_train, y_train, x_test, y_test, names = cifar10
    assert folder == tmp_path / "cifar-10-batches-py"
    for root in (tmp_path, folder):
        data = load_cifar(root, "cifar10")
        assert data.name == "cifar10" and data.num_classes == 10 and data.class_names == tuple(names)
        assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (20, 3, 32, 32)
        assert torch.equal(data.x_train, torch.from_numpy(x_train)) and torch.equal(
            data.x_test, torch.from_numpy(x_test)
        )
        assert data.y_train.dtype == torch.int64 and data.y_train.tolist() == y_train.tolist()
        assert data.y_test.tolist() == y_test.tolist()
        assert data.mean == CIFAR10_MEAN and data.std == CIFAR10_STD and data.flip
    for i in range(5):  # the real layout: 5 consecutive chunks, CIFAR's pixel order (1024 R, 1024 G, 1024 B)
        with (folder / f"data_batch_{i + 1}").open("rb") as handle:
            batch = pickle.load(handle)
        assert set(batch) == {"data", "labels", "filenames", "batch_label"}
        assert np.array_equal(batch["data"], x_train[4 * i : 4 * i + 4].reshape(4, 3072))
        assert batch["labels"] == y_train[4 * i : 4 * i + 4].tolist()
    with (folder / "batches.meta").open("rb") as handle:
        assert "image_shape" not in pickle.load(handle)


def test_cifar_reader_accepts_bytes_keys_and_latin1_pickles(tmp_path):
    """Pickles as the real Python 2 files decode with encoding='bytes': keys and class names as bytes."""
    x, y = _images(10), np.arange(10)
    folder = write_cifar_pickles(tmp_path, x, y, x[:2], y[:2])
    for path in folder.iterdir():
        with path.open("rb") as handle:
            obj = pickle.load(handle)
        obj = {k.encode(): ([n.encode() for n in v] if k == "label_names" else v) for k, v in obj.items()}
        path.write_bytes(pickle.dumps(obj, protocol=2))
    data = load_cifar(tmp_path)
    assert torch.equal(data.x_train, torch.from_numpy(x)) and data.class_names == tuple(str(i) for i in range(10))


def test_cifar100_round_trip(tmp_path):
    x_train, x_test = _images(20), _images(5, seed=2)
    y_train, y_test = np.arange(20) * 5, np.array([99, 0, 42, 7, 7])
    folder = write_cifar_pickles(tmp_path, torch.from_numpy(x_train), y_train, x_test, y_test, kind="cifar100")
    assert folder.name == "cifar-100-python"
    data = load_cifar(tmp_path)
    assert data.name == "cifar100" and data.num_classes == 100 and data.mean == CIFAR100_MEAN
    assert torch.equal(data.x_train, torch.from_numpy(x_train)) and data.y_train.tolist() == y_train.tolist()
    assert torch.equal(data.x_test, torch.from_numpy(x_test)) and data.y_test.tolist() == y_test.tolist()
    with (folder / "train").open("rb") as handle:
        batch = pickle.load(handle)
    assert batch["coarse_labels"] == (y_train // 5).tolist() and "labels" not in batch


def test_non_standard_shape_and_statistics(tmp_path):
    x_train, x_test = _images(12, (1, 8, 8)), _images(3, (1, 8, 8), seed=1)
    folder = write_cifar_pickles(
        tmp_path, x_train, np.arange(12) % 4, x_test, np.arange(3), class_names="abcd", mean=(0.25,), std=(0.5,)
    )
    with (folder / "batches.meta").open("rb") as handle:
        assert pickle.load(handle)["image_shape"] == (1, 8, 8)
    data = load_cifar(folder)
    assert data.x_train.shape == (12, 1, 8, 8) and torch.equal(data.x_train, torch.from_numpy(x_train))
    assert data.mean == (0.25,) and data.std == (0.5,) and data.class_names == ("a", "b", "c", "d")
    assert data.num_classes == 4


def test_wrong_kind_and_missing_folder(cifar10, tmp_path):
    other = tmp_path / "c100"
    write_cifar_pickles(other, _images(5), np.arange(5), _images(2), np.arange(2), kind="cifar100")
    message = _user_error(lambda: load_cifar(other, "cifar10"))
    assert "holds CIFAR-100 pickles, not the CIFAR-10 of this run" in message
    assert "not the CIFAR-100 of this run" in _user_error(lambda: load_cifar(tmp_path, "cifar100"))
    assert "not found" in _user_error(lambda: load_cifar(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    assert "cifar-10-batches-py" in _user_error(lambda: load_cifar(tmp_path / "empty"))


def test_missing_batch(cifar10):
    folder = cifar10[0]
    (folder / "data_batch_3").unlink()
    assert "data_batch_3" in _user_error(lambda: load_cifar(folder))


def _write_batch(folder, name, obj) -> None:
    (folder / name).write_bytes(pickle.dumps(obj))


def test_corrupt_batches(cifar10):
    folder = cifar10[0]
    (folder / "data_batch_2").write_bytes(b"\x80\x04 definitely not a pickle \x00\xff" * 3)
    assert "data_batch_2" in _user_error(lambda: load_cifar(folder))
    rows = np.zeros((4, 3072), np.uint8)
    cases = [
        ([1, 2, 3], "data_batch_2 holds a list"),
        ({"data": rows}, "data_batch_2 is not a CIFAR-10 batch"),
        ({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, "rows of 3072 values"),
        ({"data": rows.astype(np.int64), "labels": [0] * 4}, "expected uint8"),
        ({"data": rows, "labels": [0] * 3}, "3 labels for 4 images"),
        ({"data": rows, "labels": [0, 1, 2, 10]}, "training labels outside [0, 10)"),
    ]
    for obj, fragment in cases:
        _write_batch(folder, "data_batch_2", obj)
        assert fragment in _user_error(lambda: load_cifar(folder))


class _Exploit:
    def __init__(self, path) -> None:
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch '{self.path}'",)


def test_pickle_with_foreign_global_is_refused_without_running(cifar10, tmp_path):
    folder, sentinel = cifar10[0], tmp_path / "pwned"
    _write_batch(folder, "data_batch_1", {"data": _Exploit(sentinel), "labels": []})
    assert ".system, which a CIFAR pickle never holds" in _user_error(lambda: load_cifar(folder))
    assert not sentinel.exists()
    with (folder / "data_batch_1").open("rb") as handle:  # the payload is live: a plain unpickler runs it
        pickle.load(handle)
    assert sentinel.exists()


def test_embedded_digits_written_once_and_read_back():
    folder = embedded_dataset("digits")
    assert folder.name == "cifar-10-batches-py" and (folder.parent / "COMPLETE").is_file()
    data = load_embedded("digits")
    split = load_digits()
    assert data.name == "digits" and not data.flip and data.num_classes == 10
    assert data.x_train.shape == (1442, 1, 8, 8) and data.x_test.shape == (355, 1, 8, 8)
    assert torch.equal(data.x_train, (split.x_train * 255).round().to(torch.uint8))
    assert torch.equal(data.x_test, (split.x_test * 255).round().to(torch.uint8))
    assert torch.equal(data.y_train, split.y_train) and torch.equal(data.y_test, split.y_test)
    assert data.class_names == tuple(str(i) for i in range(10))
    assert data.mean[0] == pytest.approx(data.x_train.double().mean().item() / 255)
    assert data.std[0] == pytest.approx(data.x_train.double().std(correction=0).item() / 255)
    stamps = {path: path.stat().st_mtime_ns for path in folder.iterdir()}
    assert embedded_dataset("digits") == folder
    assert {path: path.stat().st_mtime_ns for path in folder.iterdir()} == stamps


def test_embedded_rewrites_an_interrupted_tree():
    folder = embedded_dataset("digits")
    (folder.parent / "COMPLETE").unlink()
    (folder / "data_batch_4").write_bytes(b"half written")
    assert embedded_dataset("digits") == folder
    assert load_embedded("digits").x_train.shape == (1442, 1, 8, 8)


def test_embedded_mnist5k():
    data = load_embedded("mnist5k")
    split = load_mnist5k()
    assert data.name == "mnist5k" and not data.flip
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert torch.equal(data.x_train, (split.x_train * 255).round().to(torch.uint8))
    assert torch.equal(data.y_test, split.y_test)
    assert "mnist5k, digits" in _user_error(lambda: embedded_dataset("cifar10"))


def test_load_images_picks_the_reader(cifar10):
    folder = cifar10[0]
    assert "needs --data" in _user_error(lambda: load_images("cifar10"))
    data = load_images("cifar10", folder.parent)
    assert data.name == "cifar10" and data.flip and len(data.x_train) == 20
    other = load_images("digits", folder)  # CIFAR-style pickles of another dataset: read, never flipped
    assert not other.flip and torch.equal(other.x_train, data.x_train)
    assert load_images("digits").x_train.shape == (1442, 1, 8, 8)


def _save_image(path, size=(12, 10), color=(200, 30, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def clothing(tmp_path):
    files = {
        "noisy_label_kv.txt": "images/0/00/a.jpg 3\nimages/0/01/b.jpg 13\n\nimages/1/00/c.jpg 0\n",
        "clean_label_kv.txt": "images/2/00/d.jpg 5\nimages/2/01/e.jpg 7\nimages/0/00/a.jpg 4\n",
        "noisy_train_key_list.txt": "images/1/00/c.jpg\nimages/0/00/a.jpg\n",
        "clean_val_key_list.txt": "images/2/01/e.jpg\n",
        "clean_test_key_list.txt": "images/2/00/d.jpg\nimages/0/00/a.jpg\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for name in ("0/00/a.jpg", "0/01/b.jpg", "1/00/c.jpg", "2/00/d.jpg", "2/01/e.jpg"):
        _save_image(tmp_path / "images" / name)
    return tmp_path


def test_clothing1m_lists(clothing):
    lists = load_clothing1m(clothing)
    assert lists["train"].paths == ["images/1/00/c.jpg", "images/0/00/a.jpg"]
    assert lists["train"].labels.tolist() == [0, 3] and lists["train"].labels.dtype == np.int64
    assert lists["val"].paths == ["images/2/01/e.jpg"] and lists["val"].labels.tolist() == [7]
    assert lists["test"].labels.tolist() == [5, 4] and lists["test"].root == clothing
    for image_list in lists.values():
        image_list.require_images()

    (clothing / "images/0/00/a.jpg").unlink()
    message = _user_error(lambda: lists["test"].require_images())
    assert "1 of 2" in message and "images/0/00/a.jpg" in message and "clean_test_key_list.txt" in message

    (clothing / "clean_val_key_list.txt").write_text("images/2/01/e.jpg\nimages/9/zz.jpg\n")
    assert "images/9/zz.jpg" in _user_error(lambda: load_clothing1m(clothing))
    (clothing / "noisy_label_kv.txt").write_text("images/0/00/a.jpg 3\n\nimages/0/01/b.jpg three\n")
    message = _user_error(lambda: load_clothing1m(clothing))
    assert "noisy_label_kv.txt:3" in message and "three" in message
    (clothing / "clean_test_key_list.txt").unlink()
    assert "clean_test_key_list.txt" in _user_error(lambda: load_clothing1m(clothing))


def test_missing_images_listing_is_limited(tmp_path):
    image_list = ImageList(tmp_path, [f"img{i}.png" for i in range(8)], np.zeros(8, dtype=np.int64))
    message = _user_error(lambda: image_list.require_images(limit=3))
    assert "8 of 8" in message and "img2.png" in message and "img3.png" not in message


def test_webvision_lists(tmp_path):
    (tmp_path / "info").mkdir()
    (tmp_path / "info/train_filelist_google.txt").write_text(
        "google/q0001/000.jpg 0\ngoogle/q0050/000.jpg 49\ngoogle/q0051/000.jpg 50\ngoogle/q0999/000.jpg 998\n"
    )
    (tmp_path / "info/val_filelist.txt").write_text("val000001.jpg 12\nval000002.jpg 700\n")
    lists = load_webvision(tmp_path)
    assert lists["train"].paths == ["google/q0001/000.jpg", "google/q0050/000.jpg"]
    assert lists["train"].labels.tolist() == [0, 49]
    assert lists["val"].paths == ["val_images_256/val000001.jpg"] and lists["val"].labels.tolist() == [12]
    assert len(load_webvision(tmp_path, num_classes=1000)["train"]) == 4
    message = _user_error(lambda: lists["val"].require_images())
    assert "info/val_filelist.txt" in message and "val_images_256/val000001.jpg" in message
    _save_image(tmp_path / "val_images_256/val000001.jpg")
    lists["val"].require_images()
    (tmp_path / "info/val_filelist.txt").write_text("val000001.jpg\n")
    assert "val_filelist.txt:1" in _user_error(lambda: load_webvision(tmp_path))


def test_image_list_dataset(tmp_path):
    stripes = np.zeros((10, 30, 3), dtype=np.uint8)
    stripes[:, :10, 0] = 255
    stripes[:, 10:20, 1] = 255
    stripes[:, 20:, 2] = 255
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    _save_image(tmp_path / "gray.png", size=(40, 64), color=(90, 90, 90))
    Image.new("L", (20, 20), 17).save(tmp_path / "mono.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths = ["stripes.png", "gray.png", "mono.jpg", "broken.jpg"]
    dataset = ImageListDataset(ImageList(tmp_path, paths, np.zeros(4, dtype=np.int64)), size=10)
    assert len(dataset) == 4
    image, index = dataset[0]
    assert image.shape == (3, 10, 10) and image.dtype == torch.uint8 and index == 0
    assert image[1].min() == 255 and image[0].max() == 0 and image[2].max() == 0  # the center crop is the middle
    image, index = dataset[1]
    assert image.shape == (3, 10, 10) and index == 1 and torch.all((image.int() - 90).abs() <= 1)
    image, _ = dataset[2]
    assert image.shape == (3, 10, 10) and torch.all((image.int() - 17).abs() <= 2)  # grey converted to RGB
    assert "broken.jpg" in _user_error(lambda: dataset[3])
