"""Readers for the real M3ED release (annotation, split lists, relation index, feature pickles).

Layouts are those of the public release (github.com/AIM3-RUC/RUCM3ED) and of the DialogueRNN-format
feature pickles built by the authors' ``prepare_fts.py``; every user-fixable problem raises a one-line
:class:`shared.errors.UserError` naming the file, dialogue or utterance and the fix.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.checkpoint import atomic_write
from shared.errors import UserError, require_path
from shared.report import markdown_table

EMOTIONS = ("Happy", "Neutral", "Sad", "Disgust", "Anger", "Fear", "Surprise")
EMOTION_TO_ID = {name: i for i, name in enumerate(EMOTIONS)}
SPLITS = ("train", "val", "test")
MODALITIES = ("audio", "visual", "text")

KNOWN_FEATURE_DIMS = {
    "IS10_norm": 1582,
    "sent_avg_wav2vec_zh": 1024,
    "sent_wav2vec_zh2chmed2e5last": 1024,
    "sent_avg_affectdenseface": 342,
    "sent_cls_robert_wwm_base_chinese4chmed": 768,
    "sent_avg_robert_base_wwm_chinese": 768,
}

_HMSF = re.compile(r"(\d+):(\d\d):(\d\d):(\d\d)")
_HMSF_LENIENT = re.compile(r"(\d+):(\d{1,2}):(\d{1,2}):(\d{1,3})")
_FEATURE_NAME = re.compile(r"A([^-]+)-V([^-]+)-L([^-]+)\.pkl")
_UTTERANCE_ID = re.compile(r"(.+)_(\d+)")


def parse_emotions(text: str, where: str) -> list[int]:
    """Emotion ids of a comma-separated label string (``"Anger,Disgust"`` -> ``[4, 3]``)."""
    names = [name.strip() for name in str(text).split(",")]
    ids = [EMOTION_TO_ID.get(name.capitalize()) for name in names]
    if not names or None in ids:
        raise UserError(f"{where}: unknown emotion label {text!r}; use comma-separated names of {', '.join(EMOTIONS)}")
    return ids


def parse_hmsf(text: str, fps: int = 25, *, lenient: bool = False) -> float:
    """Seconds of an ``HH:MM:SS:FF`` time stamp whose FF counts frames at ``fps``.

    FF may equal ``fps``, as the authors' subtitle converter writes it (``trans_ms_frames`` in
    ``preprocess/convert_srt_to_annot.py`` of github.com/JinmingZhao/MEmoConv rounds an end time's
    milliseconds up to ``ceil(ms / 40)`` frames without carrying into the seconds): ``00:00:01:25`` is the
    start of second 2, as the authors' frame index ``s * 25 + FF`` reads it. ``lenient`` also accepts the
    relation file's hand-typed stamps (one-digit fields or frames above ``fps``, e.g. ``00:31:55:142``; 79
    stamps in 63 of its 1,016 entries): such a frame is clipped to ``fps``.
    """
    match = (_HMSF_LENIENT if lenient else _HMSF).fullmatch(str(text).strip())
    if match is None or int(match[2]) >= 60 or int(match[3]) >= 60 or (int(match[4]) > fps and not lenient):
        raise UserError(f"malformed time {text!r}: expected HH:MM:SS:FF with FF <= {fps} (frames at {fps} fps)")
    hours, minutes, seconds, frames = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + min(frames, fps) / fps


def format_hmsf(frame: int, fps: int = 25) -> str:
    """The ``HH:MM:SS:FF`` stamp of a frame index at ``fps`` (inverse of :func:`parse_hmsf`)."""
    seconds, frames = divmod(frame, fps)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}:{frames:02d}"


@dataclass
class SpeakerInfo:
    name: str
    age: str
    gender: str
    other_names: list[str]


@dataclass
class Utterance:
    utt_id: str
    index: int
    speaker: str
    start: float
    end: float
    text: str
    annotators: list[str]
    main_emotion: int
    multi_emotions: list[int]


@dataclass
class Dialogue:
    movie: str
    dialogue_id: str
    split: str
    speakers: dict[str, SpeakerInfo]
    utterances: list[Utterance]


@dataclass
class EpisodeSpan:
    episode: int
    start: float
    end: float


def _read_json(path: Path, what: str) -> Any:
    require_path(path, what, kind="file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid UTF-8 JSON ({exc}); restore {what} from the M3ED release") from None


def read_splits(root: Path) -> dict[str, str]:
    """Movie -> ``"train"``/``"val"``/``"test"`` from ``root/splitInfo/movie_list_*.txt``."""
    folder = Path(root) / "splitInfo"
    splits: dict[str, str] = {}
    for split in SPLITS:
        path = require_path(folder / f"movie_list_{split}.txt", "split list", kind="file")
        for movie in filter(None, (line.strip() for line in path.read_text(encoding="utf-8").splitlines())):
            if splits.get(movie, split) != split:
                raise UserError(
                    f"{folder}: movie {movie} is in both movie_list_{splits[movie]}.txt and "
                    f"movie_list_{split}.txt; keep it in one list"
                )
            splits[movie] = split
    total_path = folder / "movie_list_total.txt"
    if total_path.is_file():
        total = set(filter(None, (line.strip() for line in total_path.read_text(encoding="utf-8").splitlines())))
        if total != set(splits):
            raise UserError(
                f"{total_path} differs from train+val+test: only in total {sorted(total - set(splits))}, "
                f"only in the split lists {sorted(set(splits) - total)}; make the lists agree"
            )
    return splits


def _utterance_number(utt_id: str, dialogue_id: str) -> int:
    match = _UTTERANCE_ID.fullmatch(utt_id)
    if match is None or match[1] != dialogue_id:
        raise UserError(f"annotation.json: utterance id {utt_id} is not <dialogue id>_<j> of dialogue {dialogue_id}")
    return int(match[2])


def _parse_utterance(utt_id: str, raw: dict, index: int) -> Utterance:
    try:
        emo = raw["EmoAnnotation"]
        speaker = raw["Speaker"]
        if speaker not in ("A", "B"):
            raise UserError(f"speaker {speaker!r} is not A or B")
        main = parse_emotions(emo["final_main_emo"], utt_id)
        if len(main) != 1:
            raise UserError(f"final_main_emo {emo['final_main_emo']!r} must be exactly one emotion")
        return Utterance(
            utt_id=utt_id,
            index=index,
            speaker=speaker,
            start=parse_hmsf(raw["StartTime"]),
            end=parse_hmsf(raw["EndTime"]),
            text=raw["Text"],
            annotators=[str(emo[f"EmoAnnotator{i}"]) for i in (1, 2, 3)],
            main_emotion=main[0],
            multi_emotions=parse_emotions(emo["final_mul_emo"], utt_id),
        )
    except KeyError as exc:
        raise UserError(f"annotation.json: utterance {utt_id} lacks field {exc}; restore it from the release") from None
    except (UserError, TypeError) as exc:
        message = str(exc).removeprefix(f"{utt_id}: ")
        raise UserError(f"annotation.json: utterance {utt_id}: {message}") from None


def load_annotation(path: Path, splits: dict[str, str]) -> list[Dialogue]:
    """Dialogues of ``annotation.json`` (movie -> dialogue -> {SpeakerInfo, Dialog}), utterances in order."""
    data = _read_json(Path(path), "annotation.json")
    dialogues = []
    for movie, movie_dialogues in data.items():
        if movie not in splits:
            raise UserError(f"{path}: movie {movie} is in no splitInfo/movie_list_*.txt; add it to one split list")
        for dialogue_id, raw in movie_dialogues.items():
            if not isinstance(raw, dict) or "SpeakerInfo" not in raw or "Dialog" not in raw:
                raise UserError(
                    f"{path}: dialogue {dialogue_id} lacks SpeakerInfo or Dialog; restore it from the release"
                )
            speakers = {
                key: SpeakerInfo(
                    info.get("Name", ""), info.get("Age", ""), info.get("Gender", ""), info.get("OtherName", [])
                )
                for key, info in raw["SpeakerInfo"].items()
            }
            ids = sorted(raw["Dialog"], key=lambda u, d=dialogue_id: _utterance_number(u, d))
            utterances = [_parse_utterance(u, raw["Dialog"][u], i) for i, u in enumerate(ids)]
            dialogues.append(Dialogue(movie, dialogue_id, splits[movie], speakers, utterances))
    return dialogues


def load_relation(path: Path) -> dict[str, EpisodeSpan]:
    """Dialogue id -> episode span of ``relation_annotation_release.json`` (a superset of the annotation)."""
    relation = {}
    for movie_dialogues in _read_json(Path(path), "relation_annotation_release.json").values():
        for dialogue_id, raw in movie_dialogues.items():
            try:
                relation[dialogue_id] = EpisodeSpan(
                    int(raw["episode"]),
                    parse_hmsf(raw["start_time"], lenient=True),
                    parse_hmsf(raw["end_time"], lenient=True),
                )
            except (KeyError, TypeError, ValueError, UserError) as exc:
                raise UserError(f"{path}: dialogue {dialogue_id} has a bad entry ({exc}); restore it") from None
    return relation


@dataclass(frozen=True)
class FeatureSpec:
    audio: str
    visual: str
    text: str


def parse_feature_name(name: str) -> FeatureSpec:
    """Feature names of a pickle called ``A<audio>-V<visual>-L<text>.pkl``."""
    match = _FEATURE_NAME.fullmatch(Path(name).name)
    if match is None:
        raise UserError(f"feature file name {name!r} is not A<audio>-V<visual>-L<text>.pkl; keep the released name")
    return FeatureSpec(*match.groups())


@dataclass
class FeatureBundle:
    """The 10-item DialogueRNN-format feature pickle, in its item order."""

    video_ids: dict[str, list[str]]
    speakers: dict[str, list[str]]
    labels: dict[str, list[int]]
    text: dict[str, np.ndarray]
    audio: dict[str, np.ndarray]
    visual: dict[str, np.ndarray]
    sentences: dict[str, np.ndarray]
    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]

    @property
    def split_ids(self) -> dict[str, list[str]]:
        return {"train": self.train_ids, "val": self.val_ids, "test": self.test_ids}

    @property
    def dims(self) -> dict[str, int]:
        return {m: next(iter(getattr(self, m).values())).shape[1] if self.video_ids else 0 for m in MODALITIES}


def utterance_key_to_id(key: str) -> str:
    """Utterance id of a pickle key without its speaker prefix (``A_anjia_1_1`` -> ``anjia_1_1``)."""
    return key[2:] if key[:2] in ("A_", "B_") else key


def _load_pickle(path: Path) -> Any:
    with open(path, "rb") as handle, warnings.catch_warnings():
        # numpy 2 reads numpy 1.x pickles through its deprecated ``numpy.core`` alias
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return pickle.load(handle)
        except UnicodeDecodeError:
            handle.seek(0)
            return pickle.load(handle, encoding="latin1")


def load_feature_pickle(path: Path) -> FeatureBundle:
    """Read and validate a released feature pickle (10-item list, consistent lengths, labels and dims)."""
    path = require_path(path, "feature pickle", kind="file")
    try:
        items = _load_pickle(path)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError) as exc:
        raise UserError(f"cannot read feature pickle {path} ({exc}); download the file again") from None
    if not isinstance(items, list | tuple) or len(items) != 10:
        count = len(items) if isinstance(items, list | tuple) else type(items).__name__
        raise UserError(
            f"feature pickle {path} holds {count} items, not the 10-item DialogueRNN list; use a released file"
        )
    ids, speakers, labels, text, audio, visual, sentences = (dict(item) for item in items[:7])
    bundle = FeatureBundle(ids, speakers, labels, text, audio, visual, sentences, *(list(i) for i in items[7:]))
    _validate_bundle(path, bundle)
    return bundle


def _validate_bundle(path: Path, bundle: FeatureBundle) -> None:
    dims: dict[str, set[int]] = {m: set() for m in MODALITIES}
    for dialogue, keys in bundle.video_ids.items():
        columns = {"speakers": bundle.speakers, "labels": bundle.labels, "sentences": bundle.sentences}
        columns |= {m: getattr(bundle, m) for m in MODALITIES}
        lengths = {name: len(column[dialogue]) if dialogue in column else 0 for name, column in columns.items()}
        if any(n != len(keys) for n in lengths.values()):
            raise UserError(
                f"feature pickle {path.name} is missing utterances of dialogue {dialogue}: "
                f"{len(keys)} ids but lengths {lengths}; rebuild the pickle"
            )
        for m in MODALITIES:
            rows = getattr(bundle, m)[dialogue] = np.asarray(getattr(bundle, m)[dialogue])
            if rows.ndim != 2:
                raise UserError(
                    f"feature pickle {path.name}: {m} of dialogue {dialogue} is not a 2-D array; rebuild it"
                )
            dims[m].add(rows.shape[1])
        bad = [
            (i, y)
            for i, y in enumerate(bundle.labels[dialogue])
            if not (isinstance(y, int | np.integer) and 0 <= y < 7)
        ]
        if bad:
            raise UserError(
                f"feature pickle {path.name}: dialogue {dialogue} position {bad[0][0]} has label {bad[0][1]!r}; "
                "labels must be ids 0..6"
            )
    for m, found in dims.items():
        if len(found) > 1:
            raise UserError(f"feature pickle {path.name}: {m} features have several dims {sorted(found)}; rebuild it")
    for split, split_ids in bundle.split_ids.items():
        unknown = [d for d in split_ids if d not in bundle.video_ids]
        if unknown:
            raise UserError(f"feature pickle {path.name}: {split} list names dialogue {unknown[0]} with no features")
    if _FEATURE_NAME.fullmatch(path.name) is None:
        return
    feature_names = parse_feature_name(path.name)
    expected = {m: KNOWN_FEATURE_DIMS.get(getattr(feature_names, m)) for m in MODALITIES}
    got = bundle.dims if bundle.video_ids else expected
    if expected["audio"] != expected["visual"] and (got["audio"], got["visual"]) == (
        expected["visual"],
        expected["audio"],
    ):
        raise UserError(
            f"feature pickle {path.name} has audio and visual in the wrong order (audio {got['audio']}, visual "
            f"{got['visual']}); item 4 must be audio and item 5 visual"
        )
    wrong = {m: got[m] for m in MODALITIES if expected[m] is not None and got[m] != expected[m]}
    if wrong:
        raise UserError(
            f"mismatched feature dims in {path.name}: got {wrong}, the names say "
            f"{ {m: expected[m] for m in wrong} }; rename the file after its features"
        )


def save_feature_pickle(path: Path, bundle: FeatureBundle) -> Path:
    """Write ``bundle`` as the released 10-item list, atomically."""
    items = [
        OrderedDict(bundle.video_ids),
        bundle.speakers,
        bundle.labels,
        bundle.text,
        bundle.audio,
        bundle.visual,
        bundle.sentences,
        bundle.train_ids,
        bundle.val_ids,
        bundle.test_ids,
    ]
    return atomic_write(path, lambda f: pickle.dump(items, f, protocol=4))


class M3EDRelease:
    """A release folder: ``annotation.json``, ``splitInfo/``, optional relation file, and a feature pickle.

    ``annotations=False`` reads the feature pickle alone (its labels and train/val/test lists), as the
    official MDI code does: ``annotation.json``, ``splitInfo/`` and the relation file are not read.
    """

    def __init__(self, root: Path, features: str | None = None, *, annotations: bool = True) -> None:
        self.root = require_path(root, "M3ED release folder", kind="dir")
        self.splits: dict[str, str] = {}
        self.dialogues: list[Dialogue] = []
        self.relation: dict[str, EpisodeSpan] = {}
        if annotations:
            self.splits = read_splits(self.root)
            self.dialogues = load_annotation(self.root / "annotation.json", self.splits)
            relation_path = self.root / "relation_annotation_release.json"
            self.relation = load_relation(relation_path) if relation_path.is_file() else {}
        self.by_id = {d.dialogue_id: d for d in self.dialogues}
        self.features = load_feature_pickle(self.root / (features or self._single_pickle()))

    def _single_pickle(self) -> str:
        found = sorted(p.name for p in self.root.glob("*.pkl"))
        if not found:
            raise UserError(f"no feature pickle (*.pkl) in {self.root}; put a released A<..>-V<..>-L<..>.pkl there")
        if len(found) > 1:
            raise UserError(f"several feature pickles in {self.root}: {', '.join(found)}; choose one with --features")
        return found[0]

    def check(self) -> None:
        """Cross-check the pickle against the annotation: dialogues, splits, utterances and main labels."""
        bundle = self.features
        for split, dialogue_ids in bundle.split_ids.items():
            for dialogue_id in dialogue_ids:
                dialogue = self.by_id.get(dialogue_id)
                if dialogue is None:
                    raise UserError(
                        f"feature pickle {split} list names dialogue {dialogue_id}, absent from annotation.json"
                    )
                if dialogue.split != split:
                    raise UserError(
                        f"feature pickle lists dialogue {dialogue_id} under {split} but splitInfo puts movie "
                        f"{dialogue.movie} in {dialogue.split}; use the official split"
                    )
                keys = bundle.video_ids[dialogue_id]
                row = {utterance_key_to_id(k): i for i, k in enumerate(keys)}
                for utt in dialogue.utterances:
                    if utt.utt_id not in row:
                        raise UserError(
                            f"feature pickle is missing utterances of dialogue {dialogue_id}: {utt.utt_id}; rebuild it"
                        )
                    label = int(bundle.labels[dialogue_id][row[utt.utt_id]])
                    if label != utt.main_emotion:
                        raise UserError(
                            f"utterance {utt.utt_id}: pickle label {label} ({EMOTIONS[label]}) differs from "
                            f"annotation final_main_emo {EMOTIONS[utt.main_emotion]}; rebuild the pickle"
                        )

    def dialogues_in(self, split: str) -> list[str]:
        """Dialogue ids of ``split`` in the pickle's list order."""
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return list(self.features.split_ids[split])


