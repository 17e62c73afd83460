"""A synthetic M3ED release in the real on-disk layout, with planted context dependence.

Dialogue shapes and label dynamics follow the M3ED ratios (the authors' notes, ``codes/note.md`` of
github.com/JinmingZhao/MEmoConv): utterances per dialogue ~ clipped Poisson(24.7), utterances per turn
1 + Poisson(1.69), labels a Markov chain with intra-turn inertia 0.79 and inter-turn inertia 0.33 over the
train-set class prior, 10.7% multi-label utterances: a main emotion with a listed partner gets a
secondary one (drawn from the notes' co-occurrence list, by count) at a rate that makes 10.7% overall.

Features: per modality, a fixed random unit prototype per class scaled by the modality's SNR, plus
Gaussian noise made of a "confusion" part inside the span of the prototypes (unit variance per prototype
direction, which sets the Bayes error) and a small isotropic part (norm about 1, which keeps prototypes
learnable from a few hundred utterances); rows are scaled by sqrt(dim) so coordinates are O(1). For
``ambiguous_fraction`` of the utterances that have an earlier utterance by the same speaker, the class
prototype is replaced by a shared "ambiguous" prototype and the label copies that earlier utterance's
label: only the same speaker's context recovers it. A multi-label utterance also carries a fixed random
unit direction of its secondary emotion (one per emotion and modality, scaled by ``secondary_snr`` times
the modality's SNR, drawn from a generator of its own so the rest of the release is that of the
single-label generator): the secondary emotion is recoverable from the features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from m3ed.release import (
    EMOTIONS,
    KNOWN_FEATURE_DIMS,
    MODALITIES,
    SPLITS,
    FeatureBundle,
    format_hmsf,
    parse_feature_name,
    save_feature_pickle,
)
from shared.checkpoint import atomic_write
from shared.errors import UserError

# train-set class proportions of M3ED (the authors' class weights), in EMOTIONS order
PRIOR = np.array([0.093303, 0.409135, 0.156883, 0.065703, 0.218971, 0.016067, 0.039938])
PRIOR = PRIOR / PRIOR.sum()
# most frequent (main, secondary) multi-label combinations of M3ED and their counts (the authors' notes)
CO_OCCURRENCE = {
    ("Anger", "Disgust"): 705,
    ("Anger", "Sad"): 481,
    ("Sad", "Anger"): 340,
    ("Disgust", "Anger"): 312,
    ("Fear", "Sad"): 97,
    ("Sad", "Fear"): 93,
    ("Neutral", "Sad"): 88,
    ("Neutral", "Happy"): 85,
}
FEATURE_FILE = "Asent_wav2vec_zh2chmed2e5last-Vsent_avg_affectdenseface-Lsent_cls_robert_wwm_base_chinese4chmed.pkl"
_CHARS = list("你我他她好是的不了在有人这中大来上个到说们为子和也就要会没看想知道去吧呢啊吗哪怎么")
_NAMES = ["朱闪闪", "房似锦", "徐文昌", "樊胜美", "安迪", "邱莹莹", "关雎尔", "曲筱绡", "乔英子", "方一凡"]


@dataclass
class SyntheticConfig:
    """Sizes and generative parameters; ``movie_names`` (train, then val, then test) must number ``movies``."""

    movies: int = 12
    dialogues_per_movie: tuple[int, int] = (4, 8)
    mean_utterances: float = 24.7
    min_utterances: int = 4
    max_utterances: int = 60
    mean_extra_per_turn: float = 1.69
    intra_inertia: float = 0.79
    inter_inertia: float = 0.33
    multi_label_rate: float = 0.107
    ambiguous_fraction: float = 0.4
    secondary_snr: float = 2.0  # strength of the secondary emotion's direction, relative to the modality SNR
    snr: dict[str, float] = field(default_factory=lambda: {"text": 1.2, "audio": 0.8, "visual": 0.5})
    feature_file: str = FEATURE_FILE
    extra_relation_dialogues: int = 3
    movie_names: list[str] | None = None

    def movie_splits(self) -> dict[str, str]:
        """Movie -> split: a sixth of the movies each for val and test (12 -> 8/2/2), in name order."""
        names = self.movie_names or [f"series{i + 1:02d}" for i in range(self.movies)]
        if len(names) != self.movies or len(set(names)) != self.movies:
            raise UserError(f"movie_names must hold {self.movies} distinct names (got {len(names)}); match --movies")
        if self.movies < 3:
            raise UserError(f"a synthetic release needs at least 3 movies (got {self.movies}); raise --movies")
        held_out = max(1, round(self.movies / 6))
        n_train = self.movies - 2 * held_out
        return {m: "train" if i < n_train else "val" if i < n_train + held_out else "test" for i, m in enumerate(names)}


def _speakers(rng: np.random.Generator, n: int, mean_extra: float) -> list[str]:
    speakers: list[str] = []
    speaker = "A"
    while len(speakers) < n:
        speakers += [speaker] * (1 + int(rng.poisson(mean_extra)))
        speaker = "B" if speaker == "A" else "A"
    return speakers[:n]


def _labels(rng: np.random.Generator, speakers: list[str], cfg: SyntheticConfig) -> tuple[list[int], list[bool]]:
    labels: list[int] = []
    ambiguous: list[bool] = []
    last = {"A": None, "B": None}
    for i, speaker in enumerate(speakers):
        is_ambiguous = last[speaker] is not None and rng.random() < cfg.ambiguous_fraction
        if is_ambiguous:
            label = last[speaker]
        else:
            inertia = cfg.intra_inertia if i and speaker == speakers[i - 1] else cfg.inter_inertia
            label = labels[-1] if i and rng.random() < inertia else int(rng.choice(len(EMOTIONS), p=PRIOR))
        labels.append(label)
        ambiguous.append(is_ambiguous)
        last[speaker] = label
    return labels, ambiguous


def _secondary(rng: np.random.Generator, main: int, rate: float) -> int | None:
    partners = [(EMOTIONS.index(b), n) for (a, b), n in CO_OCCURRENCE.items() if a == EMOTIONS[main]]
    # mains without a listed partner never get one, so raise the rate for the others to keep the overall rate
    eligible = sum(PRIOR[EMOTIONS.index(a)] for a in {a for a, _ in CO_OCCURRENCE})
    if not partners or rng.random() >= rate / eligible:
        return None
    weights = np.array([n for _, n in partners], dtype=float)
    return partners[int(rng.choice(len(partners), p=weights / weights.sum()))][0]


def _features(rng: np.random.Generator, classes: np.ndarray, dim: int, snr: float) -> np.ndarray:
    """Rows sqrt(dim) * (snr * prototype + confusion noise in the prototype span + isotropic noise)."""
    prototypes = rng.standard_normal((len(EMOTIONS) + 1, dim))
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    n = len(classes)
    rows = snr * prototypes[classes] + rng.standard_normal((n, len(prototypes))) @ prototypes
    rows += rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (rows * np.sqrt(dim)).astype(np.float32)


def _secondary_directions(rng: np.random.Generator, seconds: np.ndarray, dim: int, snr: float) -> np.ndarray:
    """Rows sqrt(dim) * snr * (unit direction of the secondary emotion), zero where ``seconds`` is -1 (none)."""
    directions = rng.standard_normal((len(EMOTIONS), dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    rows = np.where(seconds[:, None] >= 0, directions[seconds], 0.0)
    return (snr * np.sqrt(dim) * rows).astype(np.float32)


def _annotation_entry(rng: np.random.Generator, utt: dict, frame: int) -> tuple[dict, int]:
    start = frame + int(rng.integers(0, 12))
    end = start + int(rng.integers(20, 100))
    main, multi = EMOTIONS[utt["label"]], ",".join(EMOTIONS[e] for e in utt["multi"])
    entry = {
        "StartTime": format_hmsf(start),
        "EndTime": format_hmsf(end),
        "Text": "".join(rng.choice(_CHARS, size=max(2, int(rng.poisson(9.4))))),
        "Speaker": utt["speaker"],
        "EmoAnnotation": {
            "EmoAnnotator1": multi,
            "EmoAnnotator2": main,
            "EmoAnnotator3": EMOTIONS[utt["multi"][-1]],
            "final_mul_emo": multi,
            "final_main_emo": main,
        },
    }
    return entry, end


def _split_truth(
    dialogues: dict[str, list[dict]], split_ids: dict[str, list[str]], movie_splits: dict[str, str]
) -> dict:
    """Per-split counts in the layout of :func:`m3ed.release.release_stats`."""
    truth = {}
    for split in SPLITS:
        in_split = [dialogues[d] for d in split_ids[split]]
        split_utts = [u for d in in_split for u in d]
        counts = np.bincount([u["label"] for u in split_utts], minlength=len(EMOTIONS))
        truth[split] = {
            "movies": sum(s == split for s in movie_splits.values()),
            "dialogues": len(in_split),
            "turns": sum(1 + sum(a["speaker"] != b["speaker"] for a, b in pairwise(d)) for d in in_split),
            "utterances": len(split_utts),
            "labels": dict(zip(EMOTIONS, counts.tolist(), strict=True)),
            "multi_label": sum(len(u["multi"]) > 1 for u in split_utts),
        }
    return truth


def make_synthetic_release(root: Path, config: SyntheticConfig | None = None, seed: int = 0) -> dict:
    """Write a synthetic release under ``root`` and return its ground truth.

    The result holds ``splits`` (per split: movies, dialogues, turns, utterances, label counts by emotion
    name, multi_label; the layout of :func:`m3ed.release.release_stats`), ``relation_without_annotation``,
    ``feature_file`` and ``ambiguous`` (dialogue id -> positions of the context-only utterances).
    """
    cfg = config or SyntheticConfig()
    root = Path(root)
    rng = np.random.default_rng(seed)
    movie_splits = cfg.movie_splits()
    feature_names = parse_feature_name(cfg.feature_file)
    dims = {m: KNOWN_FEATURE_DIMS.get(getattr(feature_names, m)) for m in MODALITIES}
    if None in dims.values():
        raise UserError(f"feature file {cfg.feature_file} names unknown features; use names of KNOWN_FEATURE_DIMS")

    dialogues: dict[str, list[dict]] = {}
    movie_of: dict[str, str] = {}
    for movie in movie_splits:
        low, high = cfg.dialogues_per_movie
        for k in range(1, int(rng.integers(low, high + 1)) + 1):
            n = int(np.clip(rng.poisson(cfg.mean_utterances), cfg.min_utterances, cfg.max_utterances))
            speakers = _speakers(rng, n, cfg.mean_extra_per_turn)
            labels, ambiguous = _labels(rng, speakers, cfg)
            dialogue_id = f"{movie}_{k}"
            movie_of[dialogue_id] = movie
            dialogues[dialogue_id] = []
            for j, (s, y, a) in enumerate(zip(speakers, labels, ambiguous, strict=True)):
                second = _secondary(rng, y, cfg.multi_label_rate)
                multi = [y] if second is None else [y, second]
                dialogues[dialogue_id].append(
                    {"id": f"{dialogue_id}_{j + 1}", "speaker": s, "label": y, "multi": multi, "ambiguous": a}
                )

    annotation: dict[str, dict] = {m: {} for m in movie_splits}
    relation: dict[str, dict] = {m: {} for m in movie_splits}
    for dialogue_id, utts in dialogues.items():
        frame, entries = 1, {}
        for utt in utts:
            entries[utt["id"]], frame = _annotation_entry(rng, utt, frame)
        names = rng.choice(_NAMES, size=2, replace=False)
        annotation[movie_of[dialogue_id]][dialogue_id] = {
            "SpeakerInfo": {
                s: {"Name": str(name), "Age": str(rng.choice(["young", "mid"])), "Gender": g, "OtherName": []}
                for s, name, g in zip("AB", names, ("male", "female"), strict=True)
            },
            "Dialog": entries,
        }
        start = int(rng.integers(0, 25 * 60 * 40))
        relation[movie_of[dialogue_id]][dialogue_id] = {
            "episode": int(rng.integers(1, 40)),
            "start_time": format_hmsf(start),
            "end_time": format_hmsf(start + frame),
        }
    for i in range(cfg.extra_relation_dialogues):
        movie = list(movie_splits)[i % len(movie_splits)]
        extra_id = f"{movie}_{len(relation[movie]) + 1}"
        relation[movie][extra_id] = {"episode": 1, "start_time": "00:00:10:00", "end_time": "00:00:40:00"}

    utts = [u for d in dialogues.values() for u in d]
    classes = np.array([len(EMOTIONS) if u["ambiguous"] else u["label"] for u in utts])
    features = {m: _features(rng, classes, dims[m], cfg.snr[m]) for m in MODALITIES}
    seconds = np.array([u["multi"][1] if len(u["multi"]) > 1 else -1 for u in utts])
    secondary_rng = np.random.default_rng([seed, 1])
    for m in MODALITIES:
        features[m] += _secondary_directions(secondary_rng, seconds, dims[m], cfg.secondary_snr * cfg.snr[m])
    offsets = np.cumsum([0] + [len(d) for d in dialogues.values()])
    rows = {
        m: {d: features[m][a:b] for d, a, b in zip(dialogues, offsets[:-1], offsets[1:], strict=True)}
        for m in MODALITIES
    }
    split_ids = {s: [d for d in dialogues if movie_splits[movie_of[d]] == s] for s in SPLITS}
    bundle = FeatureBundle(
        video_ids={d: [f"{u['speaker']}_{u['id']}" for u in us] for d, us in dialogues.items()},
        speakers={d: [u["speaker"] for u in us] for d, us in dialogues.items()},
        labels={d: [u["label"] for u in us] for d, us in dialogues.items()},
        text=rows["text"],
        audio=rows["audio"],
        visual=rows["visual"],
        sentences={
            d: np.array([annotation[movie_of[d]][d]["Dialog"][u["id"]]["Text"] for u in us])
            for d, us in dialogues.items()
        },
        train_ids=split_ids["train"],
        val_ids=split_ids["val"],
        test_ids=split_ids["test"],
    )

    texts = {
        f"splitInfo/movie_list_{s}.txt": "\n".join(m for m in movie_splits if movie_splits[m] == s) for s in SPLITS
    }
    texts["splitInfo/movie_list_total.txt"] = "\n".join(movie_splits)  # no trailing newline, as released
    texts["annotation.json"] = json.dumps(annotation, ensure_ascii=False, indent=4)
    texts["relation_annotation_release.json"] = json.dumps(relation, ensure_ascii=False, indent=4)
    for name, text in texts.items():
        atomic_write(root / name, lambda f, t=text: f.write(t.encode("utf-8")))
    save_feature_pickle(root / cfg.feature_file, bundle)

    return {
        "splits": _split_truth(dialogues, split_ids, movie_splits),
        "relation_without_annotation": cfg.extra_relation_dialogues,
        "feature_file": cfg.feature_file,
        "ambiguous": {d: [j for j, u in enumerate(us) if u["ambiguous"]] for d, us in dialogues.items()},
    }
