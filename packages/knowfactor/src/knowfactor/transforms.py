"""Per-dataset input pipelines as the release's mmcls dataset configs define them, on in-memory batches.

github.com/Adamdad/KnowledgeFactor, ``cls/configs/_base_/datasets/``: CIFAR-10 (``cifar10_bs128.py``) normalises
the 0-255 pixels with the dataset mean/std and trains with RandomCrop 32 (padding 4) and a horizontal flip;
ImageNet (``imagenet_bs32_randaug.py``) trains with RandomResizedCrop 224, a flip and RandAugment, then
normalises, tests with Resize 256 (short side) and CenterCrop 224, and the KF configs mix batches (BatchMixup,
α 0.1, probability 0.5). dSprites and 3dshapes are normalised by their readers ((x − 0.5)/0.5 and
(x − 127)/127, ``disentangle_data/``) and not augmented.

A reader stores the training split as the :meth:`Pipeline.train_batch` of its dataset takes it (raw uint8 pixels
where the pipeline normalises) and the test split ready for the network (the test pipeline applied).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

RANDAUGMENT_BINS = 31  # torchvision: level m of the release's 10 is m * 3 of 30; bilinear (bicubic: PIL only)


@dataclass(frozen=True)
class Pipeline:
    """What the release does to an image before the network; None / 0 / False: the step is absent."""

    name: str
    mean: tuple[float, ...] | None = None  # Normalize on 0-255 pixels (None: the reader normalises)
    std: tuple[float, ...] | None = None
    crop_padding: int | None = None  # train: RandomCrop to the image size after zero padding
    flip: bool = False  # train: RandomFlip, horizontal, probability 0.5
    resized_crop: int | None = None  # train: RandomResizedCrop to this size (scale 0.08-1, ratio 3/4-4/3)
    randaugment: tuple[int, int] | None = None  # train: RandAugment (operations, magnitude level of 10)
    mixup_alpha: float = 0.0  # train: BatchMixup with λ ~ Beta(α, α) ...
    mixup_prob: float = 0.0  # ... on this fraction of the batches
    test_resize: int | None = None  # test: Resize, short side
    test_crop: int | None = None  # test: CenterCrop

    def record(self) -> dict:
        """The pipeline as ``config.json`` records it."""
        return dataclasses.asdict(self)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize (float32); identity where the reader normalises."""
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float() - mean) / std

    def train_batch(
        self, x: torch.Tensor, labels: torch.Tensor, task_classes: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor | list[torch.Tensor]]:
        """A training batch through the train pipeline: the network's input and the targets, (B, N) class indices,
        or per task soft (B, K_i) labels on a mixed batch."""
        if self.resized_crop or self.randaugment:
            x = torch.stack([self._per_image(image) for image in x])
        else:
            if self.crop_padding:
                x = _random_crop(x, self.crop_padding)
            if self.flip:
                flipped = torch.rand(len(x), device=x.device) < 0.5
                x = torch.where(flipped.view(-1, 1, 1, 1), x.flip(-1), x)
        x = self.normalise(x)
        if self.mixup_alpha and float(torch.rand(())) < self.mixup_prob:
            return _mixup(x, labels, task_classes, self.mixup_alpha)
        return x, labels

    def _per_image(self, image: torch.Tensor) -> torch.Tensor:
        if self.resized_crop:
            image = v2.RandomResizedCrop(self.resized_crop, antialias=True)(image)
        if self.flip:
            image = v2.RandomHorizontalFlip()(image)
        if self.randaugment:
            ops, level = self.randaugment
            fill = [round(m) for m in self.mean] if self.mean else None
            image = v2.RandAugment(ops, level * 3, RANDAUGMENT_BINS, v2.InterpolationMode.BILINEAR, fill)(image)
        return image


def _random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """mmcls RandomCrop(size, padding): zero-pad every side, crop the original size at a random offset per image
    (one gather for the whole batch)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4).permute(0, 2, 3, 1)  # (n, h + 2p, w + 2p, c)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2)).to(x.device)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (n, h)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _mixup(
    x: torch.Tensor, labels: torch.Tensor, task_classes: Sequence[int], alpha: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """mmcls BatchMixup: λ ~ Beta(α, α), the batch mixed with a permutation of itself, soft labels likewise."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), device=x.device)
    mixed = lam * x + (1 - lam) * x[perm]
    targets = []
    for column, classes in zip(labels.unbind(1), task_classes, strict=True):
        onehot = F.one_hot(column, classes).float()
        targets.append(lam * onehot + (1 - lam) * onehot[perm])
    return mixed, targets


#: No step: images the reader made ready for the network.
IDENTITY = Pipeline("none")

#: The pipelines of the datasets; dSprites, 3dshapes and the embedded sets of ours are normalised by their readers.
PIPELINES: dict[str, Pipeline] = {
    "cifar10": Pipeline(
        "cifar10",
        mean=(125.307, 122.961, 113.8575),
        std=(51.5865, 50.847, 51.255),
        crop_padding=4,
        flip=True,
    ),
    "imagenet": Pipeline(
        "imagenet",
        mean=(123.675, 116.28, 103.53),
        std=(58.395, 57.12, 57.375),
        flip=True,
        resized_crop=224,
        randaugment=(2, 7),
        mixup_alpha=0.1,
        mixup_prob=0.5,
        test_resize=256,
        test_crop=224,
    ),
    "dsprites": Pipeline("dsprites"),
    "shapes3d": Pipeline("shapes3d"),
    "mnist": Pipeline("mnist"),
    "digits": Pipeline("digits"),
}