def _turns(dialogue: Dialogue) -> int:
    speakers = [u.speaker for u in dialogue.utterances]
    return sum(1 for i, s in enumerate(speakers) if i == 0 or s != speakers[i - 1])


def release_stats(release: M3EDRelease) -> dict:
    """Per-split counts (movies, dialogues, turns, utterances, labels, multi-label), coverage, relation extras."""
    splits = {}
    for split in SPLITS:
        dialogues = [d for d in release.dialogues if d.split == split]
        utterances = [u for d in dialogues for u in d.utterances]
        labels = np.bincount([u.main_emotion for u in utterances], minlength=len(EMOTIONS))
        splits[split] = {
            "movies": len({d.movie for d in dialogues}),
            "dialogues": len(dialogues),
            "turns": sum(_turns(d) for d in dialogues),
            "utterances": len(utterances),
            "labels": dict(zip(EMOTIONS, labels.tolist(), strict=True)),
            "multi_label": sum(len(u.multi_emotions) > 1 for u in utterances),
        }
    bundle = release.features
    coverage = {}
    for m in MODALITIES:
        rows = [np.any(a != 0, axis=1) for a in getattr(bundle, m).values()]
        coverage[m] = float(np.concatenate(rows).mean()) if rows else 0.0
    annotated = set(release.by_id)
    return {
        "splits": splits,
        "coverage": coverage,
        "relation_without_annotation": sum(d not in annotated for d in release.relation),
    }


def format_stats(stats: dict) -> str:
    """Markdown tables of :func:`release_stats`."""
    headers = ["split", "movies", "dialogues", "turns", "utterances", "multi-label", *EMOTIONS]
    rows = [
        [split, s["movies"], s["dialogues"], s["turns"], s["utterances"], s["multi_label"], *s["labels"].values()]
        for split, s in stats["splits"].items()
    ]
    coverage = markdown_table(list(MODALITIES), [[f"{stats['coverage'][m]:.1%}" for m in MODALITIES]])
    return (
        f"{markdown_table(headers, rows)}\n\nModality coverage (non-zero feature rows):\n\n{coverage}\n\n"
        f"Relation entries without annotation: {stats['relation_without_annotation']}"
    )
