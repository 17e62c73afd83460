"""Readers of the real formats on small files written here, the synthetic dSprites and the embedded defaults."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from knowfactor import data as kd
from knowfactor.data import (
    DSPRITES_FILE,
    MultiTaskData,
    cifar10_one_vs_rest,
    digits_multitask,
    dsprites_embedded,
    load_cifar10,
    load_dsprites,
    load_image_folder,
    load_multitask,
    load_shapes3d,
    mnist_one_vs_rest,
    select_tasks,
    write_synthetic_dsprites,
)
from shared.errors import UserError

# --- CIFAR-10 pickles ---------------------------------------------------------------------------------------------


def write_cifar(folder: Path, per_batch: int = 2, key: bytes = b"labels") -> None:
    folder.mkdir(parents=True)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(files):
        data = np.zeros((per_batch, 3072), dtype=np.uint8)
        data[:, :1024] = 255  # red channel full
        data[:, 1024 + 5] = 10 * b  # one green pixel marks the batch
        labels = [(b + i) % 10 for i in range(per_batch)]
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": data, key: labels, b"batch_label": name.encode()}, f)


def test_cifar10_pickles_load(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        d = load_cifar10(root)
        assert d.x_train.shape == (10, 3, 32, 32) and d.x_test.shape == (2, 3, 32, 32)
        assert d.x_train.dtype == torch.uint8 and d.x_test.dtype == torch.float32  # train: for the train pipeline
        assert d.y_train[:, 0].tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
        assert d.y_test[:, 0].tolist() == [5, 6]
        assert torch.all(d.x_train[:, 0] == 255) and torch.all(d.x_train[:, 2] == 0)
        assert d.x_train[2, 1, 0, 5].item() == 10  # row-major (C, H, W) layout
        # test images: the release's Normalize on 0-255 values, CIFAR-10 mean and std
        assert torch.allclose(d.x_test[:, 0], torch.full((2, 32, 32), (255 - 125.307) / 51.5865))
        assert torch.allclose(d.x_test[:, 2], torch.full((2, 32, 32), -113.8575 / 51.255))
        assert (d.task_names, d.task_classes, d.pipeline.name) == (["class"], [10], "cifar10")


def test_cifar10_one_vs_rest(tmp_path):
    write_cifar(tmp_path / "c")
    d = cifar10_one_vs_rest(load_cifar10(tmp_path / "c"))
    assert d.y_train.shape == (10, 10) and d.task_classes == [2] * 10
    assert d.task_names[0] == "is_airplane"
    assert d.y_train.argmax(1).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert d.y_train.sum(1).tolist() == [1] * 10


def test_cifar_float_images_are_refused(tmp_path):
    folder = tmp_path / "c"
    write_cifar(folder)
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({b"data": np.full((2, 3072), 255.0, np.float32), b"labels": [0, 1]}, f)
    with pytest.raises(UserError, match=r"data must be uint8 0-255.*float32"):
        load_cifar10(folder)


def test_cifar100_pickle_is_refused(tmp_path):
    write_cifar(tmp_path / "c", key=b"fine_labels")
    with pytest.raises(UserError, match=r"data_batch_1 is a CIFAR-100 pickle"):
        load_cifar10(tmp_path / "c")


def test_cifar_bad_files(tmp_path):
    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "test_batch").write_text("not a pickle")
    with pytest.raises(UserError, match="test_batch is not a CIFAR python pickle"):
        load_cifar10(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3"):
        load_cifar10(tmp_path / "c")


# --- ImageFolder -------------------------------------------------------------------------------------------------


def write_folder(root: Path, split: str, colours: dict[str, tuple[int, int, int]], count: int = 2) -> None:
    for cls, colour in colours.items():
        (root / split / cls).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (12 + i, 10), colour).save(root / split / cls / f"{i}.png")


def test_image_folder_loads(tmp_path):
    write_folder(tmp_path, "train", {"red": (255, 0, 0), "blue": (0, 0, 255)}, count=3)
    write_folder(tmp_path, "test", {"red": (255, 0, 0)})
    (tmp_path / "train" / "red" / "notes.txt").write_text("ignored")
    d = load_image_folder(tmp_path)
    # train: resized to 256 (short side), centre-cropped square, uint8; test: Resize 256, CenterCrop 224, Normalize
    assert d.x_train.shape == (6, 3, 256, 256) and d.x_train.dtype == torch.uint8
    assert d.x_test.shape == (2, 3, 224, 224) and d.x_test.dtype == torch.float32
    assert d.task_classes == [2] and d.pipeline.name == "imagenet"
    assert d.y_train[:, 0].tolist() == [0, 0, 0, 1, 1, 1]  # classes sorted: blue = 0, red = 1
    assert torch.all(d.x_train[0, 2] == 255) and torch.all(d.x_train[0, 0] == 0)
    assert torch.allclose(d.x_test[:, 0], torch.full((2, 224, 224), (255 - 123.675) / 58.395))


def test_image_folder_errors(tmp_path):
    write_folder(tmp_path, "train", {"a": (1, 2, 3)})
    with pytest.raises(UserError, match="not an ImageFolder"):
        load_image_folder(tmp_path)
    write_folder(tmp_path, "val", {"a": (1, 2, 3)})
    (tmp_path / "val" / "a" / "broken.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"broken\.jpg"):
        load_image_folder(tmp_path)


# --- dSprites -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sprites(tmp_path_factory) -> Path:
    return write_synthetic_dsprites(tmp_path_factory.mktemp("dsprites") / DSPRITES_FILE, n=300, seed=0)


def test_synthetic_dsprites_file_layout(sprites):
    with np.load(sprites) as npz:
        imgs, classes, values = npz["imgs"], npz["latents_classes"], npz["latents_values"]
    assert imgs.shape == (300, 64, 64) and imgs.dtype == np.uint8 and set(np.unique(imgs)) == {0, 1}
    assert classes.shape == (300, 6) and classes.dtype == np.int64 and values.dtype == np.float64
    assert (classes[:, 0] == 0).all() and (classes[:, 1:].max(0) < [3, 6, 40, 32, 32]).all()
    assert np.allclose(values[:, 2], 0.5 + 0.1 * classes[:, 2])  # 6 scales linearly spaced in [0.5, 1]
    assert (values[:, 3] < 2 * np.pi).all() and imgs.sum(axis=(1, 2)).min() > 0
    assert [p.name for p in sprites.parent.iterdir()] == [DSPRITES_FILE]  # no temp file left behind


def test_synthetic_dsprites_shapes_differ(sprites):
    with np.load(sprites) as npz:
        area, classes = npz["imgs"].sum(axis=(1, 2)), npz["latents_classes"]
    for scale in range(6):
        mean = [area[(classes[:, 1] == s) & (classes[:, 2] == scale)].mean() for s in range(3)]
        assert mean[1] < mean[0] < mean[2]  # ellipse < square < heart at every scale
    square = area[classes[:, 1] == 0]
    assert (
        area[(classes[:, 1] == 0) & (classes[:, 2] == 5)].mean()
        > 2 * square[classes[classes[:, 1] == 0, 2] == 0].mean()
    )


def test_synthetic_dsprites_is_deterministic(tmp_path, sprites):
    again = write_synthetic_dsprites(tmp_path / "again.npz", n=300, seed=0)
    other = write_synthetic_dsprites(tmp_path / "other.npz", n=300, seed=1)
    with np.load(sprites) as a, np.load(again) as b, np.load(other) as c:
        assert np.array_equal(a["imgs"], b["imgs"]) and np.array_equal(a["latents_classes"], b["latents_classes"])
        assert not np.array_equal(a["latents_classes"], c["latents_classes"])


def test_load_dsprites_official_split(sprites):
    d = load_dsprites(sprites)
    assert d.x_train.shape == (210, 1, 64, 64) and d.x_test.shape == (90, 1, 64, 64)
    assert d.task_names == ["shape", "scale", "orientation", "posX", "posY"]
    assert d.task_classes == [3, 6, 40, 32, 32]
    assert set(torch.unique(d.x_train).tolist()) == {-1.0, 1.0}
    # the official reader: np.random.seed(42); np.random.shuffle(arange(N)); first 70% train
    index = np.arange(300)
    np.random.seed(42)
    np.random.shuffle(index)
    with np.load(sprites) as npz:
        imgs, classes = npz["imgs"], npz["latents_classes"]
    assert torch.equal(d.y_train, torch.from_numpy(classes[index[:210], 1:]))
    assert torch.equal(d.y_test, torch.from_numpy(classes[index[210:], 1:]))
    assert torch.equal(d.x_test[:, 0], torch.from_numpy(imgs[index[210:]]).float() * 2 - 1)
    assert torch.equal(load_dsprites(sprites).y_train, d.y_train)


def test_dsprites_training_batches_keep_labels_with_images(sprites):
    """The shuffled training batches of ``fit`` pair every sprite with its own factors: the sprite's centroid
    follows its posX and posY labels (a misaligned shuffle would leave no correlation)."""
    from shared.data import TensorBatchDataset, make_loader, set_epoch

    d = load_dsprites(sprites)
    loader = make_loader(TensorBatchDataset(d.x_train, d.y_train), 32, shuffle=True, seed=3, drop_last=True)
    set_epoch(loader, 1)
    images, labels = map(torch.cat, zip(*loader, strict=True))
    assert not torch.equal(labels, d.y_train[: len(labels)])  # shuffled
    on = (images[:, 0] > 0).float()
    grid = torch.arange(64) + 0.5
    cx = (on * grid).sum((1, 2)) / on.sum((1, 2))
    cy = (on * grid[:, None]).sum((1, 2)) / on.sum((1, 2))
    assert np.corrcoef(cx, labels[:, 3])[0, 1] > 0.99 and np.corrcoef(cy, labels[:, 4])[0, 1] > 0.99


def test_load_dsprites_task_subset(sprites):
    full, some = load_dsprites(sprites), load_dsprites(sprites, tasks=("posY", "shape"))
    assert some.task_classes == [32, 3] and torch.equal(some.y_train, full.y_train[:, [4, 0]])
    with pytest.raises(UserError, match="unknown dSprites task"):
        load_dsprites(sprites, tasks=("colour",))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"imgs": np.zeros((4, 8, 8), np.uint8)}, "lacks \\['latents_classes'\\]"),
        ({"imgs": np.zeros((4, 8, 6), np.uint8), "latents_classes": np.zeros((4, 6), np.int64)}, "'imgs' must be"),
        ({"imgs": np.zeros((4, 8, 8), np.uint8), "latents_classes": np.zeros((4, 5), np.int64)}, "must be \\(4, 6\\)"),
        ({"imgs": np.zeros((2, 8, 8), np.uint8), "latents_classes": np.full((2, 6), 3)}, "out of range"),
        # 0-255 images where dSprites holds 0/1 pixels: (x - 0.5)/0.5 would give values up to 509
        ({"imgs": np.full((2, 8, 8), 255.0, np.float32), "latents_classes": np.zeros((2, 6), np.int64)}, "0/1 pixels"),
    ],
)
def test_malformed_dsprites(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=message) as info:
        load_dsprites(path)
    assert str(path) in str(info.value)


def test_dsprites_not_an_npz(tmp_path):
    path = tmp_path / "fake.npz"
    path.write_text("hello")
    with pytest.raises(UserError, match=r"fake\.npz is not a readable \.npz"):
        load_dsprites(path)
    with pytest.raises(UserError, match="not found"):
        load_dsprites(tmp_path / "missing.npz")
    single = tmp_path / "imgs.npy"  # one array saved with np.save: np.load returns it, not an archive
    np.save(single, np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(UserError, match=r"imgs\.npy is a single \.npy array"):
        load_dsprites(single)


def test_dsprites_embedded_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    d = dsprites_embedded(n=300, seed=0)
    path = tmp_path / "reprozoo" / "knowfactor" / "dsprites-300-0" / DSPRITES_FILE
    assert path.is_file() and d.name == "dsprites-lite" and len(d.x_train) == 210

    def no_write(*args, **kwargs):
        raise AssertionError("the cached file should be reused")

    monkeypatch.setattr(kd, "write_synthetic_dsprites", no_write)
    assert torch.equal(dsprites_embedded(n=300, seed=0).y_test, d.y_test)


# --- Shapes3D -------------------------------------------------------------------------------------------------------


def write_shapes3d(path: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    i = np.arange(n)  # every factor takes all its classes, in an order that is not the row order
    classes = np.stack([i // 2 % 10, i * 3 % 10, i * 2 % 3, i % 8, i % 4, i % 5], axis=1)
    values = classes * 0.1 + np.array([0.0, 0.0, 0.0, 0.75, 0.0, -30.0])  # increasing in the class index
    with h5py.File(path, "w") as f:
        f["images"], f["labels"] = images, values
    return images, classes


def test_shapes3d_official_split(tmp_path):
    images, classes = write_shapes3d(tmp_path / "3dshapes.h5")
    d = load_shapes3d(tmp_path / "3dshapes.h5")
    assert d.task_names == ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
    assert d.task_classes == [len(np.unique(c)) for c in classes.T] and d.task_classes[3:] == [8, 4, 5]
    assert d.x_train.shape == (14, 3, 4, 4) and d.x_test.shape == (6, 3, 4, 4)
    assert torch.equal(d.y_train, torch.from_numpy(classes[:14]))  # first 70% rows, unshuffled
    assert torch.equal(d.y_test, torch.from_numpy(classes[14:]))
    expected = (torch.from_numpy(images[14:]).permute(0, 3, 1, 2).float() - 127) / 127
    assert torch.allclose(d.x_test, expected)


def test_shapes3d_shuffled_split(tmp_path):
    _, classes = write_shapes3d(tmp_path / "3dshapes.h5")
    d = load_shapes3d(tmp_path / "3dshapes.h5", shuffle_split=True)
    perm = np.random.RandomState(42).permutation(20)
    assert torch.equal(d.y_train, torch.from_numpy(classes[perm[:14]]))
    assert torch.equal(d.y_test, torch.from_numpy(classes[perm[14:]]))
    assert not torch.equal(d.y_train, torch.from_numpy(classes[:14]))


def test_shapes3d_errors(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["images"] = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(UserError, match=r"bad.h5 lacks datasets \['labels'\]"):
        load_shapes3d(tmp_path / "bad.h5")
    (tmp_path / "text.h5").write_text("nope")
    with pytest.raises(UserError, match=r"text\.h5 is not a readable HDF5"):
        load_shapes3d(tmp_path / "text.h5")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(UserError, match=r"pip install 'reprozoo-knowfactor\[h5\]'"):
        load_shapes3d(tmp_path / "bad.h5")


# --- embedded and task selection -------------------------------------------------------------------------------------


def test_digits_multitask_labels_follow_the_digit():
    d = digits_multitask(16)
    assert d.x_train.shape == (1442, 3, 16, 16) and d.x_test.shape == (355, 3, 16, 16)
    assert d.task_names == ["digit", "parity", "ge5", "prime", "loops"] and d.task_classes == [10, 2, 2, 2, 3]
    assert torch.equal(d.x_train[:, 0], d.x_train[:, 2]) and d.x_train.min() >= -1 and d.x_train.max() <= 1
    assert d.x_train.min() < -0.9 and d.x_train.max() > 0.9
    for y in (d.y_train, d.y_test):
        digit = y[:, 0]
        assert torch.equal(y[:, 1], digit % 2)
        assert torch.equal(y[:, 2], (digit >= 5).long())
        assert torch.equal(y[:, 3], torch.isin(digit, torch.tensor([2, 3, 5, 7])).long())
    table = {int(a): int(b) for a, b in torch.unique(d.y_train[:, [0, 4]], dim=0)}
    assert table == {1: 0, 2: 0, 3: 0, 5: 0, 7: 0, 0: 1, 4: 1, 6: 1, 9: 1, 8: 2}


def test_mnist_one_vs_rest():
    d = mnist_one_vs_rest(28)
    assert d.x_train.shape == (4000, 3, 28, 28) and d.y_train.shape == (4000, 11)
    assert d.task_names[:2] == ["digit", "is_0"] and d.task_classes == [10] + [2] * 10
    assert torch.equal(d.y_test[:, 1:].argmax(1), d.y_test[:, 0]) and torch.all(d.y_test[:, 1:].sum(1) == 1)


def test_select_tasks():
    y = torch.tensor([[1, 0, 2], [0, 1, 1]])
    d = MultiTaskData("toy", torch.zeros(2, 1), y, torch.zeros(2, 1), y, ["a", "b", "c"], [2, 2, 3])
    picked = select_tasks(d, ["c", "a"])
    assert picked.task_names == ["c", "a"] and picked.task_classes == [3, 2]
    assert picked.y_train.tolist() == [[2, 1], [1, 0]]
    with pytest.raises(UserError, match=r"unknown task\(s\) \['z'\].*\['a', 'b', 'c'\]"):
        select_tasks(d, ["a", "z"])
    with pytest.raises(UserError, match="distinct"):
        select_tasks(d, ["a", "a"])


# --- by name: a setting's dataset ----------------------------------------------------------------------------------


def test_load_multitask_reads_selects_and_resizes(sprites):
    data = load_multitask("dsprites", sprites, tasks=("scale", "shape"), image_size=32)
    full = load_dsprites(sprites)
    assert data.task_names == ["scale", "shape"] and torch.equal(data.y_test, full.y_test[:, [1, 0]])
    assert data.x_train.shape == (210, 1, 32, 32)
    assert torch.allclose(data.x_train, torch.nn.functional.avg_pool2d(full.x_train, 2))  # area = 2x2 mean


@pytest.mark.parametrize(
    ("dataset", "path", "message"),
    [
        ("cifar10", None, "needs --data"),
        ("imagenet", None, "needs --data"),
        ("digits", Path("digits.npz"), "embedded"),
        ("svhn", None, "unknown dataset"),
    ],
)
def test_load_multitask_refuses(dataset, path, message):
    with pytest.raises(UserError, match=message):
        load_multitask(dataset, path)
