"""Word-level text normalisation and tokenizer shared by the teacher, student and generator.

Ma et al., PromptDFD (IJCAI 2022) pair a BERT teacher/student with a GPT-2 generator; here all three
models read one small word vocabulary, so generated text needs no re-tokenisation.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from shared.checkpoint import save_json
from shared.errors import UserError, require_path

__all__ = ["BOS", "CLS", "EOS", "PAD", "SPECIAL_TOKENS", "UNK", "WordTokenizer", "normalize", "pad_rows"]

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>", "<cls>")
PAD, UNK, BOS, EOS, CLS = 0, 1, 2, 3, 4

_PUNCT = re.compile(r"""([.,!?:;'"()])""")


def normalize(text: str) -> list[str]:
    """Lower-cased words; each of ``. , ! ? : ; ' " ( )`` is a token of its own."""
    return _PUNCT.sub(r" \1 ", text.lower()).split()


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token-id rows as ``[B, L]`` right-padded with ``pad_id`` to the longest row, and the mask (True on real
    tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


class WordTokenizer:
    """Maps normalised words to ids; ids 0-4 are :data:`SPECIAL_TOKENS`, unknown words map to ``<unk>``."""

    def __init__(self, vocab: Sequence[str]) -> None:
        vocab = list(vocab)
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}, got {vocab[: len(SPECIAL_TOKENS)]}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("a vocabulary must not repeat a word")
        self.vocab = vocab
        self._index = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def build(cls, texts: Iterable[str], *, max_size: int | None = None, min_count: int = 1) -> WordTokenizer:
        """Specials, then the words of ``texts`` seen ``min_count`` times or more, most frequent first (ties by
        word). ``max_size`` caps the whole vocabulary, specials included."""
        if max_size is not None and max_size < len(SPECIAL_TOKENS):
            raise ValueError(f"max_size must be at least {len(SPECIAL_TOKENS)} (the special tokens), got {max_size}")
        counts = Counter(w for text in texts for w in normalize(text))
        words = sorted(
            (w for w, c in counts.items() if c >= min_count and w not in SPECIAL_TOKENS),
            key=lambda w: (-counts[w], w),
        )
        if max_size is not None:
            words = words[: max_size - len(SPECIAL_TOKENS)]
        return cls([*SPECIAL_TOKENS, *words])

    #: Generations start with ``<bos>``; unknown words read as ``<unk>``.
    bos_id, unk_id = BOS, UNK

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def special_mask(self, ids: Tensor) -> Tensor:
        """True where ``ids`` are special tokens (padding, ``<unk>``, start/end markers, ``<cls>``)."""
        return ids < len(SPECIAL_TOKENS)

    def word_list(self) -> list[str]:
        """The vocabulary's words, special tokens left out (what random-token synthesis draws from)."""
        return self.vocab[len(SPECIAL_TOKENS) :]

    def id_of(self, word: str) -> int:
        return self._index.get(word, UNK)

    def encode(
        self,
        text: str,
        *,
        max_len: int | None = None,
        add_bos: bool = False,
        add_eos: bool = False,
        add_cls: bool = False,
    ) -> list[int]:
        """``[<cls>] [<bos>] words [<eos>]``; ``max_len`` caps the total length, keeping ``<eos>`` last."""
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        ids = [CLS] * add_cls + [BOS] * add_bos + [self.id_of(w) for w in normalize(text)] + [EOS] * add_eos
        if max_len is not None and len(ids) > max_len:
            ids = [*ids[: max_len - 1], EOS] if add_eos else ids[:max_len]
        return ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Words joined by single spaces (special tokens left out unless ``skip_special`` is False)."""
        words = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"token id {i} is outside the vocabulary (size {len(self.vocab)})")
            if not (skip_special and i < len(SPECIAL_TOKENS)):
                words.append(self.vocab[i])
        return " ".join(words)

    def batch_encode(self, texts: Sequence[str], *, max_len: int, add_cls: bool = True) -> tuple[Tensor, Tensor]:
        """Ids ``[B, L]`` right-padded with ``<pad>`` to the longest row (at most ``max_len``) and the mask
        (True on real tokens). An empty text becomes ``[<cls>]`` (``[<unk>]`` without ``add_cls``)."""
        if not texts:
            raise ValueError("batch_encode needs at least one text")
        return pad_rows([self.encode(t, max_len=max_len, add_cls=add_cls) or [UNK] for t in texts], PAD)

    def to_dict(self) -> dict:
        return {"kind": "word", "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict) -> WordTokenizer:
        vocab = d.get("vocab") if isinstance(d, dict) else None
        if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
            raise UserError("a saved tokenizer needs a 'vocab' list of words: save it with WordTokenizer.save")
        try:
            return cls(vocab)
        except ValueError as exc:
            raise UserError(f"the saved tokenizer is invalid ({exc}): save it again with WordTokenizer.save") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write the vocabulary as JSON, atomically."""
        return save_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        path = require_path(path, "tokenizer file", kind="file")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"{path} is not readable tokenizer JSON ({exc}): save it with WordTokenizer.save") from exc
        try:
            return cls.from_dict(d)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from exc
