from __future__ import annotations

import pytest
import torch

from promptdfd.models import (
    CLASSIFIER_SIZES,
    CausalLM,
    GRUPrompter,
    TextClassifier,
    _nucleus_sample,
    build_classifier,
    build_generator,
)
from shared.errors import UserError

PAD, BOS, EOS = 0, 2, 3
V = 50


def _batch(seed: int = 0, b: int = 6, length: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids with varied lengths (>= 1) and their mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (b, length), generator=g)
    lengths = torch.randint(1, length + 1, (b,), generator=g)
    lengths[0] = length
    mask = torch.arange(length)[None] < lengths[:, None]
    return ids.masked_fill(~mask, PAD), mask


def _layer_params(d: int) -> int:
    f = 4 * d  # in_proj 3d^2+3d, out_proj d^2+d, ffn 2df+f+d, two LayerNorms 4d
    return 4 * d * d + 2 * d * f + f + 9 * d


@pytest.mark.parametrize("size", ["demo-teacher", "demo-student"])
def test_classifier_param_count(size):
    d, depth = CLASSIFIER_SIZES[size]["dim"], CLASSIFIER_SIZES[size]["depth"]
    model = build_classifier(size, vocab_size=100, n_classes=4, max_len=32)
    expected = 100 * d + 32 * d + 2 * d + depth * _layer_params(d) + 2 * d + d * 4 + 4
    assert sum(p.numel() for p in model.parameters()) == expected
    assert expected == {"demo-teacher": 108_932, "demo-student": 17_188}[size]


def test_generator_param_count_and_unknown_size():
    model = build_generator("demo", vocab_size=100, max_len=32)
    expected = 100 * 64 + 32 * 64 + 2 * _layer_params(64) + 2 * 64  # output tied to the token embedding
    assert sum(p.numel() for p in model.parameters()) == expected == 108_544
    with pytest.raises(UserError, match="demo-teacher"):
        build_classifier("huge", 100, 4, 32)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_shapes_and_padding_invariance(pooling):
    torch.manual_seed(0)
    model = TextClassifier(V, 3, dim=32, depth=2, heads=4, max_len=16, pooling=pooling).eval()
    ids, mask = _batch()
    logits = model(ids, mask)
    assert logits.shape == (6, 3) and model.features(ids, mask).shape == (6, 32)
    extra = torch.randint(5, V, (6, 4))  # garbage under the padding must not matter either
    ids2 = torch.cat([ids, extra], 1)
    mask2 = torch.cat([mask, torch.zeros(6, 4, dtype=torch.bool)], 1)
    torch.testing.assert_close(model(ids2, mask2), logits, atol=1e-5, rtol=1e-5)
    # but a real token does change them
    assert not torch.allclose(model(ids2, torch.ones_like(mask2)), logits, atol=1e-4)
    with pytest.raises(UserError, match="max_len"):
        model(torch.zeros(1, 17, dtype=torch.long), torch.ones(1, 17, dtype=torch.bool))


def _lm(seed: int = 0, vocab: int = V, **kw) -> CausalLM:
    torch.manual_seed(seed)
    return CausalLM(vocab, dim=32, depth=2, heads=4, max_len=16, **kw).eval()


def test_causal_lm_is_causal():
    model = _lm()
    ids, _ = _batch(length=10)
    logits = model(ids)
    assert logits.shape == (6, 10, V)
    ids2 = ids.clone()
    ids2[:, 6] = (ids2[:, 6] + 7) % V
    logits2 = model(ids2)
    torch.testing.assert_close(logits2[:, :6], logits[:, :6])
    assert not torch.allclose(logits2[:, 6:], logits[:, 6:], atol=1e-4)


