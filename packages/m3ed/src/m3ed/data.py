"""The release a run reads (the real one, or the synthetic default) and its dialogues as tensors: one item
per dialogue, time-major padded batches ([n, B, d])."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from m3ed.release import MODALITIES, FeatureBundle, M3EDRelease
from m3ed.synthetic import SyntheticConfig, make_synthetic_release
from shared import checkpoint, distributed
from shared.data import cache_dir
from shared.errors import UserError, require_path

_LETTERS = {"a": "audio", "v": "visual", "t": "text", "l": "text"}
#: The paper's letters of the modalities: A, V and L (language).
LETTERS = {"audio": "a", "visual": "v", "text": "l"}


def open_release(data: Path | None, features: str | None = None) -> M3EDRelease:
    """The release at ``data`` (checked), or the synthetic release, written once on first use."""
    if data is None:
        root = cache_dir("m3ed", "synthetic-0")
        if distributed.is_main_process() and not (root / "COMPLETE").exists():
            make_synthetic_release(root, SyntheticConfig(), seed=0)
            checkpoint.atomic_write(root / "COMPLETE", lambda f: f.write("synthetic release, seed 0\n"), binary=False)
        distributed.barrier()
    else:
        root = require_path(data, "--data folder", kind="dir")
    release = M3EDRelease(root, features=features)
    release.check()
    return release


def parse_modalities(text: str) -> tuple[str, ...]:
    """Modalities named by letters a/v/t (``l`` = text, as in the official code), in canonical order."""
    letters = text.strip().lower()
    if not letters or any(c not in _LETTERS for c in letters):
        raise UserError(f"bad modalities {text!r}: use letters a (audio), v (visual), t or l (text), e.g. avl")
    chosen = {_LETTERS[c] for c in letters}
    return tuple(m for m in MODALITIES if m in chosen)


def modality_letters(modalities: tuple[str, ...]) -> str:
    """The paper's letters of ``modalities`` (``("audio", "text")`` -> ``"al"``)."""
    return "".join(LETTERS[m] for m in modalities)


class DialogueDataset(Dataset):
    """Dialogues of a feature bundle as tensors: features per modality (n, d), speakers (0=A, 1=B), labels."""

    def __init__(self, bundle: FeatureBundle, dialogue_ids: list[str], modalities: tuple[str, ...]) -> None:
        unknown = [d for d in dialogue_ids if d not in bundle.video_ids]
        if unknown:
            raise UserError(f"dialogue {unknown[0]} is not in the feature pickle; check the split lists")
        self.modalities = tuple(modalities)
        self.items = [
            {
                "features": {m: torch.as_tensor(getattr(bundle, m)[d], dtype=torch.float32) for m in self.modalities},
                "speakers": torch.tensor([s == "B" for s in bundle.speakers[d]], dtype=torch.long),
                "labels": torch.as_tensor(bundle.labels[d], dtype=torch.long),
                "dialogue_id": d,
            }
            for d in dialogue_ids
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


@dataclass
class Batch:
    """Padded dialogues: features (n, B, d), speakers (n, B), pad_mask (B, n) True on padding, labels -1 there."""

    features: dict[str, torch.Tensor]
    speakers: torch.Tensor
    pad_mask: torch.Tensor
    labels: torch.Tensor
    dialogue_ids: list[str]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            {m: x.to(device) for m, x in self.features.items()},
            self.speakers.to(device),
            self.pad_mask.to(device),
            self.labels.to(device),
            self.dialogue_ids,
        )


def collate_dialogues(items: list[dict]) -> Batch:
    """Pad dialogues to the longest: zero features, speaker 0 and label -1 on padding."""
    lengths = torch.tensor([len(item["labels"]) for item in items])
    return Batch(
        features={m: pad_sequence([item["features"][m] for item in items]) for m in items[0]["features"]},
        speakers=pad_sequence([item["speakers"] for item in items], padding_value=0),
        pad_mask=torch.arange(int(lengths.max()))[None, :] >= lengths[:, None],
        labels=pad_sequence([item["labels"] for item in items], padding_value=-1),
        dialogue_ids=[item["dialogue_id"] for item in items],
    )
