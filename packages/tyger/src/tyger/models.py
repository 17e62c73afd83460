"""The networks of Tyger: the GINE graph encoder, the task learner, the SMILES decoder and the querying module.

The graph encoder is GIN with edge features (GINE; Hu et al., "Strategies for Pre-training Graph Neural
Networks", ICLR 2020) written in plain PyTorch: messages ReLU(h_src + e) summed into their target atoms with
``index_add_``, then a two-layer MLP. The querying module of Tyger (arXiv 2205.11279) translates a molecule
graph into its SMILES string through an embedding z, and the selection works on z only. Sizes are in
:data:`MODEL_CONFIGS`; the ``paper`` row is the common 5 x 300 molecular-GNN default, not a number from the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.errors import UserError
from tyger.chem import ATOM_FEATURES, BOND_FEATURES, DESCRIPTOR_NAMES, GraphBatch
from tyger.losses import (
    DK_KINDS,
    FB_KINDS,
    dk_descriptor_loss,
    dk_fingerprint_loss,
    feedback_rank_loss,
    feedback_relation_loss,
    translation_loss,
)

__all__ = [
    "MODEL_CONFIGS",
    "POOLINGS",
    "AtomEncoder",
    "BondEncoder",
    "GINEConv",
    "GINEEncoder",
    "LossPredictionModule",
    "QueryingModule",
    "SmilesGRUDecoder",
    "TaskLearner",
    "global_pool",
    "querying_module",
    "task_learner",
]

#: Preset -> sizes: E encoder layers x width, d_z, D decoder layers x width, T task-learner layers x width.
MODEL_CONFIGS: dict[str, dict[str, int]] = {
    "paper": dict(enc_layers=5, enc_hidden=300, d_z=300, dec_layers=2, dec_hidden=512, task_layers=5, task_hidden=300),
    "small": dict(enc_layers=3, enc_hidden=128, d_z=128, dec_layers=1, dec_hidden=256, task_layers=3, task_hidden=128),
    "demo": dict(enc_layers=2, enc_hidden=64, d_z=64, dec_layers=1, dec_hidden=128, task_layers=2, task_hidden=64),
}  # fmt: skip
POOLINGS = ("mean", "sum")


class _CategoricalEncoder(nn.Module):
    """One embedding table per categorical feature column, summed."""

    def __init__(self, features: dict[str, list], dim: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(len(values), dim) for values in features.values())
        for emb in self.embeddings:
            nn.init.xavier_uniform_(emb.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(emb(x[:, i]) for i, emb in enumerate(self.embeddings))


class AtomEncoder(_CategoricalEncoder):
    def __init__(self, dim: int):
        super().__init__(ATOM_FEATURES, dim)


class BondEncoder(_CategoricalEncoder):
    def __init__(self, dim: int):
        super().__init__(BOND_FEATURES, dim)


def global_pool(h: torch.Tensor, index: torch.Tensor, num_graphs: int, mode: str = "mean") -> torch.Tensor:
    """Sum or mean of node rows per graph, (num_graphs, H); a graph without nodes pools to zeros."""
    if mode not in POOLINGS:
        raise UserError(f"pooling must be one of {', '.join(POOLINGS)}, got {mode!r}")
    out = h.new_zeros(num_graphs, h.shape[1]).index_add_(0, index, h)
    if mode == "mean":
        counts = torch.bincount(index, minlength=num_graphs).clamp_min(1).to(h.dtype)
        out = out / counts[:, None]
    return out


class GINEConv(nn.Module):
    """h' = MLP(h + sum_{j->i} ReLU(h_j + e_ji)), MLP = Linear(H, 2H), BatchNorm, ReLU, Linear(2H, H)."""

    def __init__(self, dim: int):
        super().__init__()
        self.bond_encoder = BondEncoder(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.BatchNorm1d(2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index
        messages = F.relu(h.index_select(0, src) + self.bond_encoder(edge_attr))
        return self.mlp(h + torch.zeros_like(h).index_add_(0, dst, messages))


class GINEEncoder(nn.Module):
    """L GINE layers of width H, each followed by BatchNorm (ReLU and dropout except after the last), then pooling."""

    def __init__(self, num_layers: int, hidden: int, dropout: float = 0.0, pooling: str = "mean"):
        super().__init__()
        if num_layers < 1:
            raise UserError(f"the graph encoder needs at least one layer, got {num_layers}")
        if pooling not in POOLINGS:
            raise UserError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.hidden, self.pooling = hidden, pooling
        self.drop = nn.Dropout(dropout)
        self.atom_encoder = AtomEncoder(hidden)
        self.convs = nn.ModuleList(GINEConv(hidden) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(num_layers))

    def forward(self, graphs: GraphBatch, return_layers: bool = False):
        """Pooled graph embeddings (B, H); with ``return_layers`` also each layer's pooled output (a list)."""
        h = self.atom_encoder(graphs.x)
        layers = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = norm(conv(h, graphs.edge_index, graphs.edge_attr))
            if i < len(self.convs) - 1:
                h = self.drop(F.relu(h))
            if return_layers:
                layers.append(global_pool(h, graphs.batch, graphs.num_graphs, self.pooling))
        pooled = layers[-1] if return_layers else global_pool(h, graphs.batch, graphs.num_graphs, self.pooling)
        return (pooled, layers) if return_layers else pooled


class TaskLearner(nn.Module):
    """The property predictor: a GINE encoder (dropout between layers) and an MLP head H -> H -> n_outputs.

    The outputs are logits for the classification task types and values for regression: one code path, the
    task type only decides the loss and the metric.
    """

    def __init__(self, n_outputs: int, num_layers: int, hidden: int, dropout: float = 0.5, pooling: str = "mean"):
        super().__init__()
        self.encoder = GINEEncoder(num_layers, hidden, dropout, pooling)
        self.head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_outputs)
        )

    def forward(self, graphs: GraphBatch, features: bool = False):
        """Outputs (B, n_outputs); with ``features`` the tuple of :meth:`forward_features` (through ``forward``,
        so a DDP wrapper synchronises the gradients)."""
        if features:
            return self.forward_features(graphs)
        return self.head(self.encoder(graphs))

    def forward_features(self, graphs: GraphBatch) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Outputs, the pooled features h^T (B, H) and every layer's pooled features (for a loss predictor)."""
        pooled, layers = self.encoder(graphs, return_layers=True)
        return self.head(pooled), pooled, layers

    @torch.no_grad()
    def mc_predict(self, graphs: GraphBatch, samples: int) -> torch.Tensor:
        """MC-dropout outputs (samples, B, n_outputs): dropout active, BatchNorm in eval (Gal et al. 2017)."""
        was_training = self.training
        self.eval()
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.train()
        try:
            return torch.stack([self(graphs) for _ in range(samples)])
        finally:
            self.train(was_training)


