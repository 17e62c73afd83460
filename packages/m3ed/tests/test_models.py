"""MDI, its masks and the baselines (spec 4, 5; checks C2, C3 and 8.3)."""

from __future__ import annotations

import pytest
import torch

from m3ed.models import (
    BRANCH_MASKS,
    MDI,
    DialogueRNN,
    MDIConfig,
    UtteranceMLP,
    build_model,
    global_mask,
    inter_speaker_mask,
    intra_speaker_mask,
    local_mask,
)

DIMS = {"audio": 12, "visual": 6, "text": 10}
AVL = ("audio", "visual", "text")
SUBSETS = [
    ("audio",),
    ("visual",),
    ("text",),
    ("audio", "visual"),
    ("audio", "text"),
    ("visual", "text"),
    AVL,
]


def _batch(lengths: list[int], n: int | None = None, seed: int = 0, dims: dict[str, int] = DIMS):
    """Random dialogues of the given lengths, padded to ``n`` with random (not zero) features."""
    g = torch.Generator().manual_seed(seed)
    n = n or max(lengths)
    feats = {m: torch.randn(n, len(lengths), d, generator=g) for m, d in dims.items()}
    speakers = torch.randint(0, 2, (n, len(lengths)), generator=g)
    pad_mask = torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]
    speakers = speakers.masked_fill(pad_mask.t(), 0)
    return feats, speakers, pad_mask


# ---------------------------------------------------------------- C2: masks by hand


def _m(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in rows])


# dialogue 0: A A B A B + 1 padding; dialogue 1: B A A + 3 padding. 1 = blocked.
EXPECTED = {
    "global": [
        _m(["000001"] * 5 + ["000000"]),
        _m(["000111"] * 3 + ["000000"] * 3),
    ],
    "local": [
        _m(["000111", "000011", "000001", "100001", "110001", "000000"]),
        _m(["000111"] * 3 + ["000000"] * 3),
    ],
    "intra": [
        _m(["001011", "001011", "110101", "001011", "110101", "000000"]),
        _m(["011111", "100111", "100111"] + ["000000"] * 3),
    ],
    "inter": [
        _m(["010101", "100101", "000011", "110001", "001001", "000000"]),
        _m(["000111", "001111", "010111"] + ["000000"] * 3),
    ],
}


