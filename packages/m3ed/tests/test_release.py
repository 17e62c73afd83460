"""Readers of the real M3ED release: time and label parsers, split lists, annotation, relation, pickles."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from m3ed.release import (
    EMOTIONS,
    FeatureBundle,
    M3EDRelease,
    format_hmsf,
    load_annotation,
    load_feature_pickle,
    load_relation,
    parse_emotions,
    parse_feature_name,
    parse_hmsf,
    read_splits,
    save_feature_pickle,
    utterance_key_to_id,
)
from shared.errors import UserError

FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "m3ed"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"real M3ED split fixtures absent at {FIXTURES}")
FEATURE_FILE = "Asent_wav2vec_zh2chmed2e5last-Vsent_avg_affectdenseface-Lsent_cls_robert_wwm_base_chinese4chmed.pkl"
DIMS = {"audio": 1024, "visual": 342, "text": 768}


def test_parse_hmsf_25_fps():
    assert parse_hmsf("00:00:01:04") == pytest.approx(1.16)
    assert parse_hmsf("01:02:03:24") == pytest.approx(3723.96)
    assert parse_hmsf("00:00:00:05", fps=10) == pytest.approx(0.5)
    assert parse_hmsf(format_hmsf(25 * 3723 + 7)) == pytest.approx(3723 + 7 / 25)
    # frame 25 is how the authors' converter writes an end time rounded up to the next second
    assert parse_hmsf("00:00:01:25") == pytest.approx(2.0) == parse_hmsf("00:00:02:00")
    assert parse_hmsf("00:59:59:25") == pytest.approx(3600.0)
    assert parse_hmsf(" 00:31:55:142", lenient=True) == pytest.approx(31 * 60 + 56)  # frame clipped to 25
    assert parse_hmsf("00:2:49:2", lenient=True) == pytest.approx(2 * 60 + 49 + 2 / 25)
    for bad in ("00:00:01", "00:00:01:26", "aa:bb:cc:dd", "00:61:00:00", ""):
        with pytest.raises(UserError, match="HH:MM:SS:FF"):
            parse_hmsf(bad)


def test_parse_emotions_multi_label():
    assert parse_emotions("Anger,Disgust", "u") == [4, 3]
    assert parse_emotions("Neutral", "u") == [1]
    assert parse_emotions("Sad, Fear", "u") == [2, 5]
    with pytest.raises(UserError, match=r"anjia_1_3.*Happy, Neutral, Sad, Disgust, Anger, Fear, Surprise"):
        parse_emotions("Anger,Angry", "anjia_1_3")


def _write_lists(root: Path, lists: dict[str, str]) -> Path:
    (root / "splitInfo").mkdir(parents=True, exist_ok=True)
    for split, text in lists.items():
        (root / "splitInfo" / f"movie_list_{split}.txt").write_text(text)
    return root


def test_read_splits_without_trailing_newline(tmp_path):
    root = _write_lists(tmp_path, {"train": "anjia\n\nfendou", "val": "woju\n", "test": "huanlesong"})
    assert read_splits(root) == {"anjia": "train", "fendou": "train", "woju": "val", "huanlesong": "test"}


def test_read_splits_rejects_a_movie_in_two_lists(tmp_path):
    root = _write_lists(tmp_path, {"train": "anjia\nwoju", "val": "woju", "test": "huanlesong"})
    with pytest.raises(UserError, match=r"woju is in both movie_list_train.txt and movie_list_val.txt"):
        read_splits(root)


def test_read_splits_checks_total(tmp_path):
    lists = {"train": "anjia", "val": "woju", "test": "huanlesong", "total": "anjia\nwoju\nfendou"}
    with pytest.raises(UserError, match=r"only in total \['fendou'\], only in the split lists \['huanlesong'\]"):
        read_splits(_write_lists(tmp_path, lists))


@needs_fixtures
def test_read_splits_on_the_real_release():
    splits = read_splits(FIXTURES)
    counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 38, "val": 7, "test": 11}
    val = {"zhiwomendanchundexiaomeihao", "renmindemingyi", "nishiwodeyan", "yijiarenzhiming", "humamaoba"}
    val |= {"yueguangbianzouqu", "bianchengnidenayitian"}
    assert {m for m, s in splits.items() if s == "val"} == val
    assert splits["huanlesong"] == "test" and splits["anjia"] == "train"


@needs_fixtures
def test_load_relation_on_the_real_release():
    relation = load_relation(FIXTURES / "relation_annotation_release.json")
    assert len(relation) == 1016
    span = relation["anjia_1"]
    assert span.episode == 2
    assert span.start == pytest.approx(23 * 60 + 48 + 4 / 25) and span.end == pytest.approx(24 * 60 + 15 + 8 / 25)
    assert relation["bianchengnidenayitian_3"].start == pytest.approx(31 * 60 + 56)  # typed as 00:31:55:142
    assert relation["jiayounishizuibangde_14"].start == pytest.approx(73.0)  # 00:01:12:25, one of 8 at frame 25


def _utterance(speaker: str, start: str, main: str, multi: str | None = None) -> dict:
    multi = multi or main
    emo = {"EmoAnnotator1": multi, "EmoAnnotator2": main, "EmoAnnotator3": main}
    return {
        "StartTime": start,
        "EndTime": "00:00:09:00",
        "Text": "你先把衣服换了",
        "Speaker": speaker,
        "EmoAnnotation": emo | {"final_mul_emo": multi, "final_main_emo": main},
    }


def _annotation() -> dict:
    speakers = {
        "A": {"Name": "房似锦", "Age": "young", "Gender": "female", "OtherName": []},
        "B": {"Name": "朱闪闪", "Age": "young", "Gender": "female", "OtherName": ["闪闪"]},
    }
    return {
        "anjia": {
            "anjia_1": {
                "SpeakerInfo": speakers,
                "Dialog": {
                    "anjia_1_10": _utterance("B", "00:00:08:00", "Sad", "Sad,Anger"),
                    "anjia_1_2": _utterance("A", "00:00:02:00", "Anger", "Anger,Disgust"),
                    "anjia_1_1": _utterance("A", "00:00:00:01", "Neutral"),
                },
            }
        },
        "woju": {"woju_3": {"SpeakerInfo": speakers, "Dialog": {"woju_3_1": _utterance("B", "00:00:00:01", "Happy")}}},
    }


def test_load_annotation_two_dialogues(tmp_path):
    path = tmp_path / "annotation.json"
    annotation = _annotation()
    annotation["anjia"]["anjia_1"]["Dialog"]["anjia_1_1"]["EndTime"] = "00:00:08:25"  # as the converter writes 9 s
    path.write_text(json.dumps(annotation, ensure_ascii=False), encoding="utf-8")
    anjia, woju = load_annotation(path, {"anjia": "train", "woju": "val"})
    assert (anjia.movie, anjia.dialogue_id, anjia.split, woju.split) == ("anjia", "anjia_1", "train", "val")
    assert [u.utt_id for u in anjia.utterances] == ["anjia_1_1", "anjia_1_2", "anjia_1_10"]
    assert [u.index for u in anjia.utterances] == [0, 1, 2]
    assert [u.main_emotion for u in anjia.utterances] == [1, 4, 2]
    assert [u.multi_emotions for u in anjia.utterances] == [[1], [4, 3], [2, 4]]
    first = anjia.utterances[0]
    assert (first.speaker, first.start, first.end, first.text) == ("A", 0.04, 9.0, "你先把衣服换了")
    assert first.annotators == ["Neutral"] * 3
    assert anjia.speakers["B"].other_names == ["闪闪"] and anjia.speakers["A"].age == "young"


def test_load_annotation_errors(tmp_path):
    path = tmp_path / "annotation.json"
    data = _annotation()
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match="movie woju is in no splitInfo"):
        load_annotation(path, {"anjia": "train"})
    data["anjia"]["anjia_1"]["Dialog"]["anjia_1_2"]["EmoAnnotation"]["final_mul_emo"] = "Anger,Contempt"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match="utterance anjia_1_2: unknown emotion label 'Anger,Contempt'"):
        load_annotation(path, {"anjia": "train", "woju": "val"})


def test_feature_name_and_prefix_free_ids():
    spec = parse_feature_name(FEATURE_FILE)
    assert (spec.audio, spec.visual, spec.text) == (
        "sent_wav2vec_zh2chmed2e5last",
        "sent_avg_affectdenseface",
        "sent_cls_robert_wwm_base_chinese4chmed",
    )
    with pytest.raises(UserError, match=r"A<audio>-V<visual>-L<text>.pkl"):
        parse_feature_name("features.pkl")
    assert utterance_key_to_id("A_anjia_1_1") == "anjia_1_1"
    assert utterance_key_to_id("B_jimaofeishangtian_13_6") == utterance_key_to_id("A_jimaofeishangtian_13_6")


def _bundle(dialogues: dict[str, list[tuple[str, int]]], dims=DIMS, keys: dict[str, list[str]] | None = None):
    rng = np.random.default_rng(0)
    ids = list(dialogues)
    return FeatureBundle(
        video_ids={d: [f"{s}_{d}_{j + 1}" for j, (s, _) in enumerate(u)] for d, u in dialogues.items()} | (keys or {}),
        speakers={d: [s for s, _ in u] for d, u in dialogues.items()},
        labels={d: [y for _, y in u] for d, u in dialogues.items()},
        text={d: rng.standard_normal((len(u), dims["text"])).astype(np.float32) for d, u in dialogues.items()},
        audio={d: rng.standard_normal((len(u), dims["audio"])).astype(np.float32) for d, u in dialogues.items()},
        visual={d: rng.standard_normal((len(u), dims["visual"])).astype(np.float32) for d, u in dialogues.items()},
        sentences={d: np.array(["好"] * len(u)) for d, u in dialogues.items()},
        train_ids=ids[:1],
        val_ids=ids[1:2],
        test_ids=ids[2:],
    )


DIALOGUES = {"anjia_1": [("A", 1), ("A", 4), ("B", 2)], "woju_3": [("B", 0)]}


def test_feature_pickle_round_trip(tmp_path):
    bundle = _bundle(DIALOGUES)
    path = save_feature_pickle(tmp_path / FEATURE_FILE, bundle)
    with open(path, "rb") as f:
        items = pickle.load(f)
    assert isinstance(items, list) and len(items) == 10 and items[7:] == [["anjia_1"], ["woju_3"], []]
    loaded = load_feature_pickle(path)
    assert loaded.dims == DIMS
    assert loaded.video_ids == {"anjia_1": ["A_anjia_1_1", "A_anjia_1_2", "B_anjia_1_3"], "woju_3": ["B_woju_3_1"]}
    assert loaded.labels == bundle.labels and loaded.speakers == bundle.speakers
    np.testing.assert_array_equal(loaded.audio["anjia_1"], bundle.audio["anjia_1"])
    np.testing.assert_array_equal(loaded.visual["woju_3"], bundle.visual["woju_3"])


def test_feature_pickle_written_by_numpy_1(tmp_path):
    bundle = _bundle(DIALOGUES)
    items = [bundle.video_ids, bundle.speakers, bundle.labels, bundle.text, bundle.audio, bundle.visual]
    items += [bundle.sentences, bundle.train_ids, bundle.val_ids, bundle.test_ids]
    # protocol 2 names classes as text lines; numpy 1.x pickles reference numpy.core, not numpy._core
    raw = pickle.dumps(items, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in raw
    (tmp_path / FEATURE_FILE).write_bytes(raw)
    loaded = load_feature_pickle(tmp_path / FEATURE_FILE)
    np.testing.assert_array_equal(loaded.text["anjia_1"], bundle.text["anjia_1"])


def _write_pickle(tmp_path: Path, bundle: FeatureBundle, name: str = FEATURE_FILE) -> Path:
    return save_feature_pickle(tmp_path / name, bundle)


def test_feature_pickle_errors(tmp_path):
    bundle = _bundle(DIALOGUES)
    bundle.text["anjia_1"] = bundle.text["anjia_1"][:2]
    with pytest.raises(UserError, match="missing utterances of dialogue anjia_1"):
        load_feature_pickle(_write_pickle(tmp_path, bundle))

    bundle = _bundle(DIALOGUES)
    bundle.labels["anjia_1"][1] = 9
    with pytest.raises(UserError, match="dialogue anjia_1 position 1 has label 9"):
        load_feature_pickle(_write_pickle(tmp_path, bundle))

    swapped = _bundle(DIALOGUES, dims={"audio": 342, "visual": 1024, "text": 768})
    with pytest.raises(UserError, match="audio and visual in the wrong order"):
        load_feature_pickle(_write_pickle(tmp_path, swapped))

    with pytest.raises(UserError, match=r"mismatched feature dims .*'text': 512"):
        load_feature_pickle(_write_pickle(tmp_path, _bundle(DIALOGUES, dims=DIMS | {"text": 512})))
    # a file name with feature names we do not know skips the name check
    assert load_feature_pickle(_write_pickle(tmp_path, swapped, "Afoo-Vbar-Lbaz.pkl")).dims["audio"] == 342

    bundle = _bundle(DIALOGUES)
    bundle.test_ids.append("woju_9")
    with pytest.raises(UserError, match="test list names dialogue woju_9"):
        load_feature_pickle(_write_pickle(tmp_path, bundle))

    (tmp_path / FEATURE_FILE).write_bytes(pickle.dumps([{}] * 9))
    with pytest.raises(UserError, match="holds 9 items, not the 10-item"):
        load_feature_pickle(tmp_path / FEATURE_FILE)
    (tmp_path / FEATURE_FILE).write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read feature pickle"):
        load_feature_pickle(tmp_path / FEATURE_FILE)


def _write_release(root: Path, bundle: FeatureBundle, annotation: dict | None = None) -> Path:
    _write_lists(root, {"train": "anjia", "val": "woju", "test": ""})
    (root / "annotation.json").write_text(json.dumps(annotation or _annotation()), encoding="utf-8")
    _write_pickle(root, bundle)
    return root


RELEASE_DIALOGUES = {"anjia_1": [("A", 1), ("A", 4), ("B", 2)], "woju_3": [("B", 0)]}


def test_release_check_and_jimaofeishangtian_speaker_prefix(tmp_path):
    annotation = _annotation()
    dialog = annotation["anjia"]["anjia_1"]["Dialog"]
    dialog["anjia_1_3"] = dialog.pop("anjia_1_10")
    keys = {"anjia_1": ["A_anjia_1_1", "A_anjia_1_2", "B_anjia_1_3"]}
    release = M3EDRelease(_write_release(tmp_path, _bundle(RELEASE_DIALOGUES, keys=keys), annotation))
    release.check()
    assert release.dialogues_in("train") == ["anjia_1"] and release.dialogues_in("test") == []
    assert release.relation == {}

    # the release annotates jimaofeishangtian_13_6 as speaker B while the pickle key is A_jimaofeishangtian_13_6
    movie = {
        "jimaofeishangtian_13": {
            "SpeakerInfo": {},
            "Dialog": {"jimaofeishangtian_13_6": _utterance("B", "00:00:00:01", "Sad")},
        }
    }
    root = tmp_path / "jimao"
    _write_lists(root, {"train": "jimaofeishangtian", "val": "", "test": ""})
    (root / "annotation.json").write_text(json.dumps({"jimaofeishangtian": movie}), encoding="utf-8")
    bundle = _bundle({"jimaofeishangtian_13": [("A", 2)]})
    bundle.video_ids["jimaofeishangtian_13"] = ["A_jimaofeishangtian_13_6"]
    _write_pickle(root, bundle)
    M3EDRelease(root).check()


def test_release_check_errors(tmp_path):
    def check(bundle: FeatureBundle, annotation: dict | None = None, name: str = "r") -> None:
        M3EDRelease(_write_release(tmp_path / name, bundle, annotation)).check()

    annotation = _annotation()
    dialog = annotation["anjia"]["anjia_1"]["Dialog"]
    dialog["anjia_1_3"] = dialog.pop("anjia_1_10")
    check(_bundle(RELEASE_DIALOGUES), annotation, "ok")

    with pytest.raises(UserError, match=r"train list names dialogue anjia_7, absent from annotation.json"):
        check(_bundle({"anjia_7": [("A", 1)], "woju_3": [("B", 0)]}), annotation, "unknown")
    bundle = _bundle(RELEASE_DIALOGUES)
    bundle.train_ids, bundle.val_ids = bundle.val_ids, bundle.train_ids
    with pytest.raises(UserError, match="dialogue woju_3 under train but splitInfo puts movie woju in val"):
        check(bundle, annotation, "swapped")
    with pytest.raises(UserError, match="missing utterances of dialogue anjia_1: anjia_1_3"):
        check(_bundle({"anjia_1": [("A", 1), ("A", 4)], "woju_3": [("B", 0)]}), annotation, "missing")
    with pytest.raises(UserError, match=f"utterance anjia_1_2: pickle label 3 .*final_main_emo {EMOTIONS[4]}"):
        check(_bundle({"anjia_1": [("A", 1), ("A", 3), ("B", 2)], "woju_3": [("B", 0)]}), annotation, "label")


def test_release_picks_the_single_pickle(tmp_path):
    root = _write_release(tmp_path, _bundle(RELEASE_DIALOGUES))
    (root / FEATURE_FILE).rename(root / "Afoo-Vbar-Lbaz.pkl")
    assert M3EDRelease(root).features.dims == DIMS
    _write_pickle(root, _bundle(RELEASE_DIALOGUES))
    with pytest.raises(UserError, match=r"several feature pickles .*Afoo-Vbar-Lbaz.pkl, Asent"):
        M3EDRelease(root)
    assert M3EDRelease(root, features=FEATURE_FILE).features.dims == DIMS
    for path in root.glob("*.pkl"):
        path.unlink()
    with pytest.raises(UserError, match="no feature pickle"):
        M3EDRelease(root)
