import importlib.util

import pytest
import torch

from shared import data
from shared.errors import UserError


def test_mnist5k_shapes_split_and_classes():
    mnist = data.load_mnist5k()
    assert mnist.x_train.shape == (4000, 1, 28, 28) and mnist.x_test.shape == (1000, 1, 28, 28)
    assert mnist.x_train.dtype == torch.float32 and mnist.y_train.dtype == torch.int64
    assert mnist.num_classes == 10
    assert torch.bincount(mnist.y_train).tolist() == [400] * 10
    assert torch.bincount(mnist.y_test).tolist() == [100] * 10
    assert mnist.x_train.min() == 0 and mnist.x_train.max() == 1
    assert mnist.y_train[:10].tolist() == list(range(10))  # interleaved, not sorted by class


def test_digits_shapes_split_and_resize():
    digits = data.load_digits()
    assert digits.x_train.shape == (1442, 1, 8, 8) and digits.x_test.shape == (355, 1, 8, 8)
    assert digits.num_classes == 10
    assert len(torch.bincount(digits.y_test)) == 10 and torch.bincount(digits.y_test).min() >= 34
    assert digits.x_train.max() == 1 and digits.x_train.min() == 0
    big = data.load_digits(size=32)
    assert big.x_train.shape == (1442, 1, 32, 32) and torch.equal(big.y_test, digits.y_test)
    assert big.x_train.min() >= 0 and big.x_train.max() <= 1


def test_split_is_fixed_and_disjoint():
    a, b = data.load_digits(), data.load_digits()
    assert torch.equal(a.x_test, b.x_test)
    train = {tuple(row.tolist()) for row in a.x_train.flatten(1)}
    overlap = sum(tuple(row.tolist()) in train for row in a.x_test.flatten(1))
    assert overlap < 5  # UCI digits has a handful of identical 8x8 images across writers


def test_background_images():
    images = data.load_background_images(size=48)
    assert set(images) == set(data.BACKGROUND_IMAGES)
    for image in images.values():
        assert image.shape == (3, 48, 48) and image.min() >= 0 and image.max() <= 1 and image.std() > 0.02
    with pytest.raises(UserError, match="unknown background"):
        data.load_background_images(["marble"])


def test_missing_data_extra_is_a_clear_error(monkeypatch):
    data._mnist5k_arrays.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"reprozoo-shared\[data\]"):
        data.load_mnist5k()
    monkeypatch.undo()
    data._mnist5k_arrays.cache_clear()


def _batches(loader, epoch):
    data.set_epoch(loader, epoch)
    return [x.squeeze(1).tolist() for x, _ in loader]


def test_loader_order_depends_only_on_seed_and_epoch():
    dataset = data.TensorBatchDataset(torch.arange(20.0)[:, None], torch.arange(20))
    a = data.make_loader(dataset, 6, shuffle=True, seed=1)
    b = data.make_loader(dataset, 6, shuffle=True, seed=1)
    assert _batches(a, 0) == _batches(b, 0)
    assert _batches(a, 1) != _batches(a, 0)
    assert _batches(a, 3) == _batches(b, 3)  # no hidden state carried between epochs
    assert sorted(v for batch in _batches(a, 2) for v in batch) == list(range(20))
    assert [len(batch) for batch in _batches(a, 0)] == [6, 6, 6, 2]
    plain = data.make_loader(dataset, 6, shuffle=False)
    assert _batches(plain, 0)[0] == [0, 1, 2, 3, 4, 5]


def test_loader_with_workers_gives_the_same_batches():
    dataset = data.TensorBatchDataset(torch.arange(12.0)[:, None], torch.arange(12))
    zero = data.make_loader(dataset, 5, shuffle=True, seed=4)
    one = data.make_loader(dataset, 5, shuffle=True, seed=4, workers=1)
    assert _batches(zero, 2) == _batches(one, 2)


