"""DialogueGCN (Ghosal et al., "DialogueGCN: A Graph Convolutional Neural Network for Emotion Recognition in
Conversation", EMNLP 2019) as the M3ED authors ran it: ``DialogueGCN/model.py`` of github.com/declare-lab/
conv-emotion, adapted in ``codes/dialoggcn/`` of github.com/JinmingZhao/MEmoConv (input projection; run4/run5:
``--base_model LSTM --graph_model --nodal_attention --windowp 10 --windowf 10 --emotion_dim 180 --dropout 0.4
--lr 3e-4 --l2 0 --batch_size 16 --class_weight``, ``max_seq_len=110``, graph hidden = emotion dim).

Plain PyTorch on dense per-dialogue ``(B, n, n)`` relation and weight tensors (no torch_geometric); the
inputs and output follow :mod:`m3ed.models` (time-major features, ``(n, B, 7)`` logits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

SPEAKERS = 2  # M3ED dialogues are dyadic (speakers A = 0, B = 1)
RELATIONS = 2 * SPEAKERS**2  # speaker pair x direction (the paper's 2M^2)


def relation_graph(speakers: Tensor, pad_mask: Tensor, window_past: int = 10, window_future: int = 10) -> Tensor:
    """The relation of every edge ``source -> target`` of each dialogue, ``-1`` where there is no edge: ``(B, n, n)``.

    As ``edge_perms``/``batch_graphify`` of the official code: source ``s`` sends to every target ``t`` with
    ``s - window_past <= t <= s + window_future`` (``-1``: unbounded), itself included; the relation is
    ``4 * speaker(s) + 2 * speaker(t) + d`` with ``d = 0`` when ``s < t`` and ``d = 1`` otherwise (self-loops
    included), the order of the official ``edge_type_mapping``.
    """
    n = speakers.shape[0]
    pos = torch.arange(n, device=pad_mask.device)
    offset = pos[None, :] - pos[:, None]  # target - source
    inside = ((offset >= -window_past) | (window_past < 0)) & ((offset <= window_future) | (window_future < 0))
    real = ~pad_mask
    edges = inside[None] & real[:, :, None] & real[:, None, :]
    spk = speakers.t().long().to(pad_mask.device)
    relation = 2 * SPEAKERS * spk[:, :, None] + 2 * spk[:, None, :] + (offset <= 0).long()[None]
    return torch.where(edges, relation, torch.full_like(relation, -1))


def packed_lstm(lstm: nn.LSTM, x: Tensor, pad_mask: Tensor) -> Tensor:
    """Run a (bidirectional) ``lstm`` on each dialogue's real steps of time-major ``x``; zeros on padding."""
    lengths = (~pad_mask).sum(1).cpu()
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    return pad_packed_sequence(lstm(packed)[0], total_length=x.shape[0])[0]


class EdgeAttention(nn.Module):
    """Edge weights of paper eq. (1), official ``MaskedEdgeAttention`` (``attn1``).

    ``alpha[s, t] = softmax_t(w_s . g_t)`` over the targets ``t`` of source ``s``: one weight vector ``w_s``
    per position ``s`` (rows of ``Linear(d, max_seq_len)``), so dialogues are limited to ``max_seq_len``.
    """

    def __init__(self, dim: int, max_seq_len: int) -> None:
        super().__init__()
        self.max_seq_len = max_seq_len
        self.scalar = nn.Linear(dim, max_seq_len, bias=False)

    def forward(self, g: Tensor, relations: Tensor) -> Tensor:
        n = g.shape[1]
        if n > self.max_seq_len:
            raise ValueError(f"DialogueGCN: a dialogue of {n} utterances exceeds max_seq_len {self.max_seq_len}")
        scores = self.scalar(g)[:, :, :n].transpose(1, 2)  # (B, s, t) = w_s . g_t
        edges = relations >= 0
        scores = scores.masked_fill(~edges, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1) * edges  # padding rows (no edges) end up all zero


class RelationalGraphConv(nn.Module):
    """Paper eq. (2) as PyG 1.x ``RGCNConv(num_bases=30)`` computes it with ``edge_norm = alpha``:
    ``h_t = W_0 g_t + b + sum_s alpha_st W_r(s,t) g_s`` (sum aggregation), ``W_r = sum_k a_rk V_k``."""

    def __init__(self, d_in: int, d_out: int, relations: int = RELATIONS, bases: int = 30) -> None:
        super().__init__()
        self.basis = nn.Parameter(torch.empty(bases, d_in, d_out))
        self.coefficients = nn.Parameter(torch.empty(relations, bases))
        self.root = nn.Parameter(torch.empty(d_in, d_out))
        self.bias = nn.Parameter(torch.empty(d_out))
        bound = 1.0 / math.sqrt(bases * d_in)  # PyG 1.x: uniform(num_bases * in_channels, .) for all four
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, g: Tensor, weights: Tensor, relations: Tensor) -> Tensor:
        kinds = torch.arange(self.coefficients.shape[0], device=g.device)
        adjacency = weights[:, None] * (relations[:, None] == kinds[None, :, None, None])  # (B, R, s, t)
        w = torch.einsum("rk,kio->rio", self.coefficients, self.basis)
        messages = torch.einsum("bsi,rio->brso", g, w)
        return torch.einsum("brst,brso->bto", adjacency, messages) + g @ self.root + self.bias


