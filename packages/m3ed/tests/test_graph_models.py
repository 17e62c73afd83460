"""The graph baselines DialogueGCN and MMGCN: graphs by hand, padding, gradients, sizes, and end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from m3ed import cli
from m3ed.dialoguegcn import DialogueGCN, relation_graph
from m3ed.mmgcn import multimodal_adjacency
from m3ed.models import build_model

DIMS = {"audio": 12, "visual": 6, "text": 10}
AVL = ("audio", "visual", "text")
PAPER_DIMS = {"audio": 1024, "visual": 342, "text": 768}  # the release's AVL feature file (spec 4.3)


def _batch(lengths: list[int], seed: int = 0):
    """Random dialogues of the given lengths, padded with random (not zero) features and speakers."""
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    feats = {m: torch.randn(n, len(lengths), d, generator=g) for m, d in DIMS.items()}
    speakers = torch.randint(0, 2, (n, len(lengths)), generator=g)
    pad_mask = torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]
    return feats, speakers, pad_mask


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _lstm(d_in: int, d: int) -> int:
    """A 2-layer bidirectional LSTM's parameters."""
    return 2 * (4 * d * (d_in + d) + 8 * d) + 2 * (4 * d * (2 * d + d) + 8 * d)


# ---------------------------------------------------------------- DialogueGCN's graph


def test_relation_graph_matches_hand_list():
    # utterances 0..3 spoken by A, A, B, A; window 1 past, 2 future; one padding step in a second dialogue
    speakers = torch.tensor([[0, 1], [0, 1], [1, 0], [0, 0]])
    pad_mask = torch.tensor([[False] * 4, [False, False, False, True]])
    relations = relation_graph(speakers, pad_mask, window_past=1, window_future=2)
    # relation = 4 * speaker(source) + 2 * speaker(target) + (0 if source < target else 1)
    expected = [
        (0, 0, 1), (0, 1, 0), (0, 2, 2),
        (1, 0, 1), (1, 1, 1), (1, 2, 2), (1, 3, 0),
        (2, 1, 5), (2, 2, 7), (2, 3, 4),
        (3, 2, 3), (3, 3, 1),
    ]  # fmt: skip
    first = relations[0]
    assert sorted((s, t, int(first[s, t])) for s, t in (first >= 0).nonzero().tolist()) == expected
    second = relations[1]  # speakers B, B, A (+ padding): edges among the three real utterances only
    assert sorted((s, t, int(second[s, t])) for s, t in (second >= 0).nonzero().tolist()) == [
        (0, 0, 7), (0, 1, 6), (0, 2, 4),
        (1, 0, 7), (1, 1, 7), (1, 2, 4),
        (2, 1, 3), (2, 2, 1),
    ]  # fmt: skip


def test_relation_graph_unbounded_windows():
    speakers, pad_mask = torch.zeros(5, 1, dtype=torch.long), torch.zeros(1, 5, dtype=torch.bool)
    assert int((relation_graph(speakers, pad_mask, -1, -1) >= 0).sum()) == 25
    past_only = relation_graph(speakers, pad_mask, -1, 0)[0] >= 0  # every source sends to itself and the past
    assert torch.equal(past_only, torch.ones(5, 5, dtype=torch.bool).tril())


