import json

import pytest
import torch

from promptdfd.text import BOS, CLS, EOS, PAD, SPECIAL_TOKENS, UNK, WordTokenizer, normalize
from shared.errors import UserError

TEXTS = ["The match was great!", "the band played (a new song).", "great song, great match"]


def test_normalize_splits_punctuation_and_lowercases():
    assert normalize('He said: "Hi, (you)!" it\'s OK; no?') == [
        "he", "said", ":", '"', "hi", ",", "(", "you", ")", "!", '"', "it", "'", "s", "ok", ";", "no", "?",
    ]  # fmt: skip
    assert normalize("  a\tb\nC.  ") == ["a", "b", "c", "."]
    assert normalize("") == []


def test_special_ids_and_vocab_check():
    assert [SPECIAL_TOKENS[i] for i in (PAD, UNK, BOS, EOS, CLS)] == ["<pad>", "<unk>", "<bos>", "<eos>", "<cls>"]
    with pytest.raises(ValueError):
        WordTokenizer(["<unk>", "<pad>", "<bos>", "<eos>", "<cls>", "a"])
    with pytest.raises(ValueError):
        WordTokenizer([*SPECIAL_TOKENS, "a", "a"])


def test_build_orders_by_count_then_word_and_is_deterministic():
    tok = WordTokenizer.build(TEXTS)
    assert tok.vocab[:5] == list(SPECIAL_TOKENS)
    # great x3; then match, song, the x2 (alphabetical); then the once-seen words, punctuation first
    assert tok.vocab[5:10] == ["great", "match", "song", "the", "!"]
    assert WordTokenizer.build(list(reversed(TEXTS))).vocab == tok.vocab
    assert WordTokenizer.build(TEXTS, min_count=2).vocab[5:] == ["great", "match", "song", "the"]
    assert WordTokenizer.build(TEXTS, max_size=7).vocab == [*SPECIAL_TOKENS, "great", "match"]
    assert tok.vocab_size == len(tok.vocab)
    # a special token appearing as a word in the text is not added twice
    assert WordTokenizer.build(["<pad> x"]).vocab == [*SPECIAL_TOKENS, "x"]


def test_encode_decode_round_trip_and_unknown_words():
    tok = WordTokenizer.build(TEXTS)
    ids = tok.encode("The great match!")
    assert tok.decode(ids) == "the great match !"
    assert tok.encode("zebra match")[0] == UNK and tok.id_of("zebra") == UNK
    full = tok.encode("great match", add_bos=True, add_eos=True, add_cls=True)
    assert full[:2] == [CLS, BOS] and full[-1] == EOS
    assert tok.decode(full) == "great match"
    assert tok.decode(full, skip_special=False) == "<cls> <bos> great match <eos>"
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])


def test_truncation_counts_specials_and_keeps_eos_last():
    tok = WordTokenizer.build(TEXTS)
    text = "the great match was great"
    assert len(tok.encode(text, max_len=3)) == 3
    ids = tok.encode(text, max_len=4, add_cls=True, add_eos=True)
    assert len(ids) == 4 and ids[0] == CLS and ids[-1] == EOS
    assert tok.decode(ids) == "the great"
    assert tok.encode(text, max_len=3, add_bos=True) == [BOS, tok.id_of("the"), tok.id_of("great")]
    assert tok.encode("great", max_len=10, add_eos=True) == [tok.id_of("great"), EOS]  # no cut when it fits
    with pytest.raises(ValueError):
        tok.encode(text, max_len=0)


def test_batch_encode_pads_masks_and_handles_empty_texts():
    tok = WordTokenizer.build(TEXTS)
    ids, mask = tok.batch_encode(["great match", "", "the great match was great indeed"], max_len=5)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == (3, 5)
    assert ids[0].tolist() == [CLS, tok.id_of("great"), tok.id_of("match"), PAD, PAD]
    assert mask[0].tolist() == [True, True, True, False, False]
    assert ids[1].tolist() == [CLS, PAD, PAD, PAD, PAD] and mask[1].sum() == 1
    assert mask[2].all()
    assert ((ids == PAD) == ~mask).all()
    short, short_mask = tok.batch_encode(["great", ""], max_len=32, add_cls=False)
    assert short.shape == (2, 1) and short[:, 0].tolist() == [tok.id_of("great"), UNK] and short_mask.all()


def test_save_load_round_trip_and_bad_files(tmp_path):
    tok = WordTokenizer.build(TEXTS)
    path = tok.save(tmp_path / "sub" / "tok.json")
    again = WordTokenizer.load(path)
    assert again.vocab == tok.vocab
    assert WordTokenizer.from_dict(tok.to_dict()).vocab == tok.vocab
    assert again.encode("the song") == tok.encode("the song")
    assert not list((tmp_path / "sub").glob("*.tmp"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match=r"broken\.json"):
        WordTokenizer.load(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"vocab": ["a", "b"]}))
    with pytest.raises(UserError, match=r"wrong\.json"):
        WordTokenizer.load(wrong)
    with pytest.raises(UserError, match="not found"):
        WordTokenizer.load(tmp_path / "missing.json")
