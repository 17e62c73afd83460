"""lcbooster-bench --transforms: the per-sample references it times the batched augmentations against."""

import pytest
import torch

from lcbooster import cli
from lcbooster.bench import AUGMENTATIONS, auto_augment_cifar_per_sample, rand_augment_mc_per_sample, torchvision_op
from shared.errors import UserError


def _images(b=64, c=3, size=32):
    return torch.randint(0, 256, (b, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("per_sample", "low"), [(rand_augment_mc_per_sample, 0.5), (auto_augment_cifar_per_sample, 0.3)]
)
def test_per_sample_references_are_seeded_and_change_most_images(per_sample, low):
    x = _images()
    a = per_sample(x, generator=torch.Generator().manual_seed(4))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, per_sample(x, generator=torch.Generator().manual_seed(4)))
    changed = (a != x).flatten(1).any(1).float().mean()
    assert low < changed < 1.0  # as the batched forms: some samples draw no op (or Identity) at all
    assert per_sample(_images(4, 1, 28)).shape == (4, 1, 28, 28)


def test_torchvision_op_refuses_an_unknown_op():
    with pytest.raises(ValueError, match="Blur"):
        torchvision_op(_images(1)[0], "Blur")


def test_bench_transforms_times_both_forms(capsys):
    argv = ["--transforms", "--batch-size", "4", "--image-size", "16", "--rounds", "1", "--device", "cpu"]
    result = cli.bench_command(argv)
    assert [row["augmentation"] for row in result["rows"]] == list(AUGMENTATIONS)
    assert all(row["batched_ms"] > 0 and row["per_sample_ms"] > 0 for row in result["rows"])
    assert result["batch"] == "4x3x16x16"
    assert "| RandAugmentMC(2, 10)" in capsys.readouterr().out
    with pytest.raises(UserError, match="--rounds"):
        cli.bench_command([*argv, "--rounds", "0"])
