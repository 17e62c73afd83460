"""Tokenizers and sentence encoders. Encoders return (B, L, C) token features with the [CLS] token at 0.

The TBVS release encodes a sentence with BERT-base-uncased (``model/language.py``: ``BertModel``, last hidden
states) from 20 token ids built in ``dataset/A2D_dataset.py`` (:class:`BertWordPieceTokenizer`). Offline,
:class:`WordTokenizer` + :class:`TinyTextEncoder` replace them; :class:`HFBertEncoder` loads any local
BERT-architecture directory (extra ``[bert]``: transformers).
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from shared.errors import UserError

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP)
_WORD = re.compile(r"[\w']+")


def _pad_batch(rows: list[list[int]], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists with 0 to ``max_tokens``; the attention mask is 1 on ids, 0 on padding."""
    ids = torch.zeros(len(rows), max_tokens, dtype=torch.long)
    mask = torch.zeros(len(rows), max_tokens, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _as_list(sentences: str | Sequence[str]) -> list[str]:
    return [sentences] if isinstance(sentences, str) else list(sentences)


class WordTokenizer:
    """Word-level tokenizer: ``[CLS] w_1 … w_n [SEP]`` then 0-padding to ``max_tokens`` ids.

    Words are the lower-cased ``[\\w']+`` runs of a sentence; unknown words map to ``[UNK]``; at most
    ``max_tokens - 2`` words are kept. The vocabulary starts with ``[PAD]`` (id 0), ``[UNK]``, ``[CLS]``,
    ``[SEP]`` (added when missing), so ``WordTokenizer(tok.vocab, n)`` rebuilds ``tok`` exactly.
    """

    def __init__(self, vocab: Sequence[str], max_tokens: int = 20) -> None:
        if max_tokens < 2:
            raise ValueError("max_tokens must leave room for [CLS] and [SEP]")
        self.vocab = [*SPECIAL_TOKENS, *(w for w in dict.fromkeys(vocab) if w not in SPECIAL_TOKENS)]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_tokens = max_tokens

    @staticmethod
    def words(sentence: str) -> list[str]:
        """The normalised words of a sentence."""
        return _WORD.findall(sentence.lower())

    @classmethod
    def from_sentences(cls, sentences: Iterable[str], max_tokens: int = 20) -> WordTokenizer:
        """A vocabulary of every word of ``sentences`` (sorted, so the ids do not depend on their order)."""
        return cls(sorted({w for s in sentences for w in cls.words(s)}), max_tokens)

    @classmethod
    def load(cls, path: str | os.PathLike, max_tokens: int = 20) -> WordTokenizer:
        """Read a vocabulary saved by :meth:`save` (a JSON list of words)."""
        try:
            vocab = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the word vocabulary {path}: {exc}") from exc
        if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
            raise UserError(f"{path} is not a JSON list of words")
        return cls(vocab, max_tokens)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as a JSON list of words."""
        Path(path).write_text(json.dumps(self.vocab), encoding="utf-8")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, sentences: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, max_tokens) long and attention mask (B, max_tokens) long (1 = token, 0 = padding)."""
        unk, cls_id, sep = self.index[UNK], self.index[CLS], self.index[SEP]
        rows = [
            [cls_id, *(self.index.get(w, unk) for w in self.words(s)[: self.max_tokens - 2]), sep]
            for s in _as_list(sentences)
        ]
        return _pad_batch(rows, self.max_tokens)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Sentences from (B, L) ids, without special tokens."""
        return [
            " ".join(self.vocab[i] for i in row if self.vocab[i] not in SPECIAL_TOKENS)
            for row in ids.reshape(-1, ids.shape[-1]).tolist()
        ]


def _read_vocab(path: str | os.PathLike) -> tuple[Path, dict[str, int]]:
    p = Path(path).expanduser()
    file = p / "vocab.txt" if p.is_dir() else p
    if not file.is_file():
        raise UserError(f"no BERT vocab.txt at {p}: point --text-model at a local BERT directory holding vocab.txt")
    with open(file, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    missing = [t for t in (UNK, CLS, SEP) if t not in vocab]
    if missing:
        raise UserError(f"{file} lacks {', '.join(missing)}: it is not a BERT WordPiece vocabulary")
    return file, vocab


def _basic_tokens(text: str) -> list[str]:
    """BERT's basic tokenisation (uncased): lower-case, strip accents, split on spaces and punctuation."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out: list[str] = []
    for word in text.split():
        current = ""
        for c in word:
            cp = ord(c)
            is_punct = (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126) or (
                unicodedata.category(c).startswith("P")
            )
            if is_punct:
                if current:
                    out.append(current)
                out.append(c)
                current = ""
            else:
                current += c
        if current:
            out.append(current)
    return out


def wordpiece(text: str, vocab: dict[str, int], max_chars: int = 100) -> list[str]:
    """Greedy longest-match-first WordPiece of BERT (uncased) on ``text``; an unsplittable word is ``[UNK]``."""
    pieces: list[str] = []
    for word in _basic_tokens(text):
        if len(word) > max_chars:
            pieces.append(UNK)
            continue
        start, sub = 0, []
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            if end == start:
                sub = [UNK]
                break
            sub.append(piece)
            start = end
        pieces.extend(sub)
    return pieces


class BertWordPieceTokenizer:
    """The TBVS release's sentence → 20 BERT ids rule, from a local ``vocab.txt``.

    ``dataset/A2D_dataset.py``: split the sentence on single spaces, keep the first ``max_tokens - 2`` words,
    ``tokenizer.encode(words, add_special_tokens=True)``, keep the first ``max_tokens`` ids, pad with 0.

    ``mode="official"`` (default, faithful): transformers ≤ 4's ``BertTokenizer.encode`` maps a *list of
    strings* through ``convert_tokens_to_ids``, so each space-separated word is looked up whole and
    case-sensitively in the vocabulary (``[UNK]`` when absent), without WordPiece: 18 words + [CLS] + [SEP]
    always fit in 20 ids. ``mode="wordpiece"``: the evidently intended uncased WordPiece of the same words
    (transformers' ``BertTokenizer`` when importable, else :func:`wordpiece`); the cut to 20 ids may then
    drop [SEP].
    """

    def __init__(self, path: str | os.PathLike, max_tokens: int = 20, *, mode: str = "official") -> None:
        if mode not in ("official", "wordpiece"):
            raise ValueError(f"mode must be 'official' or 'wordpiece', not {mode!r}")
        self.vocab_file, self.vocab = _read_vocab(path)
        self.max_tokens = max_tokens
        self.mode = mode
        self._hf = None
        if mode == "wordpiece":
            try:
                from transformers import BertTokenizer
            except ImportError:
                pass
            else:
                self._hf = BertTokenizer(str(self.vocab_file), do_lower_case=True)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokens(self, sentence: str) -> list[str]:
        """The tokens between [CLS] and [SEP] before the cut to ``max_tokens`` ids."""
        words = sentence.split(" ")[: self.max_tokens - 2]
        if self.mode == "official":
            return words
        text = " ".join(words)
        return self._hf.tokenize(text) if self._hf is not None else wordpiece(text, self.vocab)

    def encode(self, sentences: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, max_tokens) long and attention mask (B, max_tokens) long (1 = token, 0 = padding)."""
        unk = self.vocab[UNK]
        rows = [
            [self.vocab[CLS], *(self.vocab.get(t, unk) for t in self.tokens(s)), self.vocab[SEP]][: self.max_tokens]
            for s in _as_list(sentences)
        ]
        return _pad_batch(rows, self.max_tokens)


class TinyTextEncoder(nn.Module):
    """A small offline stand-in for BERT: token + learned position embeddings, a pre-norm transformer encoder.

    ``forward(ids (B, L), mask (B, L)) -> (B, L, dim)``; padded positions (mask 0) are excluded as attention
    keys, so they do not change the features of real tokens (the [CLS] feature at 0 in particular).

    ``sentence`` chooses the sentence feature at position 0, the one TBVS reads as BERT's [CLS]: ``"mean"``
    (default) the masked mean of the word features, ``"cls"`` the [CLS] token's own output. BERT's [CLS] comes
    pre-trained; a [CLS] trained from scratch stays nearly constant (measured on the demo model after 600
    iterations: cosine >= 0.99 between "the red circle moving left" and "... moving right"), so the sentence
    gates of the fusion blocks cannot tell the queries apart.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 64,
        layers: int = 1,
        heads: int = 2,
        max_tokens: int = 20,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        sentence: str = "mean",
    ) -> None:
        super().__init__()
        if sentence not in ("mean", "cls"):
            raise ValueError(f"sentence must be 'mean' or 'cls', got {sentence!r}")
        self.dim = dim
        self.sentence = sentence
        self.max_tokens = max_tokens
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, max_tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if ids.shape[1] > self.max_tokens:
            raise ValueError(f"{ids.shape[1]} tokens exceed max_tokens={self.max_tokens}")
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        pad = None if mask is None else mask == 0
        out = self.norm(self.encoder(x, src_key_padding_mask=pad))
        if self.sentence == "cls":
            return out
        words = torch.ones_like(ids[:, 1:], dtype=out.dtype) if mask is None else mask[:, 1:].to(out.dtype)
        mean = (out[:, 1:] * words[..., None]).sum(1) / words.sum(1, keepdim=True).clamp_min(1)
        return torch.cat([mean[:, None], out[:, 1:]], dim=1)


