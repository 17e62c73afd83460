"""Dialogue tensors: modality parsing, the dataset and time-major padded batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3ed.data import Batch, DialogueDataset, collate_dialogues, parse_modalities
from m3ed.release import FeatureBundle
from shared.errors import UserError

DIMS = {"audio": 5, "visual": 3, "text": 4}


def test_parse_modalities_canonical_order():
    assert parse_modalities("avl") == ("audio", "visual", "text")
    assert parse_modalities("TAV") == ("audio", "visual", "text")
    assert parse_modalities("t") == parse_modalities("l") == ("text",)
    assert parse_modalities("la") == ("audio", "text")
    for bad in ("", "x", "avx"):
        with pytest.raises(UserError, match="bad modalities"):
            parse_modalities(bad)


def _bundle() -> FeatureBundle:
    rng = np.random.default_rng(0)
    lengths = {"anjia_1": 3, "woju_2": 5}
    speakers = {"anjia_1": ["A", "B", "B"], "woju_2": ["B", "A", "A", "B", "A"]}
    labels = {"anjia_1": [1, 4, 4], "woju_2": [0, 2, 6, 5, 3]}

    def rows(dim):
        return {d: rng.standard_normal((n, dim)).astype(np.float32) + 1 for d, n in lengths.items()}

    return FeatureBundle(
        video_ids={d: [f"{s}_{d}_{j + 1}" for j, s in enumerate(speakers[d])] for d in lengths},
        speakers=speakers,
        labels=labels,
        text=rows(DIMS["text"]),
        audio=rows(DIMS["audio"]),
        visual=rows(DIMS["visual"]),
        sentences={d: np.array(["好"] * n) for d, n in lengths.items()},
        train_ids=["anjia_1", "woju_2"],
        val_ids=[],
        test_ids=[],
    )


def test_dataset_items():
    bundle = _bundle()
    dataset = DialogueDataset(bundle, ["woju_2", "anjia_1"], ("visual", "text"))
    assert len(dataset) == 2
    item = dataset[0]
    assert item["dialogue_id"] == "woju_2" and set(item["features"]) == {"visual", "text"}
    assert item["features"]["text"].dtype == torch.float32 and item["features"]["text"].shape == (5, 4)
    torch.testing.assert_close(item["features"]["visual"], torch.from_numpy(bundle.visual["woju_2"]))
    assert item["speakers"].tolist() == [1, 0, 0, 1, 0] and item["labels"].tolist() == [0, 2, 6, 5, 3]
    with pytest.raises(UserError, match="dialogue woju_9 is not in the feature pickle"):
        DialogueDataset(bundle, ["woju_9"], ("text",))


def test_collate_time_major_with_padding():
    bundle = _bundle()
    dataset = DialogueDataset(bundle, ["anjia_1", "woju_2"], parse_modalities("avl"))
    batch = collate_dialogues([dataset[0], dataset[1]])
    assert isinstance(batch, Batch) and batch.dialogue_ids == ["anjia_1", "woju_2"]
    for m, d in DIMS.items():
        assert batch.features[m].shape == (5, 2, d)
        torch.testing.assert_close(batch.features[m][:3, 0], torch.from_numpy(getattr(bundle, m)["anjia_1"]))
        assert torch.all(batch.features[m][3:, 0] == 0)
    assert batch.speakers.shape == (5, 2) and batch.speakers[:, 0].tolist() == [0, 1, 1, 0, 0]
    assert batch.labels[:, 0].tolist() == [1, 4, 4, -1, -1] and batch.labels[:, 1].tolist() == [0, 2, 6, 5, 3]
    expected_mask = torch.tensor([[False, False, False, True, True], [False] * 5])
    assert batch.pad_mask.dtype == torch.bool and torch.equal(batch.pad_mask, expected_mask)
    moved = batch.to("cpu")
    assert torch.equal(moved.labels, batch.labels) and moved.features.keys() == batch.features.keys()
