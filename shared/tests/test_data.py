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
