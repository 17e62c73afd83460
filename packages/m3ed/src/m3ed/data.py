"""The release a run reads (the real one, or the synthetic default) and its dialogues as tensors: one item
per dialogue, time-major padded batches ([n, B, d])."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from m3ed.release import EMOTIONS, MODALITIES, FeatureBundle, M3EDRelease, utterance_key_to_id
from m3ed.synthetic import SyntheticConfig, make_synthetic_release
from shared import checkpoint, distributed
from shared.data import cache_dir
from shared.errors import UserError, require_path

_LETTERS = {"a": "audio", "v": "visual", "t": "text", "l": "text"}
#: The paper's letters of the modalities: A, V and L (language).
LETTERS = {"audio": "a", "visual": "v", "text": "l"}
#: ``check``: the pickle must agree with ``annotation.json`` and ``splitInfo/``; ``none``: the pickle alone.
ANNOTATIONS = ("check", "none")
#: The cache folder of the embedded synthetic release (renamed whenever the generator's output changes).
SYNTHETIC_RELEASE = "synthetic-0-v2"


def open_release(data: Path | None, features: str | None = None, annotations: str = "check") -> M3EDRelease:
    """The release at ``data``, or the synthetic release, written once on first use.

    ``annotations="check"`` reads the annotation and checks the pickle against it; ``"none"`` reads the
    feature pickle alone (:class:`m3ed.release.M3EDRelease` with ``annotations=False``).
    """
    if annotations not in ANNOTATIONS:
        raise UserError(f"--annotations must be one of {', '.join(ANNOTATIONS)}, got {annotations!r}")
    if data is None:
        root = cache_dir("m3ed", SYNTHETIC_RELEASE)
        if distributed.is_main_process() and not (root / "COMPLETE").exists():
            make_synthetic_release(root, SyntheticConfig(), seed=0)
            checkpoint.atomic_write(root / "COMPLETE", lambda f: f.write("synthetic release, seed 0\n"), binary=False)
        distributed.barrier()
    else:
        root = require_path(data, "--data folder", kind="dir")
    release = M3EDRelease(root, features=features, annotations=annotations == "check")
    if annotations == "check":
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


def multi_hot_targets(release: M3EDRelease) -> dict[str, np.ndarray]:
    """Dialogue id -> (n, 7) 0/1 targets of the multi-label task, rows in the pickle's utterance order.

    The release's rule (``decision_allin_pool`` in ``preprocess/`` of github.com/JinmingZhao/MEmoConv): the
    emotions of the three annotators are pooled; ``final_mul_emo`` holds those named by at least two of them,
    ``final_main_emo`` the one named by all three or else the majority first choice, so every utterance has
    one main label and one or more multi labels, as a rule the main one among them (the targets add it
    where a row lacks it). Every utterance counts, single-emotion ones as one-hot rows, and every combination is kept
    (the authors' notes count 2,627 multi-emotion utterances after dropping combinations seen < 5 times,
    a statistic, not a filter of the release). Joined to the pickle on the utterance id without its speaker
    prefix, as :meth:`m3ed.release.M3EDRelease.check` does.
    """
    if not release.dialogues:
        raise UserError("--task multi needs annotation.json's final_mul_emo: drop --annotations none")
    targets = {}
    for dialogue_id, keys in release.features.video_ids.items():
        dialogue = release.by_id.get(dialogue_id)
        emotions = {u.utt_id: [u.main_emotion, *u.multi_emotions] for u in dialogue.utterances} if dialogue else {}
        rows = np.zeros((len(keys), len(EMOTIONS)), dtype=np.float32)
        for i, key in enumerate(keys):
            utt_id = utterance_key_to_id(key)
            if utt_id not in emotions:
                raise UserError(f"feature pickle utterance {key} has no final_mul_emo in annotation.json; rebuild it")
            rows[i, emotions[utt_id]] = 1.0
        targets[dialogue_id] = rows
    return targets


class DialogueDataset(Dataset):
    """Dialogues of a feature bundle as tensors: features per modality (n, d), speakers (0=A, 1=B), labels,
    and with ``targets`` (from :func:`multi_hot_targets`) the (n, 7) multi-hot targets."""

    def __init__(
        self,
        bundle: FeatureBundle,
        dialogue_ids: list[str],
        modalities: tuple[str, ...],
        targets: dict[str, np.ndarray] | None = None,
    ) -> None:
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
                **({"targets": torch.as_tensor(targets[d], dtype=torch.float32)} if targets is not None else {}),
            }
            for d in dialogue_ids
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


@dataclass
class Batch:
    """Padded dialogues: features (n, B, d), speakers (n, B), pad_mask (B, n) True on padding, labels -1 there;
    multi-label targets (n, B, 7), 0 on padding, or None for the single-label task."""

    features: dict[str, torch.Tensor]
    speakers: torch.Tensor
    pad_mask: torch.Tensor
    labels: torch.Tensor
    dialogue_ids: list[str]
    targets: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            {m: x.to(device) for m, x in self.features.items()},
            self.speakers.to(device),
            self.pad_mask.to(device),
            self.labels.to(device),
            self.dialogue_ids,
            None if self.targets is None else self.targets.to(device),
        )


def collate_dialogues(items: list[dict]) -> Batch:
    """Pad dialogues to the longest: zero features, speaker 0, label -1 and zero targets on padding."""
    lengths = torch.tensor([len(item["labels"]) for item in items])
    return Batch(
        features={m: pad_sequence([item["features"][m] for item in items]) for m in items[0]["features"]},
        speakers=pad_sequence([item["speakers"] for item in items], padding_value=0),
        pad_mask=torch.arange(int(lengths.max()))[None, :] >= lengths[:, None],
        labels=pad_sequence([item["labels"] for item in items], padding_value=-1),
        dialogue_ids=[item["dialogue_id"] for item in items],
        targets=pad_sequence([item["targets"] for item in items]) if "targets" in items[0] else None,
    )
