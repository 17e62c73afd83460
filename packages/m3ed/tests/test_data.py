"""Dialogue tensors: modality parsing, the dataset and time-major padded batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3ed.data import Batch, DialogueDataset, collate_dialogues, multi_hot_targets, parse_modalities
from m3ed.release import Dialogue, FeatureBundle, Utterance
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


class _Release:
    """What :func:`multi_hot_targets` reads of a release: the pickle and the annotation's dialogues."""

    def __init__(self, bundle: FeatureBundle, dialogues: list[Dialogue]) -> None:
        self.features, self.dialogues = bundle, dialogues
        self.by_id = {d.dialogue_id: d for d in dialogues}


def _dialogue(dialogue_id: str, emotions: list[tuple[int, list[int]]], speakers: list[str]) -> Dialogue:
    utterances = [
        Utterance(f"{dialogue_id}_{j + 1}", j, s, 0.0, 1.0, "好", [], main, multi)
        for j, ((main, multi), s) in enumerate(zip(emotions, speakers, strict=True))
    ]
    return Dialogue(dialogue_id.split("_")[0], dialogue_id, "train", {}, utterances)


def test_multi_hot_targets_from_the_annotation():
    bundle = _bundle()
    bundle.video_ids["anjia_1"][2] = "A_anjia_1_3"  # a speaker prefix that disagrees (the release's known quirk)
    # main emotion, final_mul_emo (ids: Happy 0, Neutral 1, Sad 2, Disgust 3, Anger 4, Fear 5, Surprise 6)
    anjia = [(1, [1]), (4, [4, 3]), (4, [2])]  # the last lacks its main emotion in final_mul_emo
    woju = [(0, [0]), (2, [2, 5]), (6, [6]), (5, [5, 2]), (3, [3, 4])]
    release = _Release(bundle, [_dialogue("anjia_1", anjia, ["A", "B", "B"]), _dialogue("woju_2", woju, list("BAABA"))])
    targets = multi_hot_targets(release)
    assert targets["anjia_1"].tolist() == [
        [0, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1, 0, 0],
        [0, 0, 1, 0, 1, 0, 0],
    ]
    assert targets["woju_2"].sum(1).tolist() == [1, 2, 1, 2, 2]
    assert targets["woju_2"][3].tolist() == [0, 0, 1, 0, 0, 1, 0]
    dataset = DialogueDataset(bundle, ["anjia_1", "woju_2"], ("text",), targets)
    batch = collate_dialogues([dataset[0], dataset[1]])
    assert batch.targets.shape == (5, 2, 7) and batch.targets.dtype == torch.float32
    assert torch.all(batch.targets[3:, 0] == 0) and batch.targets[1, 0].tolist() == [0, 0, 0, 1, 1, 0, 0]
    assert batch.to("cpu").targets is not None
    assert collate_dialogues([DialogueDataset(bundle, ["anjia_1"], ("text",))[0]]).targets is None
    with pytest.raises(UserError, match="utterance A_woju_2_5 has no final_mul_emo"):
        multi_hot_targets(_Release(bundle, [release.by_id["anjia_1"], _dialogue("woju_2", woju[:4], list("BAAB"))]))
    with pytest.raises(UserError, match="drop --annotations none"):
        multi_hot_targets(_Release(bundle, []))