class LossPredictionModule(nn.Module):
    """Learning-loss module of Yoo & Kweon (CVPR 2019): per-layer pooled features -> FC + ReLU, concatenated,
    -> one predicted loss per molecule."""

    def __init__(self, in_dims: list[int], hidden: int = 128):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) for d in in_dims)
        self.out = nn.Linear(hidden * len(in_dims), 1)

    def forward(self, layer_features: list[torch.Tensor]) -> torch.Tensor:
        return self.out(torch.cat([b(f) for b, f in zip(self.branches, layer_features, strict=True)], 1)).squeeze(1)


class SmilesGRUDecoder(nn.Module):
    """Autoregressive GRU over SMILES tokens conditioned on z: h0_l = tanh(W_l z), z concatenated to each input."""

    def __init__(
        self, vocab_size: int, d_z: int, hidden: int, num_layers: int = 1, embed_dim: int = 128, pad_id: int = 0
    ):
        super().__init__()
        self.num_layers, self.hidden = num_layers, hidden
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.init_state = nn.Linear(d_z, num_layers * hidden)
        self.gru = nn.GRU(embed_dim + d_z, hidden, num_layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)
        self.pad_id = pad_id

    def initial_state(self, z: torch.Tensor) -> torch.Tensor:
        return (
            torch.tanh(self.init_state(z)).view(z.shape[0], self.num_layers, self.hidden).transpose(0, 1).contiguous()
        )

    def step(self, z: torch.Tensor, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) for input tokens (B, T) from ``state``, and the new state."""
        inputs = torch.cat([self.embed(tokens), z[:, None].expand(-1, tokens.shape[1], -1)], dim=2)
        output, state = self.gru(inputs, state)
        return self.out(output), state

    def forward(self, z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) predicting ``tokens[:, t + 1]`` from ``tokens[:, : t + 1]``."""
        return self.step(z, tokens, self.initial_state(z))[0]

    @torch.no_grad()
    def greedy(self, z: torch.Tensor, bos_id: int, eos_id: int, max_len: int = 130) -> torch.Tensor:
        """Argmax decoding, (B, L) token ids after ``<bos>``; positions after ``<eos>`` hold ``<pad>``."""
        state = self.initial_state(z)
        last = torch.full((z.shape[0], 1), bos_id, dtype=torch.long, device=z.device)
        done = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        out = []
        for _ in range(max_len):
            logits, state = self.step(z, last, state)
            token = logits[:, -1].argmax(-1).masked_fill(done, self.pad_id)
            out.append(token)
            done |= token == eos_id
            last = token[:, None]
            if done.all():
                break
        return torch.stack(out, 1)

    @torch.no_grad()
    def beam_search(
        self, z: torch.Tensor, bos_id: int, eos_id: int, beam_width: int = 5, max_len: int = 130
    ) -> torch.Tensor:
        """Batched beam search on summed log-probabilities; the best beam per molecule, laid out as :meth:`greedy`."""
        batch, width = z.shape[0], beam_width
        z_rep = z.repeat_interleave(width, 0)
        state = self.initial_state(z_rep)
        scores = torch.full((batch, width), float("-inf"), device=z.device)
        scores[:, 0] = 0.0  # the beams start identical: only the first may expand at step one
        last = torch.full((batch * width, 1), bos_id, dtype=torch.long, device=z.device)
        done = torch.zeros(batch * width, dtype=torch.bool, device=z.device)
        seqs = torch.zeros(batch * width, 0, dtype=torch.long, device=z.device)
        for _ in range(max_len):
            logits, state = self.step(z_rep, last, state)
            logp = logits[:, -1].log_softmax(-1)
            vocab = logp.shape[1]
            # A finished beam continues with <pad> at no cost and with nothing else.
            finished = torch.full_like(logp, float("-inf"))
            finished[:, self.pad_id] = 0.0
            logp = torch.where(done[:, None], finished, logp)
            total = (scores.view(-1, 1) + logp).view(batch, width * vocab)
            scores, flat = total.topk(width, dim=1)
            parent = (flat // vocab + torch.arange(batch, device=z.device)[:, None] * width).view(-1)
            token = (flat % vocab).view(-1)
            seqs = torch.cat([seqs[parent], token[:, None]], 1)
            state = state[:, parent]
            done = done[parent] | (token == eos_id)
            last = token[:, None]
            if done.all():
                break
        return seqs.view(batch, width, -1)[:, 0]


class QueryingModule(nn.Module):
    """Tyger's querying module: graph encoder E, projection to z, SMILES decoder D, and the heads of the two
    embedding-shaping objectives (domain knowledge ``dk``, task-learner feedback ``fb``)."""

    def __init__(
        self,
        encoder: GINEEncoder,
        decoder: SmilesGRUDecoder,
        d_z: int,
        dk: str = "fingerprint",
        fb: str = "loss-rank",
        n_descriptors: int = len(DESCRIPTOR_NAMES),
    ):
        super().__init__()
        if dk not in DK_KINDS:
            raise UserError(f"dk must be one of {', '.join(DK_KINDS)}, got {dk!r}")
        if fb not in FB_KINDS:
            raise UserError(f"fb must be one of {', '.join(FB_KINDS)}, got {fb!r}")
        self.dk, self.fb = dk, fb
        self.encoder, self.decoder = encoder, decoder
        self.proj = nn.Linear(encoder.hidden, d_z)
        self.dk_head = (
            nn.Sequential(nn.Linear(d_z, 128), nn.ReLU(), nn.Linear(128, n_descriptors))
            if dk == "descriptors"
            else None
        )
        self.fb_head = nn.Sequential(nn.Linear(d_z, 128), nn.ReLU(), nn.Linear(128, 1))

    def embed(self, graphs: GraphBatch) -> torch.Tensor:
        """z = proj(E(G)), (B, d_z), not normalised (selection L2-normalises it)."""
        return self.proj(self.encoder(graphs))

    def predict_loss(self, z: torch.Tensor) -> torch.Tensor:
        """The feedback head u(z): predicted task-learner loss per molecule, (B,)."""
        return self.fb_head(z).squeeze(1)

    def decode_greedy(self, graphs: GraphBatch, bos_id: int, eos_id: int, max_len: int = 130) -> torch.Tensor:
        return self.decoder.greedy(self.embed(graphs), bos_id, eos_id, max_len)

    def loss(
        self,
        pool_graphs: GraphBatch,
        pool_tokens: torch.Tensor | None,
        pool_knowledge: torch.Tensor | None = None,
        labelled_graphs: GraphBatch | None = None,
        feedback_targets: torch.Tensor | None = None,
        task_features: torch.Tensor | None = None,
        lambda_dk: float = 1.0,
        lambda_fb: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """L_Q = L_trans + lambda_DK L_DK + lambda_FB L_FB with its terms, as a dict (``total`` first).

        ``pool_tokens`` (B, T) with ``<bos>``/``<eos>`` (None: no translation term, the ablation);
        ``pool_knowledge`` ECFP4 bits for ``dk="fingerprint"`` or standardised descriptors for
        ``dk="descriptors"``; the feedback term needs a labelled batch with ``feedback_targets`` (per-molecule
        task losses, loss-rank) or ``task_features`` (task-learner pooled features, relation), or, for
        ``relation-pool``, ``task_features`` of the pool batch.
        """
        z = self.embed(pool_graphs)
        zero = z.new_zeros(())
        terms = {"trans": zero, "dk": zero, "fb": zero}
        if pool_tokens is not None:
            terms["trans"] = translation_loss(
                self.decoder(z, pool_tokens[:, :-1]), pool_tokens[:, 1:], self.decoder.pad_id
            )
        if self.dk == "fingerprint":
            terms["dk"] = dk_fingerprint_loss(z, pool_knowledge)
        elif self.dk == "descriptors":
            terms["dk"] = dk_descriptor_loss(self.dk_head(z), pool_knowledge)
        if self.fb == "relation-pool" and task_features is not None:
            terms["fb"] = feedback_relation_loss(task_features, z)
        elif self.fb in ("loss-rank", "relation") and labelled_graphs is not None:
            z_lab = self.embed(labelled_graphs)
            if self.fb == "loss-rank":
                terms["fb"] = feedback_rank_loss(self.predict_loss(z_lab), feedback_targets)
            else:
                terms["fb"] = feedback_relation_loss(task_features, z_lab)
        total = terms["trans"] + lambda_dk * terms["dk"] + lambda_fb * terms["fb"]
        return {"total": total, **terms}


def _config(preset: str) -> dict[str, int]:
    if preset not in MODEL_CONFIGS:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[preset]


def querying_module(
    preset: str, vocab_size: int, dk: str = "fingerprint", fb: str = "loss-rank", pad_id: int = 0
) -> QueryingModule:
    """The querying module at a preset's sizes (:data:`MODEL_CONFIGS`)."""
    c = _config(preset)
    encoder = GINEEncoder(c["enc_layers"], c["enc_hidden"])
    decoder = SmilesGRUDecoder(vocab_size, c["d_z"], c["dec_hidden"], c["dec_layers"], pad_id=pad_id)
    return QueryingModule(encoder, decoder, c["d_z"], dk=dk, fb=fb)


def task_learner(preset: str, n_outputs: int, dropout: float = 0.5) -> TaskLearner:
    """The task learner at a preset's sizes (:data:`MODEL_CONFIGS`)."""
    c = _config(preset)
    return TaskLearner(n_outputs, c["task_layers"], c["task_hidden"], dropout)