def _c2_inputs():
    speakers = torch.tensor([[0, 0, 1, 0, 1, 0], [1, 0, 0, 0, 0, 0]]).t()
    pad_mask = torch.tensor([[0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    return speakers, pad_mask


@pytest.mark.parametrize("name", ["global", "local", "intra", "inter"])
def test_masks_match_hand_example(name):
    speakers, pad_mask = _c2_inputs()
    mask = BRANCH_MASKS[name](speakers, pad_mask)
    assert mask.dtype == torch.bool and mask.shape == (2, 6, 6)
    assert torch.equal(mask, torch.stack(EXPECTED[name]))


def test_mask_builders_named_and_windowed():
    speakers, pad_mask = _c2_inputs()
    assert {
        "global": global_mask,
        "local": local_mask,
        "intra": intra_speaker_mask,
        "inter": inter_speaker_mask,
    } == BRANCH_MASKS
    wide = local_mask(speakers, pad_mask, window=4)[0]
    assert not wide[0, 3] and wide[0, 4] and not wide[4, 1]


def test_masks_built_on_input_device():
    speakers, pad_mask = _c2_inputs()
    for build in BRANCH_MASKS.values():
        assert build(speakers.to("meta"), pad_mask.to("meta")).device.type == "meta"


# ---------------------------------------------------------------- C3: padding invariance

MODEL_CASES = [
    pytest.param(
        ("mdi", {"combine": c, "shared_encoder": s, "fusion": f}), id=f"mdi-{c}-{'shared' if s else 'sep'}-{f}"
    )
    for c in ("end", "per_block")
    for s in (True, False)
    for f in ("ecat", "lcat", "add", "gate")
] + [pytest.param(("utt-mlp", {}), id="utt-mlp"), pytest.param(("dialoguernn", {}), id="dialoguernn")]


@pytest.mark.parametrize("case", MODEL_CASES)
def test_padding_invariance(case):
    name, overrides = case
    torch.manual_seed(0)
    model = build_model(name, AVL, DIMS, "demo", **overrides).eval()
    alone = _batch([4], seed=1)
    feats, speakers, pad_mask = _batch([7, 4], seed=2)  # dialogue 1 gets 3 random-valued padding steps
    for m in AVL:
        feats[m][:4, 1] = alone[0][m][:, 0]
    speakers[:4, 1] = alone[1][:, 0]
    with torch.no_grad():
        ref = model(*alone)[:, 0]
        batched = model(feats, speakers, pad_mask)
        for m in AVL:
            feats[m][4:, 1] = 100 * torch.randn(3, DIMS[m])
        refilled = model(feats, speakers, pad_mask)
    assert torch.isfinite(batched).all()
    assert (batched[:4, 1] - ref).abs().max() < 1e-5
    assert (refilled[:4, 1] - ref).abs().max() < 1e-5
    assert (refilled[:, 0] - batched[:, 0]).abs().max() < 1e-5


# ---------------------------------------------------------------- MDI


@pytest.mark.parametrize("fusion", ["ecat", "lcat", "add", "gate"])
@pytest.mark.parametrize("modalities", SUBSETS, ids=lambda m: "".join(x[0] for x in m))
def test_mdi_forward_every_subset_and_fusion(modalities, fusion):
    dims = {m: DIMS[m] for m in modalities}
    model = build_model("mdi", modalities, dims, "demo", fusion=fusion)
    feats, speakers, pad_mask = _batch([5, 3], dims=dims)
    logits = model(feats, speakers, pad_mask)
    assert logits.shape == (5, 2, 7) and torch.isfinite(logits).all()
    assert model.cfg.branches == (("global",) if len(modalities) == 1 else ("global", "local", "intra", "inter"))
    d = 64
    expected_in = d * len(modalities) if fusion == "lcat" else d
    assert model.classifier.in_features == expected_in
    assert len(model.interaction) == (len(modalities) if fusion in ("lcat", "add") else 1)


def test_paper_configs():
    uni = MDIConfig.paper(("text",), {"text": 768})
    assert (uni.d_model, uni.heads, uni.ffn, uni.layers, uni.branches) == (384, 6, 1024, 4, ("global",))
    multi = MDIConfig.paper(("text", "audio"), {"audio": 1024, "text": 768})
    assert multi.modalities == ("audio", "text")
    assert (multi.d_model, multi.heads, multi.ffn, multi.layers) == (512, 8, 1536, 4)
    assert multi.branches == ("global", "local", "intra", "inter")
    assert (multi.combine, multi.fusion, multi.shared_encoder, multi.window) == ("end", "ecat", True, 3)
    small = MDIConfig.small(("visual",), {"visual": 342})
    assert (small.d_model, small.heads, small.ffn, small.layers, small.branches) == (256, 4, 768, 2, ("global",))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_avl_parameter_counts():
    dims = {"audio": 1024, "visual": 342, "text": 768}
    d, ffn, layers = 512, 1536, 4
    layer = 4 * d * d + 4 * d + 2 * d * ffn + ffn + d + 4 * d  # attention, FFN, two LayerNorms
    model = build_model("mdi", AVL, dims, "paper")
    assert _count(model.fusion) == 2134 * d + d == 1_093_120
    assert _count(model.interaction[0].encoders) == layers * layer + 2 * d == 10_511_360
    assert _count(model.classifier) == d * 7 + 7
    assert _count(model) == 11_609_095
    separate = build_model("mdi", AVL, dims, "paper", shared_encoder=False)
    assert _count(separate.interaction[0].encoders) == 4 * _count(model.interaction[0].encoders)
    first, second = (enc.layers[0].self_attn.in_proj_weight for enc in separate.interaction[0].encoders[:2])
    assert not torch.equal(first, second)  # independently initialised branches


def test_demo_parameter_count():
    model = build_model("mdi", AVL, {"audio": 1024, "visual": 342, "text": 768}, "demo")
    assert _count(model) == 204_295


def test_encoder_init():
    model = build_model("mdi", AVL, {"audio": 1024, "visual": 342, "text": 768}, "paper")
    layer = model.interaction[0].encoders[0].layers[0]
    assert abs(layer.linear1.weight.std().item() - 0.02) < 1e-3
    assert layer.linear1.bias.abs().max() == 0 and layer.self_attn.out_proj.bias.abs().max() == 0
    assert layer.self_attn.in_proj_weight.std().item() > 0.028  # PyTorch's xavier default (std 0.031) kept
    assert model.classifier.bias.abs().min() > 0 and model.fusion[0].bias.abs().min() > 0  # PyTorch defaults


def test_freeze_fusion_projection_and_gradients():
    model = build_model("mdi", AVL, DIMS, "demo", freeze_fusion_projection=True)
    feats, speakers, pad_mask = _batch([5, 3])
    model(feats, speakers, pad_mask).pow(2).sum().backward()
    assert all(not p.requires_grad and p.grad is None for p in model.fusion.parameters())
    assert model.classifier.weight.grad.abs().sum() > 0
    enc = model.interaction[0].encoders[0].layers[0]
    assert enc.linear1.weight.grad.abs().sum() > 0 and enc.self_attn.in_proj_weight.grad.abs().sum() > 0
    trained = build_model("mdi", AVL, DIMS, "demo")
    assert all(p.requires_grad for p in trained.fusion.parameters())


def test_per_block_differs_from_end_with_same_weights():
    torch.manual_seed(0)
    end = build_model("mdi", AVL, DIMS, "demo", combine="end").eval()
    per_block = build_model("mdi", AVL, DIMS, "demo", combine="per_block").eval()
    result = per_block.load_state_dict(end.state_dict(), strict=False)
    assert result.missing_keys == [] and all(".norm." in k for k in result.unexpected_keys)
    batch = _batch([6, 4])
    with torch.no_grad():
        assert (end(*batch) - per_block(*batch)).abs().max() > 1e-3


def test_branch_subset_changes_output():
    torch.manual_seed(0)
    full = build_model("mdi", AVL, DIMS, "demo").eval()
    intra = build_model("mdi", AVL, DIMS, "demo", branches=("intra",)).eval()
    intra.load_state_dict(full.state_dict())
    batch = _batch([6, 4])
    with torch.no_grad():
        assert (full(*batch) - intra(*batch)).abs().max() > 1e-3


def test_build_model_rejects_unknown():
    with pytest.raises(ValueError, match="unknown"):
        build_model("mdi", AVL, DIMS, "demo", layers_count=3)
    with pytest.raises(ValueError, match="unknown"):
        build_model("dialoguernn", AVL, DIMS, "demo", fusion="ecat")
    with pytest.raises(ValueError, match="model"):
        build_model("bilstm", AVL, DIMS)
    with pytest.raises(ValueError, match="preset"):
        build_model("mdi", AVL, DIMS, "huge")
    with pytest.raises(ValueError, match="fusion"):
        build_model("mdi", AVL, DIMS, fusion="late")


# ---------------------------------------------------------------- baselines


def test_utterance_mlp_sizes_and_no_context():
    multi, uni = UtteranceMLP(AVL, DIMS), UtteranceMLP(("text",), DIMS)
    assert [m.out_features for m in multi.net if isinstance(m, torch.nn.Linear)] == [512, 256, 7]
    assert [m.out_features for m in uni.net if isinstance(m, torch.nn.Linear)] == [256, 128, 7]
    demo = build_model("utt-mlp", AVL, DIMS, "demo").eval()
    assert [m.out_features for m in demo.net if isinstance(m, torch.nn.Linear)] == [128, 64, 7]
    feats, speakers, pad_mask = _batch([5])
    with torch.no_grad():
        before = demo(feats, speakers, pad_mask)
        feats["text"][0] += 1.0
        after = demo(feats, speakers, pad_mask)
    assert (before[0] - after[0]).abs().max() > 1e-4 and torch.equal(before[1:], after[1:])


def test_dialoguernn_sizes():
    model = DialogueRNN(AVL, DIMS)
    assert model.project.out_features == 512 and model.forward_pass.e_cell.hidden_size == 128
    assert DialogueRNN(("audio",), DIMS).project.out_features == 256
    demo = build_model("dialoguernn", AVL, DIMS, "demo")
    assert demo.project.out_features == 64 and demo.forward_pass.p_cell.hidden_size == 64
    assert demo.forward_pass.e_cell.hidden_size == 32 and demo.forward_pass.l_cell is not None


def test_dialoguernn_bidirectional_context():
    torch.manual_seed(0)
    model = build_model("dialoguernn", AVL, DIMS, "demo").eval()
    feats, speakers, pad_mask = _batch([8, 5])
    with torch.no_grad():
        base = model(feats, speakers, pad_mask)
        assert base.shape == (8, 2, 7)
        past = {m: x.clone() for m, x in feats.items()}
        past["text"][0, 1] += 3.0  # first utterance of dialogue 1
        changed = model(past, speakers, pad_mask)
        future = {m: x.clone() for m, x in feats.items()}
        future["audio"][4, 1] += 3.0  # last real utterance of dialogue 1
        changed_future = model(future, speakers, pad_mask)
    assert (changed[3, 1] - base[3, 1]).abs().max() > 1e-4  # a later step sees the past (forward pass)
    assert (changed_future[0, 1] - base[0, 1]).abs().max() > 1e-4  # an earlier step sees the future (backward)
    assert torch.equal(changed[:, 0], base[:, 0])  # dialogues stay independent


def test_mdi_is_an_mdi():
    assert isinstance(build_model("mdi", AVL, DIMS), MDI)
