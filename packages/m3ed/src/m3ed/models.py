"""MDI (Multimodal Dialog-aware Interaction) of "M3ED: Multi-modal Multi-scene Multi-label Emotional Dialogue
Database" (Zhao et al., ACL 2022) and its baselines. The official MDI code is ``codes/mdi/`` of the first
author's repository github.com/JinmingZhao/MEmoConv (the dataset's repository, github.com/AIM3-RUC/RUCM3ED,
holds no model code).

Inputs follow ``m3ed.data.collate_dialogues``: ``features`` maps each chosen modality to a time-major
``(n, B, d_m)`` tensor, ``speakers`` is ``(n, B)`` (0 = A, 1 = B, 0 on padding) and ``pad_mask`` is
``(B, n)`` with True on padding. Every model returns logits ``(n, B, num_classes)``.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor, nn

from m3ed.dialoguegcn import DialogueGCN
from m3ed.mmgcn import MMGCN
from m3ed.release import MODALITIES

MODELS = ("mdi", "utt-mlp", "dialoguernn", "dialoguegcn", "mmgcn")
MODEL_NAMES = {
    "mdi": "MDI",
    "utt-mlp": "utterance MLP",
    "dialoguernn": "DialogueRNN",
    "dialoguegcn": "DialogueGCN",
    "mmgcn": "MMGCN",
}
BRANCHES = ("global", "local", "intra", "inter")
FUSIONS = ("ecat", "lcat", "add", "gate")
COMBINES = ("end", "per_block")


def _ordered(modalities: tuple[str, ...]) -> tuple[str, ...]:
    """The chosen modalities in the canonical audio, visual, text order."""
    unknown = set(modalities) - set(MODALITIES)
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities}")
    return tuple(m for m in MODALITIES if m in modalities)


# ---------------------------------------------------------------- masks (the branches of the paper's Figure 2)


def _blocked(allowed: Tensor, pad_mask: Tensor) -> Tensor:
    """Turn ``allowed (B, n, n)`` into the "True = blocked" mask, with the official code's padding rules.

    Padding columns are always blocked; padding rows are fully unblocked, so no row of the attention
    mask is all-blocked (the key-padding mask handles those rows' keys).
    """
    blocked = ~allowed | pad_mask[:, None, :]
    return blocked & ~pad_mask[:, :, None]


def global_mask(speakers: Tensor, pad_mask: Tensor) -> Tensor:
    """Global interaction (GI): every utterance attends to every real utterance."""
    n = speakers.shape[0]
    allowed = torch.ones(pad_mask.shape[0], n, n, dtype=torch.bool, device=pad_mask.device)
    return _blocked(allowed, pad_mask)


def local_mask(speakers: Tensor, pad_mask: Tensor, window: int = 3) -> Tensor:
    """Local interaction (LI): utterances i and j attend when ``|i - j| <= window - 1``."""
    n = speakers.shape[0]
    pos = torch.arange(n, device=pad_mask.device)
    allowed = (pos[:, None] - pos[None, :]).abs() <= window - 1
    return _blocked(allowed.expand(pad_mask.shape[0], n, n), pad_mask)


def intra_speaker_mask(speakers: Tensor, pad_mask: Tensor) -> Tensor:
    """Intra-speaker interaction (IaSI): only utterances of the same speaker, self included."""
    spk = speakers.t().to(pad_mask.device)
    return _blocked(spk[:, :, None] == spk[:, None, :], pad_mask)


def inter_speaker_mask(speakers: Tensor, pad_mask: Tensor) -> Tensor:
    """Inter-speaker interaction (IeSI): only utterances of the other speaker, plus self."""
    spk = speakers.t().to(pad_mask.device)
    eye = torch.eye(spk.shape[1], dtype=torch.bool, device=pad_mask.device)
    return _blocked((spk[:, :, None] != spk[:, None, :]) | eye, pad_mask)


BRANCH_MASKS: dict[str, Callable[..., Tensor]] = {
    "global": global_mask,
    "local": local_mask,
    "intra": intra_speaker_mask,
    "inter": inter_speaker_mask,
}


class SinusoidalPositionalEncoding(nn.Module):
    """Sinusoidal positions (Vaswani et al. 2017) added to ``(n, B, d)`` inputs, scaled by ``scale`` (0.1 in MDI)."""

    def __init__(self, d_model: int, scale: float = 0.1, max_len: int = 512) -> None:
        super().__init__()
        self.scale = scale
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.scale * self.pe[: x.shape[0], None, :].to(x.dtype)


# ---------------------------------------------------------------- MDI (the paper's Figure 2)


@dataclass
class MDIConfig:
    """Hyper-parameters of MDI (``paper`` is the official ``codes/mdi/run_htrm.sh`` recipe)."""

    modalities: tuple[str, ...]
    input_dims: dict[str, int] = field(repr=False)
    d_model: int = 512
    heads: int = 8
    ffn: int = 1536
    layers: int = 4
    dropout: float = 0.1
    window: int = 3
    branches: tuple[str, ...] = BRANCHES
    combine: str = "end"
    fusion: str = "ecat"
    shared_encoder: bool = True
    freeze_fusion_projection: bool = False
    num_classes: int = 7

    def __post_init__(self) -> None:
        self.modalities = _ordered(tuple(self.modalities))
        self.branches = tuple(self.branches)
        missing = [m for m in self.modalities if m not in self.input_dims]
        if missing:
            raise ValueError(f"input_dims lacks {missing}")
        if not self.branches or set(self.branches) - set(BRANCHES):
            raise ValueError(f"branches must be a non-empty subset of {BRANCHES}, got {self.branches}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {self.combine!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")

    @classmethod
    def _preset(cls, modalities: tuple[str, ...], input_dims: dict[str, int], **sizes: int) -> MDIConfig:
        # Official unimodal runs use the global branch only; bi- and trimodal runs use all four.
        branches = ("global",) if len(set(modalities)) == 1 else BRANCHES
        return cls(tuple(modalities), dict(input_dims), branches=branches, **sizes)

    @classmethod
    def paper(cls, modalities: tuple[str, ...], input_dims: dict[str, int]) -> MDIConfig:
        """Official config: d 512, 8 heads, FFN 1536, 4 layers; unimodal d 384, 6 heads, FFN 1024."""
        if len(set(modalities)) == 1:
            return cls._preset(modalities, input_dims, d_model=384, heads=6, ffn=1024, layers=4)
        return cls._preset(modalities, input_dims, d_model=512, heads=8, ffn=1536, layers=4)

    @classmethod
    def small(cls, modalities: tuple[str, ...], input_dims: dict[str, int]) -> MDIConfig:
        """Reduced scale: d 256, 4 heads, FFN 768, 2 layers."""
        return cls._preset(modalities, input_dims, d_model=256, heads=4, ffn=768, layers=2)

    @classmethod
    def demo(cls, modalities: tuple[str, ...], input_dims: dict[str, int]) -> MDIConfig:
        """CPU demo scale: d 64, 4 heads, FFN 128, 2 layers."""
        return cls._preset(modalities, input_dims, d_model=64, heads=4, ffn=128, layers=2)


class DialogAwareInteraction(nn.Module):
    """The four masked Transformer branches of MDI, combined by sum + LayerNorm (the paper's Figure 2).

    ``combine="end"``: each branch runs the full encoder (with its final LayerNorm) once and the branch
    outputs are summed (the official ``--residual_spk_attn`` path). ``combine="per_block"``: at each layer
    the branch outputs are summed and fed to the next layer (paper Figure 2). With ``shared_encoder`` one
    encoder's weights serve every branch (official ``--same_encoder``).
    """

    def __init__(self, cfg: MDIConfig) -> None:
        super().__init__()
        self.branches, self.window, self.heads, self.combine = cfg.branches, cfg.window, cfg.heads, cfg.combine
        # nn.TransformerEncoder deep-copies its layer, so each separate encoder gets a fresh one
        self.encoders = nn.ModuleList(
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.ffn, cfg.dropout, activation="relu"),
                cfg.layers,
                norm=nn.LayerNorm(cfg.d_model) if cfg.combine == "end" else None,
                enable_nested_tensor=False,
            )
            for _ in range(1 if cfg.shared_encoder else len(cfg.branches))
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        for module in self.encoders.modules():
            if isinstance(module, nn.Linear):  # FFN and attention out-projection; in_proj keeps the default
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def _encoder(self, k: int) -> nn.TransformerEncoder:
        return self.encoders[0 if len(self.encoders) == 1 else k]

    def forward(self, x: Tensor, speakers: Tensor, pad_mask: Tensor) -> Tensor:
        masks = []
        for name in self.branches:
            kwargs = {"window": self.window} if name == "local" else {}
            masks.append(BRANCH_MASKS[name](speakers, pad_mask, **kwargs).repeat_interleave(self.heads, dim=0))
        if self.combine == "end":
            out = sum(self._encoder(k)(x, mask=m, src_key_padding_mask=pad_mask) for k, m in enumerate(masks))
        else:
            out = x
            for depth in range(len(self._encoder(0).layers)):
                out = sum(
                    self._encoder(k).layers[depth](out, src_mask=m, src_key_padding_mask=pad_mask)
                    for k, m in enumerate(masks)
                )
        return self.norm(out)


class MDI(nn.Module):
    """Multimodal Dialog-aware Interaction (M3ED paper Figure 2; official ``new_ERC_HTRM``).

    Fusion F(.) -> dropout -> 0.1-scaled sinusoidal PE -> dropout -> dialog-aware interaction
    -> Linear classifier. Fusion ``ecat``: concat [audio, visual, text] -> Linear -> Tanh. ``lcat``/``add``:
    per-modality Linear+Tanh and interaction module, outputs concatenated (classifier on k*d) or summed.
    ``gate``: per-modality Linear+Tanh, then for each pair (x, y) in canonical order
    ``g = sigmoid(Linear([x, y, x*y]))``, ``h = g*x + (1-g)*y``; the pair outputs are summed (a single
    modality passes through unchanged).
    """

    def __init__(self, cfg: MDIConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, mods = cfg.d_model, cfg.modalities
        if cfg.fusion == "ecat":
            self.fusion = nn.Sequential(nn.Linear(sum(cfg.input_dims[m] for m in mods), d), nn.Tanh())
        else:
            self.fusion = nn.ModuleDict({m: nn.Sequential(nn.Linear(cfg.input_dims[m], d), nn.Tanh()) for m in mods})
        if cfg.freeze_fusion_projection:  # the official --bert_frozen quirk (run_htrm.py)
            self.fusion.requires_grad_(False)
        self.pairs = list(itertools.combinations(mods, 2)) if cfg.fusion == "gate" else []
        self.gates = nn.ModuleList(nn.Linear(3 * d, 1) for _ in self.pairs)
        self.dropout_in = nn.Dropout(cfg.dropout)
        self.pos = SinusoidalPositionalEncoding(d, scale=0.1)
        self.dropout_pos = nn.Dropout(cfg.dropout)
        streams = len(mods) if cfg.fusion in ("lcat", "add") else 1
        self.interaction = nn.ModuleList(DialogAwareInteraction(cfg) for _ in range(streams))
        self.classifier = nn.Linear(d * len(mods) if cfg.fusion == "lcat" else d, cfg.num_classes)

    def _fuse(self, features: dict[str, Tensor]) -> list[Tensor]:
        mods = self.cfg.modalities
        if self.cfg.fusion == "ecat":
            return [self.fusion(torch.cat([features[m] for m in mods], dim=-1))]
        proj = {m: self.fusion[m](features[m]) for m in mods}
        if self.cfg.fusion in ("lcat", "add"):
            return [proj[m] for m in mods]
        if not self.pairs:
            return [proj[mods[0]]]
        fused = []
        for gate, (a, b) in zip(self.gates, self.pairs, strict=True):
            x, y = proj[a], proj[b]
            g = torch.sigmoid(gate(torch.cat([x, y, x * y], dim=-1)))
            fused.append(g * x + (1 - g) * y)
        return [sum(fused)]

    def forward(self, features: dict[str, Tensor], speakers: Tensor, pad_mask: Tensor) -> Tensor:
        outs = [
            interaction(self.dropout_pos(self.pos(self.dropout_in(x))), speakers, pad_mask)
            for interaction, x in zip(self.interaction, self._fuse(features), strict=True)
        ]
        hidden = torch.cat(outs, dim=-1) if self.cfg.fusion == "lcat" else sum(outs)
        return self.classifier(hidden)


# ---------------------------------------------------------------- baselines (the authors' utt_baseline, dialogrnn)


class UtteranceMLP(nn.Module):
    """Utterance-level early-fusion MLP, no context (official ``utt_baseline``): hidden 512-256 / 256-128."""

    def __init__(
        self,
        modalities: tuple[str, ...],
        input_dims: dict[str, int],
        hidden: tuple[int, int] | None = None,
        dropout: float = 0.5,
        num_classes: int = 7,
    ) -> None:
        super().__init__()
        self.modalities = _ordered(tuple(modalities))
        h1, h2 = hidden or ((256, 128) if len(self.modalities) == 1 else (512, 256))
        self.net = nn.Sequential(
            nn.Linear(sum(input_dims[m] for m in self.modalities), h1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(h2, num_classes),
        )

    def forward(self, features: dict[str, Tensor], speakers: Tensor, pad_mask: Tensor) -> Tensor:
        return self.net(torch.cat([features[m] for m in self.modalities], dim=-1))


def _reverse_real(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each dialogue's real steps of a time-major ``(n, B, ...)`` tensor, padding left at the end."""
    t = torch.arange(x.shape[0], device=x.device)[:, None]
    idx = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    return x.gather(0, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand_as(x))


class _DialogueRNNPass(nn.Module):
    """One direction of DialogueRNN (Majumder et al. 2019), following ``DialogueRNNCell`` of the authors' code."""

    def __init__(self, d_m: int, d_g: int, d_p: int, d_e: int, active_listener: bool, dropout: float) -> None:
        super().__init__()
        self.d_g, self.d_p, self.d_e = d_g, d_p, d_e
        self.g_cell = nn.GRUCell(d_m + d_p, d_g)
        self.p_cell = nn.GRUCell(d_m + d_g, d_p)
        self.e_cell = nn.GRUCell(d_p, d_e)
        self.l_cell = nn.GRUCell(d_m + d_p, d_p) if active_listener else None
        self.attend = nn.Linear(d_m, d_g, bias=False)  # "general" attention: score = g_k . W u_t
        self.dropout = nn.Dropout(dropout)

    def forward(self, u: Tensor, speakers: Tensor, valid: Tensor) -> Tensor:
        n, batch, _ = u.shape
        rows = torch.arange(batch, device=u.device)
        g = u.new_zeros(batch, self.d_g)
        q = u.new_zeros(batch, 2, self.d_p)
        e = u.new_zeros(batch, self.d_e)
        history, emotions = [], []
        for t in range(n):
            u_t, s_t, keep = u[t], speakers[t], valid[t][:, None]
            g_new = self.dropout(self.g_cell(torch.cat([u_t, q[rows, s_t]], dim=-1), g))
            if history:  # attention over the previous global states g_1..g_{t-1}
                hist = torch.stack(history, dim=1)
                alpha = torch.softmax(torch.einsum("bkd,bd->bk", hist, self.attend(u_t)), dim=-1)
                c_t = torch.einsum("bk,bkd->bd", alpha, hist)
            else:
                c_t = torch.zeros_like(g_new)
            speaker = self.dropout(self.p_cell(torch.cat([u_t, c_t], dim=-1), q[rows, s_t]))
            listener = q[rows, 1 - s_t]
            if self.l_cell is not None:
                listener = self.dropout(self.l_cell(torch.cat([u_t, speaker], dim=-1), listener))
            is_b = s_t.bool()[:, None, None]
            q_new = torch.where(is_b, torch.stack([listener, speaker], 1), torch.stack([speaker, listener], 1))
            e_new = self.dropout(self.e_cell(speaker, e))
            # padding steps leave every state untouched
            g = torch.where(keep, g_new, g)
            q = torch.where(keep[:, :, None], q_new, q)
            e = torch.where(keep, e_new, e)
            history.append(g)
            emotions.append(e)
        return torch.stack(emotions)


class DialogueRNN(nn.Module):
    """Bidirectional DialogueRNN context baseline (Majumder et al. AAAI 2019; ``BiModel`` of the authors' repo).

    Input projection to ``d_g``; per step a global GRU, "general" attention over past global states, a party
    GRU for the speaker (the listener is updated from ``[u_t, q_speaker]`` when ``active_listener``), an
    emotion GRU; forward and reversed passes (each dialogue reversed within its own length) concatenated,
    then Linear -> ReLU -> dropout -> Linear. The ``att2`` emotion attention of ``BiModel`` is not used.
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        input_dims: dict[str, int],
        d_g: int | None = None,
        d_p: int | None = None,
        d_e: int = 128,
        d_h: int = 128,
        active_listener: bool = True,
        dropout: float = 0.1,
        num_classes: int = 7,
    ) -> None:
        super().__init__()
        self.modalities = _ordered(tuple(modalities))
        default = 256 if len(self.modalities) == 1 else 512
        d_g, d_p = d_g or default, d_p or default
        self.project = nn.Linear(sum(input_dims[m] for m in self.modalities), d_g)
        self.forward_pass = _DialogueRNNPass(d_g, d_g, d_p, d_e, active_listener, dropout)
        self.backward_pass = _DialogueRNNPass(d_g, d_g, d_p, d_e, active_listener, dropout)
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * d_e, d_h), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_h, num_classes)
        )

    def forward(self, features: dict[str, Tensor], speakers: Tensor, pad_mask: Tensor) -> Tensor:
        u = self.project(torch.cat([features[m] for m in self.modalities], dim=-1))
        valid = ~pad_mask.t()
        lengths = valid.sum(0)
        speakers = speakers.long()
        fwd = self.forward_pass(u, speakers, valid)
        bwd = self.backward_pass(_reverse_real(u, lengths), _reverse_real(speakers, lengths), valid)
        return self.head(torch.cat([fwd, _reverse_real(bwd, lengths)], dim=-1))


# ---------------------------------------------------------------- builder

# demo sizes of the baselines; ``paper`` and ``small`` use the official sizes
_BASELINES: dict[str, type[nn.Module]] = {
    "utt-mlp": UtteranceMLP,
    "dialoguernn": DialogueRNN,
    "dialoguegcn": DialogueGCN,
    "mmgcn": MMGCN,
}
_BASELINE_DEMO = {
    "utt-mlp": {"hidden": (128, 64)},
    "dialoguernn": {"d_g": 64, "d_p": 64, "d_e": 32, "d_h": 32},
    "dialoguegcn": {"d_e": 32},
    "mmgcn": {"d_e": 64, "hidden": 64, "layers": 8},
}


def build_model(
    name: str,
    modalities: tuple[str, ...],
    input_dims: dict[str, int],
    preset: str = "demo",
    **overrides: object,
) -> nn.Module:
    """Build ``"mdi"`` or a baseline (``MODELS``) at a preset (``paper``, ``small``, ``demo``).

    ``overrides`` replace ``MDIConfig`` fields for MDI (e.g. ``branches``, ``combine``, ``fusion``) and
    constructor arguments for the baselines; unknown keys raise ``ValueError``.
    """
    if preset not in ("paper", "small", "demo"):
        raise ValueError(f"preset must be paper, small or demo, got {preset!r}")
    if name == "mdi":
        allowed = {f.name for f in fields(MDIConfig)}
    elif name in _BASELINES:
        cls = _BASELINES[name]
        allowed = set(inspect.signature(cls).parameters) - {"modalities", "input_dims"}
    else:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"unknown {name} options {sorted(unknown)}; known: {sorted(allowed)}")
    if name == "mdi":
        return MDI(replace(getattr(MDIConfig, preset)(modalities, input_dims), **overrides))
    defaults = _BASELINE_DEMO[name] if preset == "demo" else {}
    return cls(_ordered(tuple(modalities)), input_dims, **{**defaults, **overrides})
