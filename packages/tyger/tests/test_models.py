import pytest
import torch

from tyger.chem import SmilesTokenizer, collate_graphs, ecfp4, featurize, parse_smiles
from tyger.losses import task_loss
from tyger.models import (
    MODEL_CONFIGS,
    GINEEncoder,
    LossPredictionModule,
    SmilesGRUDecoder,
    global_pool,
    querying_module,
    task_learner,
)

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C1CCNCC1", "ClCCBr", "CN1CCC[C@H]1c1cccnc1"]


def _batch(smiles=SMILES):
    return collate_graphs([featurize(s) for s in smiles])


def test_pooling_by_hand():
    h = torch.tensor([[1.0], [3.0], [5.0]])
    index = torch.tensor([0, 0, 2])
    assert global_pool(h, index, 3, "mean").tolist() == [[2.0], [0.0], [5.0]]
    assert global_pool(h, index, 3, "sum").tolist() == [[4.0], [0.0], [5.0]]


def test_encoder_invariant_to_node_order():
    enc = GINEEncoder(3, 32).eval()
    g = featurize("CC(=O)Nc1ccc(O)cc1")
    perm = torch.randperm(g.num_nodes)
    inverse = torch.argsort(perm)
    permuted = type(g)(g.x[perm], inverse[g.edge_index], g.edge_attr)
    a = enc(collate_graphs([featurize("CCO"), g]))
    b = enc(collate_graphs([featurize("CCO"), permuted]))
    assert torch.allclose(a, b, atol=1e-5)
    assert a.shape == (2, 32)


@pytest.mark.parametrize("preset", list(MODEL_CONFIGS))
def test_presets_build_and_run(preset):
    c = MODEL_CONFIGS[preset]
    q = querying_module(preset, vocab_size=30)
    t = task_learner(preset, n_outputs=3)
    batch = _batch()
    z = q.embed(batch)
    assert z.shape == (len(SMILES), c["d_z"])
    assert t(batch).shape == (len(SMILES), 3)
    assert len(q.encoder.convs) == c["enc_layers"] and q.decoder.gru.hidden_size == c["dec_hidden"]


def test_decoder_teacher_forcing_shapes_and_greedy_equals_beam1():
    tok = SmilesTokenizer.build(SMILES)
    dec = SmilesGRUDecoder(len(tok), d_z=16, hidden=32, num_layers=2).eval()
    tokens = tok.encode_batch(SMILES)
    z = torch.randn(len(SMILES), 16)
    assert dec(z, tokens[:, :-1]).shape == (len(SMILES), tokens.shape[1] - 1, len(tok))
    greedy = dec.greedy(z, tok.bos_id, tok.eos_id, max_len=20)
    beam1 = dec.beam_search(z, tok.bos_id, tok.eos_id, beam_width=1, max_len=20)
    assert torch.equal(greedy, beam1)
    beam4 = dec.beam_search(z, tok.bos_id, tok.eos_id, beam_width=4, max_len=20)
    assert beam4.shape[0] == len(SMILES) and beam4.shape[1] <= 20


def test_beam_search_is_exact_when_wide_enough():
    dec = SmilesGRUDecoder(5, d_z=8, hidden=16).eval()  # ids: 0 pad, 1 bos, 2 eos, 3-4 tokens
    z = torch.randn(1, 8)
    bos, eos, length = 1, 2, 3

    def score(seq):
        tokens = torch.tensor([[bos, *seq]])
        logp = dec(z, tokens[:, :-1]).log_softmax(-1)[0]
        return sum(logp[t, tok].item() for t, tok in enumerate(seq))

    others = [0, 1, 3, 4]
    candidates = [(eos,)] + [(a, eos) for a in others] + [(a, b, eos) for a in others for b in others]
    candidates += [(a, b, c) for a in others for b in others for c in others]
    best = max(candidates, key=score)
    beam = dec.beam_search(z, bos, eos, beam_width=125, max_len=length)[0].tolist()
    if eos in beam:
        beam = beam[: beam.index(eos) + 1]
    assert tuple(beam) == best


def test_querying_module_overfits_a_few_smiles():
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "ClCCBr"]
    tok = SmilesTokenizer.build(smiles)
    q = querying_module("demo", len(tok), dk="none", fb="none")
    batch, tokens = _batch(smiles), tok.encode_batch(smiles)
    opt = torch.optim.Adam(q.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss = q.loss(batch, tokens)["total"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()
    decoded = [tok.decode(row) for row in q.decode_greedy(batch, tok.bos_id, tok.eos_id, max_len=40)]
    assert loss.item() < 0.05 * first
    assert decoded == smiles


def test_feedback_gradients_reach_encoder_not_task_learner():
    tok = SmilesTokenizer.build(SMILES)
    q = querying_module("demo", len(tok), dk="fingerprint", fb="loss-rank")
    t = task_learner("demo", 1)
    batch = _batch()
    y, mask = torch.randn(len(SMILES), 1), torch.ones(len(SMILES), 1, dtype=torch.bool)
    per_sample = task_loss(t(batch), y, mask, "regression", reduction="none")
    fp = ecfp4([parse_smiles(s) for s in SMILES])
    terms = q.loss(batch, None, fp, labelled_graphs=batch, feedback_targets=per_sample)
    terms["fb"].backward(retain_graph=True)
    assert all(p.grad is None for p in t.parameters())
    assert q.fb_head[0].weight.grad.abs().sum() > 0 and q.proj.weight.grad.abs().sum() > 0
    assert q.encoder.atom_encoder.embeddings[0].weight.grad.abs().sum() > 0
    q.zero_grad()
    terms["dk"].backward()
    assert q.fb_head[0].weight.grad is None or q.fb_head[0].weight.grad.abs().sum() == 0
    assert q.proj.weight.grad.abs().sum() > 0
    tokens = tok.encode_batch(SMILES)
    trans = q.loss(batch, tokens, fp)["trans"]
    q.zero_grad()
    trans.backward()
    assert (
        q.decoder.out.weight.grad.abs().sum() > 0 and q.encoder.atom_encoder.embeddings[0].weight.grad.abs().sum() > 0
    )


def test_pool_relation_feedback_needs_no_labels_and_reaches_only_the_encoder():
    tok = SmilesTokenizer.build(SMILES)
    q = querying_module("demo", len(tok), dk="none", fb="relation-pool")
    t = task_learner("demo", 1)
    batch = _batch()
    _, features, _ = t.forward_features(batch)  # the task learner's view of unlabelled molecules
    terms = q.loss(batch, None, None, task_features=features)
    assert terms["fb"] > 0 and terms["total"] == terms["fb"]
    terms["fb"].backward()
    assert all(p.grad is None for p in t.parameters())
    assert q.proj.weight.grad.abs().sum() > 0 and q.fb_head[0].weight.grad is None
    assert q.loss(batch, None, None)["fb"] == 0  # no task learner yet (pre-training): no feedback term


def test_mc_dropout_and_loss_predictor():
    t = task_learner("demo", 2, dropout=0.5)
    t.train()
    batch = _batch()
    samples = t.mc_predict(batch, 5)
    assert samples.shape == (5, len(SMILES), 2) and t.training
    assert samples.std(0).sum() > 0
    t.eval()
    again = t.mc_predict(batch, 2)
    assert not t.training and (again[0] != again[1]).any()
    out, pooled, layers = t.forward_features(batch)
    assert out.shape == (len(SMILES), 2) and pooled.shape == (len(SMILES), 64) and len(layers) == 2
    lp = LossPredictionModule([lay.shape[1] for lay in layers])
    assert lp(layers).shape == (len(SMILES),)
