"""The three networks of PromptDFD (Ma et al., PromptDFD, IJCAI 2022), tiny and pure PyTorch.

* :class:`TextClassifier`: the BERT-style encoder used as both teacher and student.
* :class:`CausalLM`: the GPT-style language-model prior; frozen, it continues a prompt into a pseudo sentence.
* :class:`GRUPrompter`: the reinforced topic prompter, a class-conditioned policy that picks prompt words from a
  candidate vocabulary; trained with REINFORCE through :meth:`GRUPrompter.score`.

``CLASSIFIER_SIZES`` and ``GENERATOR_SIZES`` are timm-style size tables read by :func:`build_classifier` and
:func:`build_generator`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.errors import UserError

from .text import EOS, PAD

__all__ = [
    "CLASSIFIER_SIZES",
    "GENERATOR_SIZES",
    "CausalLM",
    "GRUPrompter",
    "PromptBatch",
    "TextClassifier",
    "build_classifier",
    "build_generator",
    "sample_continuations",
]

#: Classifier sizes: the demo teacher and the (smaller) demo student.
CLASSIFIER_SIZES: dict[str, dict[str, int]] = {
    "demo-teacher": dict(dim=64, depth=2, heads=4),
    "demo-student": dict(dim=32, depth=1, heads=2),
}
#: Generator (language-model prior) sizes.
GENERATOR_SIZES: dict[str, dict[str, int]] = {
    "demo": dict(dim=64, depth=2, heads=4),
}


def _init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation: weights normal(0, 0.02), biases zero, LayerNorm identity."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
        nn.init.normal_(module.in_proj_weight, std=0.02)
        if module.in_proj_bias is not None:
            nn.init.zeros_(module.in_proj_bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _layers(dim: int, depth: int, heads: int, ffn: int | None, dropout: float) -> nn.ModuleList:
    if dim % heads:
        raise UserError(f"dim {dim} is not divisible by heads {heads}: choose heads that divide dim")
    return nn.ModuleList(
        nn.TransformerEncoderLayer(
            dim, heads, ffn or 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        for _ in range(depth)
    )


def _check_length(length: int, max_len: int) -> None:
    if length > max_len:
        raise UserError(f"sequence length {length} exceeds the model's max_len {max_len}: truncate the inputs")


def _nucleus_sample(logits: Tensor, top_p: float, generator: torch.Generator | None) -> Tensor:
    """One token per row from the smallest top-probability set with mass >= ``top_p`` (Holtzman et al., 2020)."""
    probs = logits.softmax(-1)
    # a token with p < (1 - top_p) / V has less than 1 - top_p mass at and below its rank: never in the nucleus,
    # so a partial sort of the rest is exact (and much cheaper than sorting V for a peaked distribution)
    k = int((probs >= (1.0 - top_p) / probs.shape[-1]).sum(-1).max())
    top, order = probs.topk(k, -1)
    top = top.masked_fill(top.cumsum(-1) - top >= top_p, 0.0)  # the top token always stays
    cum = top.cumsum(-1)
    u = torch.rand(cum.shape[0], 1, generator=generator, device=cum.device) * cum[:, -1:]
    choice = torch.searchsorted(cum, u, right=True).clamp_max(k - 1)
    return order.gather(-1, choice).squeeze(-1)


def sample_continuations(
    prompts: Tensor,
    next_logits: Callable[[Tensor, int], Tensor],
    *,
    max_new_tokens: int,
    top_p: float,
    temperature: float,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None,
) -> Tensor:
    """Continue ``prompts`` [B, P] into [B, P + max_new_tokens] by batched nucleus sampling, where
    ``next_logits(out, t)`` gives the logits [B, V] of position ``t`` from ``out[:, :t]`` (called for t = P, P+1, ...
    in order, so a language model may keep a KV cache). After a row emits ``eos_id`` its later positions are
    ``pad_id``; ``top_p == 0`` or ``temperature == 0`` decodes greedily."""
    if prompts.ndim != 2 or prompts.shape[1] < 1:
        raise UserError(f"prompts must be [B, P] with P >= 1 (BOS first), got shape {tuple(prompts.shape)}")
    if max_new_tokens < 0 or not 0.0 <= top_p <= 1.0 or temperature < 0.0:
        raise UserError(
            f"bad sampling settings max_new_tokens={max_new_tokens}, top_p={top_p}, temperature={temperature}:"
            " need max_new_tokens >= 0, 0 <= top_p <= 1, temperature >= 0"
        )
    batch, plen = prompts.shape
    greedy = top_p == 0.0 or temperature == 0.0
    out = torch.full((batch, plen + max_new_tokens), pad_id, dtype=torch.long, device=prompts.device)
    out[:, :plen] = prompts
    done = torch.zeros(batch, dtype=torch.bool, device=prompts.device)
    for t in range(plen, plen + max_new_tokens):
        logits = next_logits(out, t).float()
        nxt = logits.argmax(-1) if greedy else _nucleus_sample(logits / temperature, top_p, generator)
        out[:, t] = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        done |= nxt == eos_id
        if bool(done.all()):
            break
    return out


class TextClassifier(nn.Module):
    """BERT-style pre-norm encoder with a linear head: the teacher and the student of the distillation."""

    def __init__(
        self,
        vocab_size: int,
        n_classes: int,
        *,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        ffn: int | None = None,
        max_len: int = 32,
        dropout: float = 0.1,
        pooling: str = "cls",
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise UserError(f"unknown pooling {pooling!r}: choose 'cls' or 'mean'")
        self.pooling, self.max_len = pooling, max_len
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.emb_norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.layers = _layers(dim, depth, heads, ffn, dropout)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)
        self.apply(_init_weights)

    def features(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Pooled features [B, dim] of ``ids`` [B, L]; ``mask`` [B, L] is True on real tokens."""
        _check_length(ids.shape[1], self.max_len)
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.emb_norm(self.tok_emb(ids) + self.pos_emb(pos)))
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=~mask)
        x = self.norm(x)
        if self.pooling == "cls":
            return x[:, 0]
        m = mask.unsqueeze(-1).to(x.dtype)
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Class logits [B, C]; padding (``mask`` False) does not affect them."""
        return self.head(self.features(ids, mask))


class CausalLM(nn.Module):
    """GPT-style pre-norm decoder with tied input/output embeddings: the language-model prior that continues a
    prompt into a pseudo sentence (Ma et al., PromptDFD)."""

    def __init__(
        self,
        vocab_size: int,
        *,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        ffn: int | None = None,
        max_len: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.layers = _layers(dim, depth, heads, ffn, dropout)
        self.norm = nn.LayerNorm(dim)
        self.apply(_init_weights)

    def _hidden(self, ids: Tensor) -> Tensor:
        length = ids.shape[1]
        _check_length(length, self.max_len)
        pos = torch.arange(length, device=ids.device)
        x = self.drop(self.tok_emb(ids) + self.pos_emb(pos))
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).triu(1)
        for layer in self.layers:
            x = layer(x, src_mask=causal, is_causal=True)
        return self.norm(x)

    def forward(self, ids: Tensor) -> Tensor:
        """Next-token logits [B, L, V]; position t sees ``ids[:, :t+1]`` only."""
        return F.linear(self._hidden(ids), self.tok_emb.weight)

    def token_logprobs(self, ids: Tensor, mask: Tensor) -> Tensor:
        """log p(ids[:, t+1] | ids[:, :t+1]) as [B, L-1], 0 where ``mask[:, t+1]`` is False."""
        logp = self(ids[:, :-1]).log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return torch.where(mask[:, 1:], logp, torch.zeros_like(logp))

    @torch.no_grad()
    def generate(
        self,
        prompts: Tensor,
        *,
        max_new_tokens: int,
        top_p: float = 0.9,
        temperature: float = 1.0,
        eos_id: int = EOS,
        pad_id: int = PAD,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue ``prompts`` [B, P] by batched nucleus sampling into [B, P + max_new_tokens].

        After a row emits ``eos_id`` its later positions are ``pad_id``. ``top_p == 0`` or ``temperature == 0``
        decodes greedily. Runs in eval mode (the module's mode is restored afterwards).
        """
        if prompts.shape[-1] + max_new_tokens > self.max_len:
            raise UserError(
                f"prompt length {prompts.shape[-1]} + max_new_tokens {max_new_tokens} exceeds max_len {self.max_len}:"
                " shorten the prompt or generate fewer tokens"
            )
        was_training = self.training
        self.eval()
        try:
            return sample_continuations(
                prompts,
                lambda out, t: F.linear(self._hidden(out[:, :t])[:, -1], self.tok_emb.weight),
                max_new_tokens=max_new_tokens,
                top_p=top_p,
                temperature=temperature,
                eos_id=eos_id,
                pad_id=pad_id,
                generator=generator,
            )
        finally:
            self.train(was_training)


