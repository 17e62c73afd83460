import json
import sys

import pytest
import torch

from shared.errors import UserError
from tbvs.text import (
    BertWordPieceTokenizer,
    TinyTextEncoder,
    WordTokenizer,
    build_text_encoder,
    build_tokenizer,
    wordpiece,
)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "man", "is", "run", "##ning", "a", "dog", ".", "on"]
VOCAB += [f"w{i}" for i in range(30)]


@pytest.fixture
def bert_vocab(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return tmp_path


def _id(tok):
    return VOCAB.index(tok)


def test_official_rule_18_words_20_ids(bert_vocab):
    tok = BertWordPieceTokenizer(bert_vocab)
    long = " ".join(f"w{i}" for i in range(25))  # 25 words
    ids, mask = tok.encode([long, "the man is running"])
    assert ids.shape == (2, 20) and ids.dtype == torch.long
    assert ids[0].tolist() == [_id("[CLS]"), *(_id(f"w{i}") for i in range(18)), _id("[SEP]")]
    assert mask[0].tolist() == [1] * 20
    # whole-word, case-sensitive lookup: "running" is not a vocabulary entry, so it is [UNK] (no WordPiece)
    assert ids[1, :6].tolist() == [_id("[CLS]"), _id("the"), _id("man"), _id("is"), _id("[UNK]"), _id("[SEP]")]
    assert ids[1, 6:].eq(0).all() and mask[1].tolist() == [1] * 6 + [0] * 14
    # single-space split: a double space gives an empty word ([UNK]); "The" is not "the"
    ids, _ = tok.encode("The  man")
    assert ids[0, :5].tolist() == [_id("[CLS]"), _id("[UNK]"), _id("[UNK]"), _id("man"), _id("[SEP]")]


def test_wordpiece_mode_may_drop_sep(bert_vocab, monkeypatch):
    tok = BertWordPieceTokenizer(bert_vocab, mode="wordpiece")
    monkeypatch.setattr(tok, "_hf", None)  # the in-house WordPiece
    ids, mask = tok.encode(["The man is running.", " ".join(["running"] * 25)])
    expect = ["[CLS]", "the", "man", "is", "run", "##ning", ".", "[SEP]"]
    assert ids[0, :8].tolist() == [_id(t) for t in expect] and ids[0, 8:].eq(0).all()
    # 18 words -> 36 pieces; cut to 20 ids keeps [CLS] and 19 pieces, no [SEP]
    assert ids[1].tolist() == [_id("[CLS]")] + [_id("run"), _id("##ning")] * 9 + [_id("run")]
    assert mask[1].sum() == 20


def test_inhouse_wordpiece_matches_transformers(bert_vocab):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizer(str(bert_vocab / "vocab.txt"), do_lower_case=True)
    vocab = {t: i for i, t in enumerate(VOCAB)}
    for text in ["The man is running.", "a dog on the Runner", "w1,w2 w3!", "Ã  dög"]:
        assert wordpiece(text, vocab) == hf.tokenize(text), text


def test_bert_tokenizer_errors(tmp_path):
    with pytest.raises(UserError, match=r"vocab\.txt"):
        BertWordPieceTokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(UserError, match="not a BERT"):
        BertWordPieceTokenizer(tmp_path)


def test_word_tokenizer_round_trip(tmp_path):
    sentences = ["The red circle moving left", "a blue square that is still."]
    tok = WordTokenizer.from_sentences(sentences, max_tokens=8)
    assert tok.vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    ids, mask = tok.encode([*sentences, "the green circle"])
    assert ids.shape == (3, 8) and ids[:, 0].eq(tok.index["[CLS]"]).all()
    assert tok.decode(ids[:1]) == ["the red circle moving left"]
    assert tok.decode(ids[1:2]) == ["a blue square that is still"]  # 6 words fit 8 ids
    assert ids[2, 2] == tok.index["[UNK]"] and ids[2, 5:].eq(0).all() and mask[2].sum() == 5
    long_ids, long_mask = tok.encode("the red circle moving left the red circle moving left")
    assert long_mask.sum() == 8 and long_ids[0, -1] == tok.index["[SEP]"]
    path = tmp_path / "vocab.json"
    tok.save(path)
    assert json.loads(path.read_text())[0] == "[PAD]"
    again = WordTokenizer.load(path, max_tokens=8)
    assert again.vocab == tok.vocab and torch.equal(again.encode(sentences)[0], ids[:2])
    assert WordTokenizer(tok.vocab, 8).vocab == tok.vocab
    path.write_text('{"not": "a list"}')
    with pytest.raises(UserError):
        WordTokenizer.load(path)


def test_tiny_encoder_padding_does_not_change_tokens():
    enc = build_text_encoder("tiny", vocab_size=50, dim=32, layers=2, heads=2, max_tokens=12).eval()
    assert isinstance(enc, TinyTextEncoder) and enc.dim == 32
    ids = torch.randint(4, 50, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 5:] = 0
    mask[1, 9:] = 0
    ids = ids * mask
    other = ids.clone()
    other[mask == 0] = torch.randint(4, 50, (int((mask == 0).sum()),))
    with torch.no_grad():
        a, b = enc(ids, mask), enc(other, mask)
        unmasked = enc(other, torch.ones_like(mask))
    assert a.shape == (3, 12, 32)
    keep = mask.bool()
    torch.testing.assert_close(a[keep], b[keep])
    assert not torch.allclose(a[0, 0], unmasked[0, 0])  # the mask is what makes padding irrelevant
    with pytest.raises(ValueError):
        enc(torch.zeros(1, 13, dtype=torch.long))


def test_hf_bert_encoder_on_tiny_local_model(bert_vocab):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    transformers.BertModel(config).save_pretrained(bert_vocab)
    enc = build_text_encoder("hf-bert", path=bert_vocab).eval()
    tok = build_tokenizer("hf-bert", path=bert_vocab)
    assert enc.dim == 32
    assert not any(p.requires_grad for p in enc.bert.embeddings.parameters())
    assert all(p.requires_grad for p in enc.bert.encoder.parameters())
    ids, mask = tok.encode(["the man is running", "a dog on the man"])
    with torch.no_grad():
        out = enc(ids, mask)
        other = ids.clone()
        other[mask == 0] = 5
        out2 = enc(other, mask)
    assert out.shape == (2, 20, 32)
    torch.testing.assert_close(out[:, 0], out2[:, 0], atol=1e-5, rtol=1e-5)
    unfrozen = build_text_encoder("hf-bert", path=bert_vocab, freeze_embeddings=False)
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_hf_bert_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="unknown text encoder"):
        build_text_encoder("gpt")
    if _importable("transformers"):
        with pytest.raises(UserError, match="not a local BERT directory"):
            build_text_encoder("hf-bert", path=tmp_path)
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
        with pytest.raises(UserError, match="not BERT"):
            build_text_encoder("hf-bert", path=tmp_path)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UserError, match=r"pip install 'reprozoo-tbvs\[bert\]'"):
        build_text_encoder("hf-bert", path=tmp_path)


def _importable(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None