def test_loader_shards_across_ranks(monkeypatch):
    dataset = data.TensorBatchDataset(torch.arange(16.0)[:, None], torch.arange(16))
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append([v for batch in _batches(data.make_loader(dataset, 4, shuffle=True, seed=0), 0) for v in batch])
    assert len(seen[0]) == len(seen[1]) == 8
    assert sorted(seen[0] + seen[1]) == list(range(16))
    whole = data.make_loader(dataset, 4, shuffle=False, shard=False)  # still RANK=1 of 2
    assert [v for batch in _batches(whole, 0) for v in batch] == list(range(16))


def test_bad_loader_options():
    dataset = data.TensorBatchDataset(torch.zeros(4, 1))
    with pytest.raises(UserError, match="batch size"):
        data.make_loader(dataset, 0)
    with pytest.raises(UserError, match="workers"):
        data.make_loader(dataset, 2, workers=-1)


# --- image files ----------------------------------------------------------------------------------------------


def _png(path, value, size=(6, 4), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


def test_list_image_folder_labels_by_sorted_class_and_skips_non_images(tmp_path):
    _png(tmp_path / "cat" / "b.png", (10, 20, 30))
    _png(tmp_path / "cat" / "nested" / "a.JPG", (1, 2, 3))
    _png(tmp_path / "ant" / "x.png", (5, 5, 5))
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    items, classes = data.list_image_folder(tmp_path)
    assert classes == ["ant", "cat"]
    assert [(p.relative_to(tmp_path).as_posix(), label) for p, label in items] == [
        ("ant/x.png", 0),
        ("cat/b.png", 1),
        ("cat/nested/a.JPG", 1),
    ]
    # a test split gets the train split's labels, and a class it lacks has no images
    items, classes = data.list_image_folder(tmp_path, classes=["bee", "cat"])
    assert classes == ["bee", "cat"] and {label for _, label in items} == {1}


def test_list_image_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(UserError, match="holds no images in class folders"):
        data.list_image_folder(tmp_path)
    with pytest.raises(UserError, match="not found"):
        data.list_image_folder(tmp_path / "absent")


def test_open_image_and_read_images(tmp_path):
    first = _png(tmp_path / "a.png", (255, 0, 0), size=(8, 8))
    second = _png(tmp_path / "b.png", 128, size=(4, 4), mode="L")
    assert data.open_image(second).mode == "RGB" and data.open_image(first, "L").mode == "L"
    rgb = data.read_images([first, second], size=8)
    assert rgb.shape == (2, 3, 8, 8) and rgb.dtype == torch.uint8
    assert rgb[0, :, 0, 0].tolist() == [255, 0, 0] and rgb[1].unique().tolist() == [128]
    gray = data.read_images([first, second], size=4, mode="L", workers=1)
    assert gray.shape == (2, 1, 4, 4)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UserError, match=r"cannot read image .*broken\.jpg .*: delete or replace the file"):
        data.read_images([first, broken], size=8)
    with pytest.raises(UserError, match="no images"):
        data.read_images([], size=8)


def test_read_image_list_and_missing_images(tmp_path):
    _png(tmp_path / "images" / "with space.png", (0, 0, 0))
    listing = tmp_path / "list.txt"
    listing.write_text("images/with space.png 3\n\nimages/absent.png 0\n")
    items = data.read_image_list(listing)
    assert items == [("images/with space.png", 3), ("images/absent.png", 0)]
    with pytest.raises(UserError, match=r"1 of 2 images listed in list\.txt are missing .*images/absent\.png"):
        data.require_images(tmp_path, [p for p, _ in items], "list.txt")
    data.require_images(tmp_path, [items[0][0]], "list.txt")
    listing.write_text("images/a.png three\n")
    with pytest.raises(UserError, match=r"list\.txt:1 is not 'relative/path\.jpg <label>'"):
        data.read_image_list(listing)
    listing.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="not UTF-8"):
        data.read_image_list(listing)


def test_image_file_dataset_decodes_on_access(tmp_path):
    items, classes = data.list_image_folder(_png(tmp_path / "c0" / "a.png", (9, 9, 9)).parents[1])
    dataset = data.ImageFileDataset(items, classes, transform=lambda image: image.size)
    assert len(dataset) == 1 and dataset[0] == ((6, 4), 0) and dataset.targets == [0] and dataset.classes == ["c0"]