def test_edge_weights_are_a_softmax_over_each_source_window():
    model = DialogueGCN(AVL, DIMS, d_e=8, window_past=1, window_future=1).eval()
    g = torch.randn(1, 4, 16)
    relations = relation_graph(torch.tensor([[0], [1], [0], [1]]), torch.zeros(1, 4, dtype=torch.bool), 1, 1)
    with torch.no_grad():
        weights = model.edge_attention(g, relations)[0]
    w = model.edge_attention.scalar.weight  # (max_seq_len, d): one vector per source position
    for s in range(4):
        targets = [t for t in range(4) if abs(t - s) <= 1]
        expected = torch.softmax(torch.stack([w[s] @ g[0, t] for t in targets]), dim=0)
        assert torch.allclose(weights[s, targets], expected, atol=1e-6)
        assert float(weights[s].sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        DialogueGCN(AVL, DIMS, d_e=4, max_seq_len=3)(*_batch([4]))


# ---------------------------------------------------------------- MMGCN's graph


def test_multimodal_adjacency_by_hand():
    nodes = torch.randn(1, 2, 3, 5)  # 2 modalities x 3 utterances, the last one padding
    pad_mask = torch.tensor([[False, False, True]])
    adj = multimodal_adjacency(nodes, pad_mask)[0]
    unit = nodes[0] / nodes[0].norm(dim=-1, keepdim=True)

    def sim(u, v):
        return 1 - math.acos(0.99999 * float(u @ v)) / math.pi

    raw = torch.zeros(6, 6)  # node m * 3 + i
    for m in range(2):
        for i in range(2):
            for j in range(2):
                raw[m * 3 + i, m * 3 + j] = sim(unit[m, i], unit[m, j])
            raw[m * 3 + i, (1 - m) * 3 + i] = sim(unit[m, i], unit[1 - m, i])
    degree = raw.sum(1)
    scale = torch.where(degree > 0, degree.rsqrt(), torch.zeros(6))
    assert torch.allclose(adj, scale[:, None] * raw * scale[None, :], atol=1e-6)
    assert int((adj > 0).sum()) == 2 * 4 + 2 * 2  # intra-modal 2x2 blocks and one cross edge each way


# ---------------------------------------------------------------- both models


MODELS = [
    ("dialoguegcn", AVL),
    ("dialoguegcn", ("text",)),
    ("mmgcn", AVL),
    ("mmgcn", ("audio", "visual")),
    ("mmgcn", ("text",)),
]


@pytest.mark.parametrize(("name", "modalities"), MODELS)
def test_padding_does_not_leak(name, modalities):
    torch.manual_seed(0)
    model = build_model(name, modalities, DIMS, "demo").eval()
    lengths = [5, 9]
    feats, speakers, pad_mask = _batch(lengths, seed=1)
    with torch.no_grad():
        together = model(feats, speakers, pad_mask)
        assert together.shape == (9, 2, 7)
        for b, length in enumerate(lengths):
            alone = model(
                {m: x[:length, b : b + 1] for m, x in feats.items()},
                speakers[:length, b : b + 1],
                pad_mask[b : b + 1, :length],
            )
            assert torch.allclose(together[:length, b : b + 1], alone, atol=1e-5)


@pytest.mark.parametrize(("name", "modalities"), MODELS)
def test_gradients_reach_every_parameter(name, modalities):
    torch.manual_seed(0)
    model = build_model(name, modalities, DIMS, "demo")
    feats, speakers, pad_mask = _batch([4, 7], seed=2)
    logits = model(feats, speakers, pad_mask)
    assert torch.isfinite(logits).all()
    logits[~pad_mask.t()].sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_context_changes_predictions():
    """Changing one utterance changes another's logits (the graph carries context), for both models."""
    for name in ("dialoguegcn", "mmgcn"):
        torch.manual_seed(0)
        model = build_model(name, AVL, DIMS, "demo").eval()
        feats, speakers, pad_mask = _batch([6])
        edited = {m: x.clone() for m, x in feats.items()}
        for x in edited.values():
            x[5] += 3.0
        with torch.no_grad():
            before, after = model(feats, speakers, pad_mask), model(edited, speakers, pad_mask)
        assert not torch.allclose(before[0], after[0], atol=1e-4)


def test_dialoguegcn_without_nodal_attention_classifies_each_node_itself():
    """Without the nodal attention an utterance's logits are the head applied to its own [g, h] (official
    ``classify_node_features`` without ``nodal_attn``); with it they read the attention-weighted dialogue."""
    torch.manual_seed(0)
    plain = build_model("dialoguegcn", AVL, DIMS, "demo", nodal_attention=False).eval()
    feats, speakers, pad_mask = _batch([6])
    nodes = {}
    plain.linear.register_forward_hook(lambda module, args, out: nodes.update(e=args[0]))
    with torch.no_grad():
        logits = plain(feats, speakers, pad_mask)
        head = plain.classifier(torch.relu(plain.linear(nodes["e"])))
    assert plain.attention is None and nodes["e"].shape == (1, 6, 3 * 32)
    assert torch.allclose(logits.transpose(0, 1), head, atol=1e-6)
    attended = build_model("dialoguegcn", AVL, DIMS, "demo")
    attended.load_state_dict(plain.state_dict(), strict=False)  # the same weights plus the attention
    with torch.no_grad():
        assert not torch.allclose(attended.eval()(feats, speakers, pad_mask), logits, atol=1e-4)


def test_mmgcn_speaker_embedding_is_used():
    torch.manual_seed(0)
    model = build_model("mmgcn", AVL, DIMS, "demo").eval()
    feats, speakers, pad_mask = _batch([6])
    with torch.no_grad():
        assert not torch.allclose(model(feats, speakers, pad_mask), model(feats, 1 - speakers, pad_mask))
    assert build_model("mmgcn", AVL, DIMS, "demo", speaker_embedding=False).speakers is None


# ---------------------------------------------------------------- sizes


def dialoguegcn_parameters(d_in: int, d_e: int, d_graph: int, bases: int = 30, max_len: int = 110) -> int:
    """DialogueGCN's parameters by hand: projection, BiLSTM, edge attention, RGCN, GraphConv, nodal
    attention, Linear, classifier."""
    node = 2 * d_e + d_graph
    return (
        d_in * d_e + d_e
        + _lstm(d_e, d_e)
        + 2 * d_e * max_len
        + bases * 2 * d_e * d_graph + 8 * bases + 2 * d_e * d_graph + d_graph
        + 2 * d_graph * d_graph + d_graph
        + node * node + node
        + node * d_graph + d_graph
        + d_graph * 7 + 7
    )  # fmt: skip


def mmgcn_parameters(dims: list[int], text: bool, d_e: int, hidden: int, layers: int) -> int:
    """MMGCN's parameters by hand: projections, text BiLSTM and speaker embedding, GCNII, classifier."""
    d = 2 * d_e
    total = sum(d_in * d + d for d_in in dims) + (_lstm(d, d_e) + 2 * d if text else 0)
    return total + d * hidden + hidden + layers * 2 * hidden * hidden + len(dims) * (d + hidden) * 7 + 7


def test_parameter_counts_match_hand_formulas():
    d_in = sum(PAPER_DIMS.values())
    paper = build_model("dialoguegcn", AVL, PAPER_DIMS, "paper")
    assert _count(paper) == dialoguegcn_parameters(d_in, 180, 180) == 4_190_647
    assert _count(build_model("dialoguegcn", AVL, PAPER_DIMS, "demo")) == dialoguegcn_parameters(d_in, 32, 32)
    mm = build_model("mmgcn", AVL, PAPER_DIMS, "paper")
    assert _count(mm) == mmgcn_parameters(list(PAPER_DIMS.values()), True, 100, 100, 64) == 2_217_407
    demo = build_model("mmgcn", ("audio", "visual"), PAPER_DIMS, "demo")
    assert _count(demo) == mmgcn_parameters([1024, 342], False, 64, 64, 8)
    node = 2 * 180 + 180  # without nodal attention its (W, b) of the [g, h] nodes are not built
    assert _count(build_model("dialoguegcn", AVL, PAPER_DIMS, "paper", nodal_attention=False)) == 4_190_647 - (
        node * node + node
    )


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize(("name", "options"), [("dialoguegcn", ["--no-nodal-attention"]), ("mmgcn", [])])
def test_train_writes_a_run(name, options, tmp_path):
    out = tmp_path / name
    argv = ["--model", name, *options, "--modalities", "al", "--epochs", "2", "--quiet", "--out", str(out)]
    results = cli.train_command(argv)
    assert results["model"] == name and results["parameters"] > 0
    assert results["overrides"] == ({"nodal_attention": False} if options else {})
    assert json.loads((out / "results.json").read_text())["test_weighted_f1"] == results["test_weighted_f1"]
    assert (out / "model.pt").exists()
