"""The files a run writes for its networks: a classifier (teacher or student) or a generator, each with its
tokenizer and size, loaded back with ``weights_only=True`` and checked before use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from shared.checkpoint import load_checkpoint, save_checkpoint
from shared.errors import UserError

from .hf import HF_CLASSIFIER_LAYERS, BertClassifier, HFCausalLM, HFTokenizer, bert_from_config
from .models import CLASSIFIER_SIZES, GENERATOR_SIZES, CausalLM, TextClassifier, build_classifier, build_generator
from .text import WordTokenizer


@dataclass
class ClassifierBundle:
    """A text classifier with the tokenizer it reads and its class names."""

    model: TextClassifier | BertClassifier
    tokenizer: WordTokenizer | HFTokenizer
    classes: list[str]
    size: str
    max_len: int

    @property
    def pooling(self) -> str:
        return self.model.pooling


@dataclass
class GeneratorBundle:
    """A causal language model with its tokenizer."""

    model: CausalLM | HFCausalLM
    tokenizer: WordTokenizer | HFTokenizer
    size: str
    max_len: int


def save_classifier(path: str | Path, bundle: ClassifierBundle) -> Path:
    """Write ``bundle`` atomically (``kind: classifier``); a MiniLM classifier also records its encoder
    configuration and tokenizer, so it loads with no model files."""
    extra = {}
    if isinstance(bundle.tokenizer, HFTokenizer):
        extra["tokenizer"] = bundle.tokenizer.to_dict()
    if isinstance(bundle.model, BertClassifier):
        extra["hf_config"] = bundle.model.hf_config()
    return _save(path, "classifier", bundle, classes=list(bundle.classes), pooling=bundle.pooling, **extra)


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> ClassifierBundle:
    """A classifier file written by :func:`save_classifier` (teacher or student), in eval mode on ``device``."""
    state = _load(path, "classifier", "promptdfd-train-teacher or promptdfd-distill")
    if state["size"] not in (*CLASSIFIER_SIZES, *HF_CLASSIFIER_LAYERS):
        raise UserError(f"{path}: unknown classifier size {state['size']!r}; was it written by another version?")
    n_classes, max_len = len(state["classes"]), int(state["max_len"])
    tokenizer = HFTokenizer.from_dict(state["tokenizer"]) if "tokenizer" in state else WordTokenizer(state["vocab"])
    if "hf_config" in state:
        model = bert_from_config(state["hf_config"], n_classes)
    else:
        model = build_classifier(
            state["size"], tokenizer.vocab_size, n_classes, max_len, pooling=state.get("pooling", "cls")
        )
    _load_weights(model, state["model"], path)
    return ClassifierBundle(model.to(device).eval(), tokenizer, list(state["classes"]), state["size"], state["max_len"])


def save_generator(path: str | Path, bundle: GeneratorBundle) -> Path:
    """Write ``bundle`` atomically (``kind: generator``)."""
    return _save(path, "generator", bundle)


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> GeneratorBundle:
    """A generator file written by :func:`save_generator`, frozen, in eval mode on ``device``."""
    state = _load(path, "generator", "promptdfd-train-generator")
    if state["size"] not in GENERATOR_SIZES:
        raise UserError(f"{path}: unknown generator size {state['size']!r}; was it written by another version?")
    tokenizer = WordTokenizer(state["vocab"])
    model = build_generator(state["size"], tokenizer.vocab_size, int(state["max_len"]))
    _load_weights(model, state["model"], path)
    return GeneratorBundle(model.to(device).eval().requires_grad_(False), tokenizer, state["size"], state["max_len"])


def _save(path: str | Path, kind: str, bundle: ClassifierBundle | GeneratorBundle, **extra) -> Path:
    state = {
        "kind": kind,
        "model": bundle.model.state_dict(),
        "vocab": list(bundle.tokenizer.vocab) if isinstance(bundle.tokenizer, WordTokenizer) else [],
        "size": bundle.size,
        "max_len": bundle.max_len,
        **extra,
    }
    save_checkpoint(path, state)
    return Path(path)


def _load(path: str | Path, kind: str, writer: str) -> dict:
    state = load_checkpoint(path)
    found = state.get("kind") if isinstance(state, dict) else None
    if found != kind:
        what = f"a {found}" if found else "not a promptdfd model file"
        raise UserError(f"{path} is {what}, not a {kind}: pass a file written by {writer}")
    return state


def _load_weights(model: torch.nn.Module, weights: dict, path: str | Path) -> None:
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"{path}: the weights do not fit the recorded size ({str(exc).splitlines()[0]})") from None
