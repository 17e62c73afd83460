"""Tests of the synthetic-set makers (promptdfd.synth)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import assert_close

from promptdfd.models import GRUPrompter, build_generator
from promptdfd.synth import (
    CorpusSynth,
    LMSynth,
    RandomTokenSynth,
    ReinforcedPromptSynth,
    SynthText,
    balanced_classes,
    continue_prompts,
)
from promptdfd.text import BOS, SPECIAL_TOKENS, WordTokenizer

SENTENCES = [
    "the team won the match in the final minute",
    "shares of the bank rose after the market opened",
    "the new phone has a faster chip and a bigger screen",
    "sports fans cheered as the striker scored a goal",
    "business leaders met to discuss trade and prices",
    "science news about the tech company and its software",
]
N_SPECIAL = len(SPECIAL_TOKENS)


@pytest.fixture(scope="module")
def tokenizer() -> WordTokenizer:
    return WordTokenizer.build(SENTENCES)


@pytest.fixture(scope="module")
def generator(tokenizer):
    torch.manual_seed(0)
    return build_generator("demo", tokenizer.vocab_size, 32)


def _words(tokenizer: WordTokenizer) -> set[str]:
    return set(tokenizer.vocab[N_SPECIAL:])


# ------------------------------------------------------------------------------------- balanced_classes


def test_balanced_classes_is_a_balanced_permutation():
    out = balanced_classes(10, 3, np.random.default_rng(0))
    assert out.shape == (10,)
    assert sorted(Counter(out.tolist()).values()) == [3, 3, 4]
    assert sorted(out.tolist()) == sorted((np.arange(10) % 3).tolist())


def test_balanced_classes_is_shuffled_and_seeded():
    a = balanced_classes(60, 3, np.random.default_rng(1))
    b = balanced_classes(60, 3, np.random.default_rng(1))
    c = balanced_classes(60, 3, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, np.arange(60) % 3)  # not the unshuffled order
    assert np.bincount(a).tolist() == [20, 20, 20]


# ------------------------------------------------------------------------------------- RandomTokenSynth


def test_random_tokens_have_the_length_and_only_teacher_words(tokenizer):
    rows = RandomTokenSynth(tokenizer, length=7).synthesize(20, np.random.default_rng(0))
    assert len(rows) == 20
    words = _words(tokenizer)
    for row in rows:
        assert isinstance(row, SynthText) and row.target_class == -1
        tokens = row.text.split()
        assert len(tokens) == 7
        assert set(tokens) <= words
        assert not any(t in SPECIAL_TOKENS for t in tokens)
    assert len({w for row in rows for w in row.text.split()}) > 10  # spread over the vocabulary


def test_random_tokens_are_seeded(tokenizer):
    synth = RandomTokenSynth(tokenizer, length=5)
    a = synth.synthesize(8, np.random.default_rng(3))
    assert a == synth.synthesize(8, np.random.default_rng(3))
    assert a != synth.synthesize(8, np.random.default_rng(4))


# ----------------------------------------------------------------------------------------- CorpusSynth


def test_corpus_draws_distinct_texts_when_the_corpus_is_large_enough():
    corpus = [f"text {i}" for i in range(20)]
    rows = CorpusSynth(corpus).synthesize(20, np.random.default_rng(0))
    assert sorted(r.text for r in rows) == sorted(corpus)  # without replacement: each once
    assert all(r.target_class == -1 for r in rows)


def test_corpus_draws_with_replacement_when_n_exceeds_it():
    corpus = ["alpha", "beta", "gamma"]
    rows = CorpusSynth(corpus).synthesize(12, np.random.default_rng(0))
    assert len(rows) == 12
    assert {r.text for r in rows} <= set(corpus)


def test_corpus_is_seeded_and_refuses_an_empty_corpus():
    corpus = [f"t{i}" for i in range(50)]
    synth = CorpusSynth(corpus)
    assert synth.synthesize(5, np.random.default_rng(7)) == synth.synthesize(5, np.random.default_rng(7))
    with pytest.raises(ValueError, match="empty"):
        CorpusSynth([])


# ------------------------------------------------------------------------------------------------ LMSynth


def _lm(generator, tokenizer, class_prompts=None, **kw):
    options = dict(content_len=6, top_p=0.9, temperature=1.0, class_prompts=class_prompts, batch_size=4)
    return LMSynth(generator, tokenizer, **{**options, **kw})


def test_lm_unprompted_rows(generator, tokenizer):
    rows = _lm(generator, tokenizer).synthesize(10, np.random.default_rng(0))
    assert len(rows) == 10
    assert all(r.target_class == -1 and r.prompt == "" for r in rows)
    words = _words(tokenizer)
    for r in rows:
        assert set(r.text.split()) <= words
        assert len(r.text.split()) <= 6


def test_lm_with_class_prompts_balances_classes_and_starts_with_the_prompt(generator, tokenizer):
    prompts = ["sports match", "business market", "science tech"]
    rows = _lm(generator, tokenizer, prompts).synthesize(11, np.random.default_rng(0))
    assert len(rows) == 11
    assert sorted(Counter(r.target_class for r in rows).values()) == [3, 4, 4]
    for r in rows:
        assert r.prompt == prompts[r.target_class]
        assert r.text.split()[:2] == prompts[r.target_class].split()
        assert len(r.text.split()) <= 2 + 6


def test_lm_synth_is_seeded(generator, tokenizer):
    synth = _lm(generator, tokenizer, ["sports", "business"])
    a = synth.synthesize(8, np.random.default_rng(5))
    assert a == synth.synthesize(8, np.random.default_rng(5))
    assert a != synth.synthesize(8, np.random.default_rng(6))


# -------------------------------------------------------------------------------------- continue_prompts


def test_continue_prompts_masks_content_before_the_first_special_token(generator, tokenizer):
    word = tokenizer.id_of("team")
    prompts = torch.tensor([[BOS, word]] * 48)
    out = continue_prompts(
        generator, tokenizer, prompts, content_len=10, top_p=1.0, temperature=1.0, rng=torch.Generator().manual_seed(0)
    )
    assert out.content_ids.shape == out.content_mask.shape == (48, 10)
    assert out.full_ids.shape == (48, 12)
    assert_close(out.full_ids[:, :2], prompts)
    assert_close(out.full_ids[:, 2:], out.content_ids)
    saw_special = False
    for ids, mask in zip(out.content_ids.tolist(), out.content_mask.tolist(), strict=True):
        first = next((i for i, t in enumerate(ids) if t < N_SPECIAL), len(ids))
        saw_special |= first < len(ids)
        assert mask == [i < first for i in range(len(ids))]
    assert saw_special  # an untrained generator emits special tokens: the case above was exercised


def test_continue_prompts_texts_leave_special_tokens_out(generator, tokenizer):
    prompts = torch.tensor([[BOS, tokenizer.id_of("bank")]] * 16)
    out = continue_prompts(
        generator, tokenizer, prompts, content_len=8, top_p=0.9, temperature=1.0, rng=torch.Generator().manual_seed(1)
    )
    words = _words(tokenizer)
    assert out.prompts == ["bank"] * 16
    for text, row in zip(out.texts, out.full_ids.tolist(), strict=True):
        assert text == " ".join(tokenizer.vocab[i] for i in row if i >= N_SPECIAL)
        assert text.split()[0] == "bank"
        assert set(text.split()) <= words


# ---------------------------------------------------------------------------------- ReinforcedPromptSynth


def test_reinforced_prompt_synth_rows(generator, tokenizer):
    candidates = [tokenizer.id_of(w) for w in ("team", "bank", "phone", "goal", "trade", "software")]
    torch.manual_seed(0)
    prompter = GRUPrompter(n_classes=3, candidate_ids=candidates, length=2, dim=16)
    synth = ReinforcedPromptSynth(
        prompter, generator, tokenizer, n_classes=3, content_len=5, top_p=0.9, temperature=1.0, batch_size=4
    )
    rows = synth.synthesize(9, np.random.default_rng(0))
    assert len(rows) == 9
    assert Counter(r.target_class for r in rows) == {0: 3, 1: 3, 2: 3}
    candidate_words = {tokenizer.vocab[i] for i in candidates}
    for r in rows:
        prompt = r.prompt.split()
        assert len(prompt) == 2
        assert set(prompt) <= candidate_words
        assert r.text.split()[:2] == prompt
    again = synth.synthesize(9, np.random.default_rng(0))
    assert again == rows