class GraphConv(nn.Module):
    """Paper eq. (3), PyG ``GraphConv``: ``h_t = W_1 sum_s h_s + W_2 h_t + b`` over the (unweighted) edges."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.neighbours = nn.Linear(dim, dim)
        self.root = nn.Linear(dim, dim, bias=False)

    def forward(self, h: Tensor, edges: Tensor) -> Tensor:
        return self.neighbours(torch.einsum("bst,bsd->btd", edges.to(h.dtype), h)) + self.root(h)


class MatchingAttention(nn.Module):
    """Nodal attention, paper eqs. (4)-(6), official ``MatchingAttention(att_type="general2")``:
    ``beta_tk = softmax_k(tanh((W h_t + b) . h_k))`` over the dialogue's real utterances k, output
    ``sum_k beta_tk h_k``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.transform = nn.Linear(dim, dim)

    def forward(self, h: Tensor, pad_mask: Tensor) -> Tensor:
        scores = torch.tanh(self.transform(h) @ h.transpose(1, 2))
        return torch.softmax(scores.masked_fill(pad_mask[:, None, :], float("-inf")), dim=-1) @ h


class DialogueGCN(nn.Module):
    """DialogueGCN (``DialogueGCNModel`` with an LSTM base, graph and nodal attention).

    Concatenated features -> Linear to ``d_e`` (``--use_input_project``) -> 2-layer BiLSTM ``d_e`` (sequential
    context ``g``) -> edge weights (eq. 1) -> RGCN over the speaker-relation graph (eq. 2) -> GraphConv (eq. 3)
    -> ``[g, h]`` -> nodal attention (eqs. 4-6) -> Linear ``d_graph`` -> ReLU -> dropout -> Linear (eqs. 7-9).
    ``nodal_attention=False`` feeds ``[g, h]`` to the classifier directly, as the official code does without
    ``--nodal_attention`` (its default; the M3ED runs set it).

    Differences from the official code: the BiLSTM runs on each dialogue's real steps (the official one runs
    over the padded batch, so a shorter dialogue's backward states read its padding); features are
    concatenated audio, visual, text (official: text, audio, visual). As in the official code (not the
    paper's eq. 2) no non-linearity separates the two graph layers. Unverified: which torch_geometric the
    M3ED runs used (the authors' note names 1.6.3, whose ``RGCNConv`` takes no ``edge_norm`` and averages
    per relation); this follows the 1.x ``RGCNConv`` the DialogueGCN code was written for (sum, weighted by
    the edge attention).
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        input_dims: dict[str, int],
        d_e: int = 180,
        d_graph: int | None = None,
        window_past: int = 10,
        window_future: int = 10,
        bases: int = 30,
        max_seq_len: int = 110,
        dropout: float = 0.4,
        nodal_attention: bool = True,
        num_classes: int = 7,
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.window_past, self.window_future = window_past, window_future
        d_graph = d_graph or d_e
        self.project = nn.Linear(sum(input_dims[m] for m in self.modalities), d_e)
        self.lstm = nn.LSTM(d_e, d_e, num_layers=2, bidirectional=True, dropout=dropout)
        self.edge_attention = EdgeAttention(2 * d_e, max_seq_len)
        self.conv1 = RelationalGraphConv(2 * d_e, d_graph, RELATIONS, bases)
        self.conv2 = GraphConv(d_graph)
        self.attention = MatchingAttention(2 * d_e + d_graph) if nodal_attention else None
        self.linear = nn.Linear(2 * d_e + d_graph, d_graph)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_graph, num_classes)

    def forward(self, features: dict[str, Tensor], speakers: Tensor, pad_mask: Tensor) -> Tensor:
        u = self.project(torch.cat([features[m] for m in self.modalities], dim=-1))
        g = packed_lstm(self.lstm, u, pad_mask).transpose(0, 1)  # (B, n, 2 d_e)
        relations = relation_graph(speakers, pad_mask, self.window_past, self.window_future)
        h = self.conv1(g, self.edge_attention(g, relations), relations)
        h = self.conv2(h, relations >= 0)
        e = torch.cat([g, h], dim=-1)
        if self.attention is not None:
            e = self.attention(e, pad_mask)
        logits = self.classifier(self.dropout(F.relu(self.linear(e))))
        return logits.transpose(0, 1)