@dataclass
class PromptBatch:
    """Prompts drawn by :class:`GRUPrompter`: candidate indices ``actions`` [B, K], generator token ``ids``
    [B, K], ``logprob`` [B] (sum over the K steps) and ``entropy`` [B] (mean over the K step distributions)."""

    actions: Tensor
    ids: Tensor
    logprob: Tensor
    entropy: Tensor


class GRUPrompter(nn.Module):
    """The reinforced topic prompter (Ma et al., PromptDFD): a class-conditioned autoregressive GRU policy over a
    candidate vocabulary. Every step reads the class embedding, added to a learned start vector at step 0 and to
    the embedding of the previous action after, so the class steers each word, not only the first."""

    def __init__(self, n_classes: int, candidate_ids: Sequence[int], *, length: int = 3, dim: int = 64) -> None:
        super().__init__()
        cands = torch.as_tensor(list(candidate_ids), dtype=torch.long)
        if cands.ndim != 1 or cands.numel() == 0:
            raise UserError("the prompter needs a non-empty list of candidate token ids")
        if length < 1:
            raise UserError(f"prompt length {length} must be >= 1")
        self.length = length
        self.register_buffer("candidate_ids", cands)
        self.class_emb = nn.Embedding(n_classes, dim)
        self.start = nn.Parameter(torch.zeros(dim))
        self.action_emb = nn.Embedding(cands.numel(), dim)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, cands.numel())
        self.apply(_init_weights)

    def step_logits(self, classes: Tensor, actions: Tensor) -> Tensor:
        """Teacher-forced logits [B, K, Vc] of each step given the class and the previous ``actions`` [B, K]."""
        start = self.start.expand(len(classes), 1, -1)
        inputs = torch.cat([start, self.action_emb(actions[:, :-1])], dim=1) + self.class_emb(classes)[:, None]
        return self.head(self.gru(inputs)[0])

    def score(self, classes: Tensor, actions: Tensor) -> PromptBatch:
        """Log-probability and entropy of given ``actions`` [B, K] (with grad, for REINFORCE)."""
        logp = self.step_logits(classes, actions).log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1).mean(-1)
        logprob = logp.gather(-1, actions[..., None]).squeeze(-1).sum(-1)
        return PromptBatch(actions, self.candidate_ids[actions], logprob, entropy)

    @torch.no_grad()
    def sample(self, classes: Tensor, *, generator: torch.Generator | None = None, greedy: bool = False) -> PromptBatch:
        """Draw ``length`` candidate words per class in ``classes`` [B] (argmax per step when ``greedy``)."""
        condition = self.class_emb(classes)[:, None]
        x, h = self.start + condition, None
        actions, logprob, entropy = [], 0.0, 0.0
        for _ in range(self.length):
            y, h = self.gru(x, h)
            logp = self.head(y[:, 0]).log_softmax(-1)
            a = logp.argmax(-1) if greedy else torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
            logprob = logprob + logp.gather(-1, a[:, None]).squeeze(-1)
            entropy = entropy - (logp.exp() * logp).sum(-1)
            actions.append(a)
            x = self.action_emb(a)[:, None] + condition
        acts = torch.stack(actions, 1)
        return PromptBatch(acts, self.candidate_ids[acts], logprob, entropy / self.length)


def _size(table: dict[str, dict[str, int]], size: str, what: str) -> dict[str, int]:
    if size not in table:
        raise UserError(f"unknown {what} size {size!r}: choose one of {', '.join(table)}")
    return table[size]


def build_classifier(size: str, vocab_size: int, n_classes: int, max_len: int, **overrides: Any) -> TextClassifier:
    """A :class:`TextClassifier` of ``CLASSIFIER_SIZES[size]`` (``overrides``: other constructor keywords)."""
    return TextClassifier(
        vocab_size, n_classes, max_len=max_len, **{**_size(CLASSIFIER_SIZES, size, "classifier"), **overrides}
    )


def build_generator(size: str, vocab_size: int, max_len: int, **overrides: Any) -> CausalLM:
    """A :class:`CausalLM` of ``GENERATOR_SIZES[size]`` (``overrides``: other constructor keywords)."""
    return CausalLM(vocab_size, max_len=max_len, **{**_size(GENERATOR_SIZES, size, "generator"), **overrides})
