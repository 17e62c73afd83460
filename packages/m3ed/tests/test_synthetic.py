"""The synthetic release: written in the real layout, read back by the real readers, ground truth exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3ed.release import EMOTIONS, MODALITIES, M3EDRelease, format_stats, read_splits, release_stats
from m3ed.synthetic import CO_OCCURRENCE, FEATURE_FILE, SyntheticConfig, make_synthetic_release
from shared.errors import UserError

FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "m3ed"


@pytest.fixture(scope="module")
def official() -> dict[str, str]:
    if not FIXTURES.is_dir():
        pytest.skip(f"real M3ED split fixtures absent at {FIXTURES}")
    return read_splits(FIXTURES)


@pytest.fixture(scope="module")
def written(official, tmp_path_factory):
    """The default synthetic release with real series names: 8 train, 2 val, 2 test of the official split."""
    names: list[str] = []
    for split, n in (("train", 8), ("val", 2), ("test", 2)):
        names += [m for m in official if official[m] == split][:n]
    root = tmp_path_factory.mktemp("syn")
    truth = make_synthetic_release(root, SyntheticConfig(movie_names=names), seed=0)
    return root, truth, M3EDRelease(root)


def test_written_in_the_release_layout(written):
    root, truth, _ = written
    assert (root / FEATURE_FILE).is_file() and (root / "annotation.json").is_file()
    for split in ("train", "val", "test", "total"):
        assert not (root / "splitInfo" / f"movie_list_{split}.txt").read_text().endswith("\n")
    assert truth["feature_file"] == FEATURE_FILE


def test_reader_applies_the_official_split(written, official):
    _, truth, release = written
    release.check()
    assert {d.movie for d in release.dialogues} <= set(official)
    assert all(d.split == official[d.movie] for d in release.dialogues)
    for split in ("train", "val", "test"):
        ids = release.dialogues_in(split)
        assert len(ids) == truth["splits"][split]["dialogues"] > 0
        assert all(official[d.rsplit("_", 1)[0]] == split for d in ids)
    assert release.features.dims == {"audio": 1024, "visual": 342, "text": 768}


def test_relation_superset_and_stats_equal_ground_truth(written):
    _, truth, release = written
    assert set(release.by_id) < set(release.relation)
    stats = release_stats(release)
    assert stats["splits"] == truth["splits"]
    assert stats["relation_without_annotation"] == truth["relation_without_annotation"] == 3
    assert stats["coverage"] == {"audio": 1.0, "visual": 1.0, "text": 1.0}
    assert [s["movies"] for s in stats["splits"].values()] == [8, 2, 2]
    table = format_stats(stats)
    assert f"| {truth['splits']['train']['utterances']}" in table and "Relation entries without annotation: 3" in table


def test_shapes_and_labels_follow_m3ed_ratios(written):
    _, truth, release = written
    utterances = [u for d in release.dialogues for u in d.utterances]
    n = len(utterances)
    assert 18 < n / len(release.dialogues) < 32
    turns = sum(s["turns"] for s in truth["splits"].values())
    assert 2.2 < n / turns < 3.2
    assert 0.07 < sum(len(u.multi_emotions) > 1 for u in utterances) / n < 0.15
    counts = np.bincount([u.main_emotion for u in utterances], minlength=7)
    assert counts.argmax() == 1  # Neutral
    for u in utterances:
        assert u.multi_emotions[0] == u.main_emotion
        names = [EMOTIONS[e] for e in u.multi_emotions]
        assert u.annotators == [",".join(names), names[0], names[-1]]  # consistent with the final labels
    starts = [u.start for u in release.dialogues[0].utterances]
    assert starts == sorted(starts) and starts[0] < 1.0


def test_ambiguous_utterances_need_same_speaker_context(written):
    _, truth, release = written
    bundle = release.features
    ambiguous, clear, copies = [], [], 0
    for d, positions in truth["ambiguous"].items():
        last: dict[str, int] = {}
        for j, (s, y) in enumerate(zip(bundle.speakers[d], bundle.labels[d], strict=True)):
            if j in positions:
                copies += last.get(s) == y
            (ambiguous if j in positions else clear).append((d, j))
            last[s] = y
    assert copies == len(ambiguous)
    assert 0.3 < len(ambiguous) / (len(ambiguous) + len(clear)) < 0.45

    def features(rows):
        return np.stack([np.concatenate([bundle.audio[d][j], bundle.visual[d][j], bundle.text[d][j]]) for d, j in rows])

    labels = {r: bundle.labels[r[0]][r[1]] for r in ambiguous + clear}
    train = set(release.dialogues_in("train"))
    fit = [r for r in clear if r[0] in train]
    x_fit, y_fit = features(fit), np.array([labels[r] for r in fit])
    means = np.stack([x_fit[y_fit == c].mean(0) for c in range(7)])

    def accuracy(rows):
        x = features(rows)
        predicted = np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), axis=1)
        return np.mean(predicted == np.array([labels[r] for r in rows]))

    # clear utterances carry their class; ambiguous ones carry none (about chance among 7 classes)
    held_out = [r for r in clear if r[0] not in train]
    assert accuracy(held_out) > 0.4
    assert accuracy([r for r in ambiguous if r[0] not in train]) < 0.3


def test_secondary_emotion_is_recoverable_from_the_features(written):
    _, _, release = written
    bundle = release.features
    rows = [(d.dialogue_id, u) for d in release.dialogues for u in d.utterances]
    pairs = {tuple(EMOTIONS[e] for e in u.multi_emotions) for _, u in rows if len(u.multi_emotions) > 1}
    assert pairs <= set(CO_OCCURRENCE)

    def features(split):
        chosen = [(d, u) for d, u in rows if d in set(release.dialogues_in(split))]
        x = np.stack([np.concatenate([getattr(bundle, m)[d][u.index] for m in MODALITIES]) for d, u in chosen])
        return x, np.array([u.multi_emotions[1] if len(u.multi_emotions) > 1 else -1 for _, u in chosen])

    x_fit, second_fit = features("train")
    # a direction per secondary emotion, estimated on train: mean with that secondary minus mean without any
    plain = x_fit[second_fit < 0].mean(0)
    seconds = sorted(set(second_fit[second_fit >= 0]))
    directions = np.stack([x_fit[second_fit == s].mean(0) - plain for s in seconds])
    x, second = (
        np.concatenate([features("val")[0], features("test")[0]]),
        np.concatenate([features("val")[1], features("test")[1]]),
    )
    scores = (x - plain) @ directions.T / np.linalg.norm(directions, axis=1)
    # held out: which secondary (chance 1 / len(seconds)) and whether there is one (chance 0.5 by AUC)
    multi = second >= 0
    assert np.mean(np.array(seconds)[scores[multi].argmax(1)] == second[multi]) > 0.8
    top, top_plain = scores[multi].max(1), scores[~multi].max(1)
    assert np.mean(top[:, None] > top_plain[None, :]) > 0.9


def test_deterministic_in_the_seed(tmp_path):
    config = SyntheticConfig(movies=3, dialogues_per_movie=(1, 2), mean_utterances=6)
    first = make_synthetic_release(tmp_path / "a", config, seed=3)
    second = make_synthetic_release(tmp_path / "b", config, seed=3)
    other = make_synthetic_release(tmp_path / "c", config, seed=4)
    assert first == second and first != other
    for name in ("annotation.json", "relation_annotation_release.json", FEATURE_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "annotation.json").read_bytes() != (tmp_path / "c" / "annotation.json").read_bytes()
    assert [s["movies"] for s in first["splits"].values()] == [1, 1, 1]


def test_config_errors(tmp_path):
    with pytest.raises(UserError, match="movie_names must hold 12 distinct names"):
        make_synthetic_release(tmp_path, SyntheticConfig(movie_names=["anjia", "woju"]))
    with pytest.raises(UserError, match="unknown features"):
        make_synthetic_release(tmp_path, SyntheticConfig(feature_file="Afoo-Vbar-Lbaz.pkl"))