def test_token_logprobs_matches_manual_gather():
    model = _lm()
    ids, mask = _batch(length=10)
    lp = model.token_logprobs(ids, mask)
    manual = torch.log_softmax(model(ids), -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert lp.shape == (6, 9)
    torch.testing.assert_close(lp, manual * mask[:, 1:])
    assert (lp[~mask[:, 1:]] == 0).all() and (lp[mask[:, 1:]] < 0).all()


def test_generate_length_determinism_and_eos():
    model = _lm(vocab=8)  # near-uniform over 8 tokens, so EOS shows up early in many rows
    model.train()
    prompts = torch.full((64, 2), BOS)
    prompts[:, 1] = 5

    def gen(seed: int) -> torch.Tensor:
        return model.generate(prompts, max_new_tokens=10, generator=torch.Generator().manual_seed(seed))

    out = gen(1)
    assert model.training  # mode restored
    assert out.shape == (64, 12) and (out[:, :2] == prompts).all()
    assert torch.equal(out, gen(1)) and not torch.equal(out, gen(2))
    new = out[:, 2:]
    is_eos = new == EOS
    assert is_eos.any(1).sum() > 10
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    assert (new[after_eos] == PAD).all()
    free = model.generate(prompts, max_new_tokens=10, eos_id=-1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(new[~after_eos], free[:, 2:][~after_eos])  # same draws, only cut after EOS
    assert (is_eos.sum(1) <= 1).all()
    with pytest.raises(UserError, match="max_len"):
        model.generate(prompts, max_new_tokens=15)


def test_generate_greedy_equals_argmax():
    model = _lm()
    prompts = torch.tensor([[BOS, 7], [BOS, 11], [BOS, 30]])
    ids = prompts
    for _ in range(8):
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], 1)
    no_eos = dict(max_new_tokens=8, eos_id=-1)
    assert torch.equal(model.generate(prompts, top_p=0.0, **no_eos), ids)
    assert torch.equal(model.generate(prompts, temperature=0.0, **no_eos), ids)
    tiny_nucleus = model.generate(prompts, top_p=1e-6, generator=torch.Generator().manual_seed(0), **no_eos)
    assert torch.equal(tiny_nucleus, ids)  # the nucleus always keeps the top token, and only it here


def test_nucleus_sample_frequencies():
    logits = torch.tensor([0.05, 0.5, 0.15, 0.3]).log().repeat(20_000, 1)
    g = torch.Generator().manual_seed(0)
    freq = torch.bincount(_nucleus_sample(logits, 0.7, g), minlength=4) / 20_000
    torch.testing.assert_close(freq, torch.tensor([0.0, 0.625, 0.0, 0.375]), atol=0.015, rtol=0)
    freq = torch.bincount(_nucleus_sample(logits, 1.0, g), minlength=4) / 20_000
    torch.testing.assert_close(freq, torch.tensor([0.05, 0.5, 0.15, 0.3]), atol=0.015, rtol=0)


def _prompter(seed: int = 0) -> GRUPrompter:
    torch.manual_seed(seed)
    return GRUPrompter(4, [10, 11, 12, 13, 14, 15, 16], length=3, dim=16)


def test_prompter_sample_matches_score():
    prompter = _prompter()
    classes = torch.tensor([0, 1, 2, 3] * 8)
    batch = prompter.sample(classes, generator=torch.Generator().manual_seed(0))
    assert batch.actions.shape == batch.ids.shape == (32, 3) and batch.logprob.shape == batch.entropy.shape == (32,)
    assert torch.equal(batch.ids, batch.actions + 10)
    rescored = prompter.score(classes, batch.actions)
    torch.testing.assert_close(batch.logprob, rescored.logprob, atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.entropy, rescored.entropy, atol=1e-5, rtol=0)
    assert (batch.entropy > 0).all() and (batch.entropy <= torch.log(torch.tensor(7.0)) + 1e-6).all()
    again = prompter.sample(classes, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.actions, batch.actions)
    greedy = prompter.sample(classes, greedy=True)
    assert torch.equal(prompter.step_logits(classes, greedy.actions).argmax(-1), greedy.actions)


def test_prompter_class_conditioning_and_gradients():
    prompter = _prompter()
    actions = torch.zeros(2, 3, dtype=torch.long)
    logits = prompter.step_logits(torch.tensor([0, 1]), actions)
    assert logits.shape == (2, 3, 7)
    assert not torch.allclose(logits[0], logits[1], atol=1e-5)
    classes = torch.tensor([0, 1, 2, 3])
    batch = prompter.score(classes, prompter.sample(classes).actions)
    (-(batch.logprob * torch.tensor([1.0, -1.0, 0.5, 2.0])).mean() - 0.01 * batch.entropy.mean()).backward()
    for name, p in prompter.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_causal_lm_learns_tiny_corpus():
    model = _lm(dropout=0.0).train()
    corpus = torch.tensor([[BOS, 5, 6, 7, 8, EOS], [BOS, 9, 10, 11, 12, EOS]]).repeat(4, 1)
    mask = torch.ones_like(corpus, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = -model.token_logprobs(corpus, mask).sum() / mask[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
