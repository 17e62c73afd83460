"""The release's input pipelines: CIFAR-10 crop/flip/normalise, ImageNet crops and Mixup, applied when training."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from knowfactor import cli, engine
from knowfactor.config import CONFIGS
from knowfactor.losses import label_smooth_ce
from knowfactor.transforms import PIPELINES, _random_crop
from shared.cli import main

CIFAR = PIPELINES["cifar10"]
MEAN, STD = torch.tensor(CIFAR.mean).view(3, 1, 1), torch.tensor(CIFAR.std).view(3, 1, 1)


def test_cifar_train_batch_pads_crops_flips_and_normalises():
    torch.manual_seed(0)
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    x[..., :16] = 255  # left half brighter: a flip moves it right
    out, labels = CIFAR.train_batch(x, torch.zeros(64, 1, dtype=torch.long), [10])
    assert out.dtype == torch.float32 and out.shape == x.shape and labels.shape == (64, 1)
    pad, bright, dim = ((torch.tensor(v, dtype=torch.float32) - MEAN) / STD for v in (0, 255, 200))
    values = {round(float(v), 4) for v in out[:, 0].unique()}
    assert values <= {round(float(v), 4) for v in (pad[0], bright[0], dim[0])}
    # the zero padding (normalised) shows at the borders of most images: random offsets in -4..4
    padded = torch.isclose(out[:, 0], pad[0].expand(32, 32)).flatten(1).any(1)
    assert 0.7 < padded.float().mean() < 1.0
    # about half of the images are flipped: the bright half on the right
    right = torch.isclose(out[:, 0, 16, 20], bright[0])
    assert 0.25 < right.float().mean() < 0.75
    test = CIFAR.normalise(x)
    assert torch.allclose(test[:, :, :, 20], ((200 - MEAN[:, :, 0]) / STD[:, :, 0]).expand(64, 3, 32))


def test_random_crop_is_each_image_padded_then_cropped_at_its_offset():
    x = torch.randint(0, 256, (5, 3, 8, 6), dtype=torch.uint8)
    torch.manual_seed(3)
    out = _random_crop(x, 2)
    torch.manual_seed(3)
    offsets = torch.randint(0, 5, (5, 2))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    expected = torch.stack([p[:, i : i + 8, j : j + 6] for p, (i, j) in zip(padded, offsets.tolist(), strict=True)])
    assert out.dtype == torch.uint8 and torch.equal(out, expected)
    assert len({tuple(o) for o in offsets.tolist()}) > 1  # the offsets differ between images


def test_imagenet_train_batch_crops_to_224_and_mixes_labels():
    torch.manual_seed(0)
    imagenet = dataclasses.replace(PIPELINES["imagenet"], mixup_prob=1.0)
    x = torch.randint(0, 256, (4, 3, 256, 256), dtype=torch.uint8)
    labels = torch.tensor([[0, 1], [1, 0], [2, 1], [3, 0]])
    out, targets = imagenet.train_batch(x, labels, [4, 2])
    assert out.shape == (4, 3, 224, 224) and out.dtype == torch.float32
    assert [t.shape for t in targets] == [(4, 4), (4, 2)]
    assert all(torch.allclose(t.sum(1), torch.ones(4)) for t in targets)
    lam = targets[0][torch.arange(4), labels[:, 0]]
    assert (lam < 1).any()  # soft labels: the batch was mixed
    # the smoothed cross-entropy of soft labels is the λ-mix of the two labels' losses (mmcls BatchMixup)
    logits, a, b = torch.randn(4, 4), labels[:, 0], labels[:, 0].flip(0)
    soft = 0.3 * torch.nn.functional.one_hot(a, 4) + 0.7 * torch.nn.functional.one_hot(b, 4)
    expected = 0.3 * label_smooth_ce(logits, a) + 0.7 * label_smooth_ce(logits, b)
    assert torch.allclose(label_smooth_ce(logits, soft.float()), expected)
    no_mix = dataclasses.replace(imagenet, mixup_prob=0.0)
    assert torch.equal(no_mix.train_batch(x, labels, [4, 2])[1], labels)


def write_cifar_images(folder: Path, n_train: int = 32, n_test: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train // 5 + 1
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": data, b"labels": rng.integers(0, 10, n).tolist()}, f)


def test_cifar_pickles_train_with_the_release_pipeline(tmp_path, monkeypatch):
    """A teacher run on official-layout CIFAR-10 pickles: the network sees normalised, cropped and flipped images,
    and config.json records the pipeline."""
    write_cifar_images(tmp_path / "cifar-10-batches-py")
    seen, original = [], engine.train_epoch

    def record_inputs(*args, augment, **kwargs):
        def spy(images, labels):
            out = augment(images, labels)
            seen.append((images.clone(), out[0].clone()))
            return out

        return original(*args, augment=spy, **kwargs)

    monkeypatch.setattr(engine, "train_epoch", record_inputs)
    argv = ["--method", "teacher", "--config", "cifar10_wrn28_2_to_wrn28_2", "--data", tmp_path, "--epochs", "1"]
    argv += ["--batch-size", "12", "--device", "cpu", "--quiet", "--out", tmp_path / "run"]
    assert main(cli.train_command)([str(a) for a in argv]) == 0
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["pipeline"] == json.loads(json.dumps(CIFAR.record())) and record["pipeline"]["crop_padding"] == 4
    raw, fed = seen[0]
    assert raw.dtype == torch.uint8 and fed.dtype == torch.float32
    assert not torch.allclose(fed, CIFAR.normalise(raw))  # augmented, not only normalised
    assert -2.5 < fed.min() < -2 and 2.5 < fed.max() < 2.8  # (0 - mean)/std .. (255 - mean)/std, not 0-255 or 0-1


@pytest.mark.parametrize("name", ["dsprites", "shapes3d", "mnist", "digits"])
def test_reader_normalised_datasets_pass_through(name):
    x = torch.randn(4, 1, 8, 8)
    out, labels = PIPELINES[name].train_batch(x, torch.zeros(4, 2, dtype=torch.long), [2, 2])
    assert out is x and labels.shape == (4, 2)


# --- an mmcls-layout teacher checkpoint against the release's model (fixtures/README.md) -------------------------

GOLDEN = Path(__file__).parent / "fixtures" / "wrn_teacher_golden.pt"


def test_mmcls_teacher_checkpoint_gives_the_release_logits(tmp_path, monkeypatch):
    """The release's WideResNet_CIFAR teacher (depth 10, widen 1) on CIFAR-10 pickle rows through its test pipeline:
    our reader, normalisation and load-by-name give its logits."""
    golden = torch.load(GOLDEN, weights_only=True)
    rows, logits = golden["cifar_rows"].numpy(), golden["logits"]
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": rows, b"labels": [0] * len(rows)}, f)
    checkpoint = tmp_path / "teacher.pth"
    torch.save({"meta": {}, "state_dict": golden["state_dict"]}, checkpoint)  # an mmcv checkpoint
    small = dataclasses.replace(
        CONFIGS["cifar10_wrn28_2_to_r18"], backbone_kwargs={"teacher": {"depth": 10, "widen": 1}}
    )
    monkeypatch.setitem(CONFIGS, "cifar10_wrn10_1", small)
    data = engine.load_data("cifar10_wrn10_1", tmp_path)
    teacher = engine.load_teacher(checkpoint, "cifar10_wrn10_1", [10])
    with torch.no_grad():
        (ours,) = teacher(data.x_test)
        (unnormalised,) = teacher(data.x_train[: len(rows)].float() / 255)
    assert torch.allclose(ours, logits, atol=1e-5, rtol=0), (ours - logits).abs().max()
    assert not torch.allclose(unnormalised, logits, atol=1e-3)  # the test sees the normalisation