def _require_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise UserError(
            "the hf-bert text encoder needs transformers: pip install 'reprozoo-tbvs[bert]' "
            "(or use --text-encoder tiny)"
        ) from exc
    return transformers


def _check_bert_dir(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    config = p / "config.json"
    if not config.is_file():
        raise UserError(f"{p} is not a local BERT directory (no config.json): give the folder of a BERT model")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except ValueError as exc:
        raise UserError(f"{config} is not valid JSON: {exc}") from exc
    if model_type != "bert":
        raise UserError(f"{p} holds a {model_type!r} model, not BERT: give a BERT-architecture directory")
    if not any((p / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise UserError(f"{p} has no weights (model.safetensors or pytorch_model.bin)")
    return p


class HFBertEncoder(nn.Module):
    """A local transformers ``BertModel`` (BERT-base-uncased in the paper); returns the last hidden states.

    ``freeze_embeddings``: the release's optimizer groups hold BERT's encoder layers and pooler only, so the
    embedding module (word, position, token-type embeddings and their LayerNorm) is never updated; here it
    has ``requires_grad=False``. The pooler, unused by TBVS, is not built.
    """

    def __init__(self, path: str | os.PathLike, freeze_embeddings: bool = True) -> None:
        super().__init__()
        transformers = _require_transformers()
        p = _check_bert_dir(path)
        self.bert = transformers.BertModel.from_pretrained(str(p), local_files_only=True, add_pooling_layer=False)
        self.dim = self.bert.config.hidden_size
        if freeze_embeddings:
            self.bert.embeddings.requires_grad_(False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state


def build_text_encoder(
    kind: str,
    *,
    vocab_size: int | None = None,
    dim: int = 64,
    layers: int = 1,
    heads: int = 2,
    max_tokens: int = 20,
    path: str | os.PathLike | None = None,
    freeze_embeddings: bool = True,
) -> TinyTextEncoder | HFBertEncoder:
    """``kind="tiny"``: :class:`TinyTextEncoder` (needs ``vocab_size``); ``"hf-bert"``: :class:`HFBertEncoder`
    from the local directory ``path``. Both expose ``.dim``."""
    if kind == "tiny":
        if vocab_size is None:
            raise ValueError("the tiny text encoder needs vocab_size")
        return TinyTextEncoder(vocab_size, dim, layers, heads, max_tokens)
    if kind == "hf-bert":
        if path is None:
            raise UserError("the hf-bert text encoder needs a local BERT directory: pass --text-model PATH")
        return HFBertEncoder(path, freeze_embeddings)
    raise UserError(f"unknown text encoder {kind!r}: choose 'tiny' or 'hf-bert'")


def build_tokenizer(
    kind: str,
    *,
    max_tokens: int = 20,
    path: str | os.PathLike | None = None,
    vocab: Sequence[str] | None = None,
    mode: str = "official",
) -> WordTokenizer | BertWordPieceTokenizer:
    """The tokenizer matching :func:`build_text_encoder`: a :class:`WordTokenizer` over ``vocab`` for "tiny",
    a :class:`BertWordPieceTokenizer` on ``path``/vocab.txt for "hf-bert"."""
    if kind == "tiny":
        if vocab is None:
            raise ValueError("the word tokenizer needs a vocabulary")
        return WordTokenizer(vocab, max_tokens)
    if kind == "hf-bert":
        if path is None:
            raise UserError("the hf-bert tokenizer needs a local BERT directory: pass --text-model PATH")
        return BertWordPieceTokenizer(path, max_tokens, mode=mode)
    raise UserError(f"unknown text encoder {kind!r}: choose 'tiny' or 'hf-bert'")
