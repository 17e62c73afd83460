"""MMGCN (Hu et al., "MMGCN: Multimodal Fusion via Deep Graph Convolution Network for Emotion Recognition in
Conversation", ACL 2021), following ``model.py``/``model_mm.py``/``model_GCN.py`` of the official code,
github.com/hujingwen6666/MMGCN, as its ``run.sh`` runs it (``--base-model LSTM --graph_type MMGCN
--mm_fusion_mthd concat_subsequently --use_speaker --dropout 0.4``; ``D_e = graph_h = 100``, residue on,
no LSTM for audio and visual). Not part of the M3ED authors' code (spec: external).

Plain PyTorch on a dense ``(B, k n, k n)`` adjacency per dialogue; the inputs and output follow
:mod:`m3ed.models` (time-major features, ``(n, B, 7)`` logits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m3ed.dialoguegcn import SPEAKERS, packed_lstm


def angular_similarity(u: Tensor, v: Tensor) -> Tensor:
    """``1 - arccos(0.99999 cos(u, v)) / pi`` over the last dimension (official ``create_big_adj``)."""
    return 1 - torch.acos(0.99999 * (u * v).sum(-1)) / math.pi


def multimodal_adjacency(nodes: Tensor, pad_mask: Tensor) -> Tensor:
    """The normalised adjacency ``D^-1/2 A D^-1/2`` of the MMGCN graph of each dialogue: ``(B, k n, k n)``.

    ``nodes`` is ``(B, k, n, d)``: one node per modality and utterance, node ``m * n + i`` for modality ``m``
    and utterance ``i``. ``A`` joins every two utterances of one modality (self-loops included) and the
    ``k`` modality nodes of one utterance, weighted by :func:`angular_similarity`; padding has no edges.
    """
    batch, k, n, _ = nodes.shape
    unit = F.normalize(nodes, dim=-1)
    intra = angular_similarity(unit[:, :, :, None], unit[:, :, None, :])  # (B, k, n, n)
    cross = angular_similarity(unit[:, :, None], unit[:, None, :])  # (B, k, k, n)
    same_modality = torch.eye(k, device=nodes.device, dtype=nodes.dtype)
    same_utterance = torch.eye(n, device=nodes.device, dtype=nodes.dtype)
    adj = intra[:, :, :, None, :] * same_modality[None, :, None, :, None]  # (B, m, i, q, j)
    adj = adj + cross.permute(0, 1, 3, 2)[..., None] * (
        (1 - same_modality)[None, :, None, :, None] * same_utterance[None, None, :, None, :]
    )
    real = (~pad_mask).to(nodes.dtype)
    adj = (adj * real[:, None, :, None, None] * real[:, None, None, None, :]).reshape(batch, k * n, k * n)
    degree = adj.sum(-1)
    scale = torch.where(degree > 0, degree.clamp(min=1e-12).rsqrt(), torch.zeros_like(degree))
    return scale[:, :, None] * adj * scale[:, None, :]


class MMGCN(nn.Module):
    """MMGCN with the official ``DialogueGCNModel(graph_type="MMGCN")`` pipeline.

    Per modality a Linear to ``2 d_e``; the text goes on through a 2-layer BiLSTM ``d_e`` and gets a learned
    speaker embedding added (``--use_speaker``). Every modality's utterances become nodes of one graph per
    dialogue (:func:`multimodal_adjacency`, on these node features, not detached). The deep GCN is GCNII
    (Chen et al. 2020, the ``variant`` form of ``GCNII_lyc``): ``h0 = ReLU(W_in dropout(x))``, then for
    ``l = 1..L``: ``h <- ReLU(theta_l [A h, h0] W_l + (1 - theta_l)((1 - alpha) A h + alpha h0))`` with
    ``theta_l = log(lamda / l + 1)``, dropout before each layer and after the last; each node's output is
    ``[dropout(x), h]``; the modality outputs of an utterance are concatenated -> dropout -> ReLU -> Linear.

    ``layers=64`` is what the official code builds (``MM_GCN(..., nlayers=64)``; its ``--Deep_GCN_nlayers``
    only names the run). Differences from the official code: the BiLSTM runs on each dialogue's real steps;
    a single modality works (the official graph needs two or three); layers the official module builds but
    never calls (per-modality ``a_fc``/``v_fc``/``l_fc``, modality embeddings, ``feature_fc``, the edge
    attention and gated-attention modules of ``DialogueGCNModel``) are left out. Unverified: the MMGCN
    settings of the M3ED benchmark row (the spec cites a leaderboard only); the official IEMOCAP ones are used.
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        input_dims: dict[str, int],
        d_e: int = 100,
        hidden: int = 100,
        layers: int = 64,
        lamda: float = 0.5,
        alpha: float = 0.1,
        dropout: float = 0.4,
        speaker_embedding: bool = True,
        num_classes: int = 7,
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.lamda, self.alpha, self.dropout = lamda, alpha, dropout
        d = 2 * d_e
        self.project = nn.ModuleDict({m: nn.Linear(input_dims[m], d) for m in self.modalities})
        has_text = "text" in self.modalities
        self.lstm = nn.LSTM(d, d_e, num_layers=2, bidirectional=True, dropout=dropout) if has_text else None
        self.speakers = nn.Embedding(SPEAKERS, d) if has_text and speaker_embedding else None
        self.input = nn.Linear(d, hidden)
        bound = 1.0 / math.sqrt(hidden)  # official GraphConvolution.reset_parameters
        self.weights = nn.Parameter(torch.empty(layers, 2 * hidden, hidden).uniform_(-bound, bound))
        self.classifier = nn.Linear(len(self.modalities) * (d + hidden), num_classes)

    def _nodes(self, features: dict[str, Tensor], speakers: Tensor, pad_mask: Tensor) -> Tensor:
        nodes = []
        for m in self.modalities:
            x = self.project[m](features[m])
            if m == "text":
                x = packed_lstm(self.lstm, x, pad_mask)
                if self.speakers is not None:
                    x = x + self.speakers(speakers.long())
            nodes.append(x.transpose(0, 1))
        return torch.stack(nodes, dim=1)  # (B, k, n, d)

    def forward(self, features: dict[str, Tensor], speakers: Tensor, pad_mask: Tensor) -> Tensor:
        nodes = self._nodes(features, speakers, pad_mask)
        batch, k, n, _ = nodes.shape
        adj = multimodal_adjacency(nodes, pad_mask)
        x = F.dropout(nodes.flatten(1, 2), self.dropout, self.training)
        h0 = F.relu(self.input(x))
        h = h0
        for depth, weight in enumerate(self.weights, start=1):
            theta = math.log(self.lamda / depth + 1)
            hi = adj @ F.dropout(h, self.dropout, self.training)
            mixed = (1 - self.alpha) * hi + self.alpha * h0
            h = F.relu(theta * (torch.cat([hi, h0], dim=-1) @ weight) + (1 - theta) * mixed)
        out = torch.cat([x, F.dropout(h, self.dropout, self.training)], dim=-1)  # (B, k n, d + hidden)
        out = out.view(batch, k, n, -1).permute(2, 0, 1, 3).reshape(n, batch, -1)
        return self.classifier(F.relu(F.dropout(out, self.dropout, self.training)))
