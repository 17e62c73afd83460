import pytest
import torch

from tbvs.layers import (
    ASPP,
    AlignmentHead,
    LanguageGuidedFusion,
    MultiModalVideoTransformer,
    coord_map,
)
from tbvs.models import (
    ARCHS,
    VARIANTS,
    TBVSNet,
    TinyBackbone,
    build_arch,
    create_model,
    resnet34_os16,
    resnet101_dilated,
    variant_overrides,
)


def _inputs(arch, n=2, t=3, words=12, pad=0):
    s = arch.input_size
    mask = torch.ones(n, words)
    if pad:
        mask[:, words - pad :] = 0
    return torch.randn(n, t, 3, s, s), torch.randn(n, t, 3, s, s), torch.randn(n, words, arch.text_dim), mask


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ blocks
def test_coord_map_matches_the_official_formula():
    h, w = 2, 3
    grid = coord_map(h, w)
    assert grid.shape == (8, h, w)
    for i in range(h):
        for j in range(w):
            x0, x1 = j / w * 2 - 1, (j + 1) / w * 2 - 1
            y0, y1 = i / h * 2 - 1, (i + 1) / h * 2 - 1
            expected = torch.tensor([x0, y0, x1, y1, (x0 + x1) / 2, (y0 + y1) / 2, 1 / w, 1 / h])
            torch.testing.assert_close(grid[:, i, j], expected)


def test_aspp_shape_and_branches():
    aspp = ASPP(16, 8, rates=(1, 2, 3), dropout=0.5).eval()
    assert len(aspp.convs) == 5 and aspp.project[0].in_channels == 40
    assert [aspp.convs[i][0].dilation for i in (1, 2, 3)] == [(1, 1), (2, 2), (3, 3)]
    assert aspp(torch.randn(2, 16, 6, 6)).shape == (2, 8, 6, 6)


def test_tiny_backbone_strides_and_dilated_last_stage():
    net = TinyBackbone((8, 16, 32, 64), (4, 8, 16, 16))
    feats = net(torch.randn(2, 3, 96, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 24, 24), (16, 12, 12), (32, 6, 6), (64, 6, 6)]
    assert net.stages[3][0].dilation == (2, 2)
    with pytest.raises(ValueError):
        TinyBackbone((8, 16, 32, 64), (4, 6, 16, 16))


def test_resnet34_os16_layout():
    net = resnet34_os16().eval()
    assert net.layer4[0].conv1.dilation == (2, 2) and net.layer4[1].conv1.dilation == (1, 1)
    assert net.layer4[0].conv1.stride == (1, 1)
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 4, 4)]
    assert _n_params(net) == 21_284_672  # torchvision resnet34 without fc


def test_resnets_load_torchvision_state_dicts_by_name():
    models = pytest.importorskip("torchvision.models")
    tv = models.resnet101(replace_stride_with_dilation=[False, False, True]).eval()
    ours = resnet101_dilated(tv.state_dict()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = ours(x)
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for layer, f in zip((tv.layer1, tv.layer2, tv.layer3, tv.layer4), feats, strict=True):
            y = layer(y)
            torch.testing.assert_close(f, y)
    assert [f.shape[1] for f in feats] == [256, 512, 1024, 2048] and feats[3].shape[-1] == 4
    resnet34_os16(models.resnet34().state_dict())
    with pytest.raises(ValueError):
        resnet34_os16(tv.state_dict())


def _transformer_pair():
    a = MultiModalVideoTransformer(16, depth=2, heads=2, dim_head=8, mlp_dim=32, dropout=0.0, faithful_mask=True)
    b = MultiModalVideoTransformer(16, depth=2, heads=2, dim_head=8, mlp_dim=32, dropout=0.0, faithful_mask=False)
    b.load_state_dict(a.state_dict())
    return a.eval(), b.eval()


def test_mask_fill_quirk_differs_from_inf_only_with_padding():
    faithful, masked = _transformer_pair()
    words, rgb, flow = torch.randn(6, 5, 16), torch.randn(6, 9, 16), torch.randn(6, 9, 16)
    full = torch.ones(6, 5)
    torch.testing.assert_close(faithful(words, rgb, flow, full, 3), masked(words, rgb, flow, full, 3))
    padded = full.clone()
    padded[:, 3:] = 0
    out_f, out_m = faithful(words, rgb, flow, padded, 3), masked(words, rgb, flow, padded, 3)
    assert out_f.shape == (6, 9, 16)
    assert not torch.allclose(out_f, out_m, atol=1e-4)
    # with -inf the padded words cannot reach the RGB tokens; with the 1e-9 fill they can
    other = words.clone()
    other[:, 3:] = torch.randn(6, 2, 16)
    torch.testing.assert_close(masked(other, rgb, flow, padded, 3), out_m)
    assert not torch.allclose(faithful(other, rgb, flow, padded, 3), out_f, atol=1e-4)


def test_transformer_temporal_mixing_and_no_flow_single_frame():
    net = MultiModalVideoTransformer(16, depth=1, heads=2, dim_head=8, mlp_dim=32, dropout=0.0).eval()
    words, rgb, flow, mask = torch.randn(6, 4, 16), torch.randn(6, 9, 16), torch.randn(6, 9, 16), torch.ones(6, 4)
    out = net(words, rgb, flow, mask, 3)
    changed = rgb.clone()
    changed[0] = torch.randn(9, 16)  # frame 0 of clip 0
    out2 = net(words, changed, flow, mask, 3)
    assert not torch.allclose(out[2], out2[2])  # reaches frame 2 of the same clip
    torch.testing.assert_close(out[3:], out2[3:])  # but not the other clip
    assert net(words[:2], rgb[:2], None, mask[:2], 1).shape == (2, 9, 16)
    spatial = MultiModalVideoTransformer(16, depth=1, heads=2, dim_head=8, mlp_dim=32, temporal=False).eval()
    assert spatial.layers[0].temporal_attn is None
    o1, o2 = spatial(words, rgb, flow, mask, 3), spatial(words, changed, flow, mask, 3)
    torch.testing.assert_close(o1[1:], o2[1:])


def test_lgff_flow_attention_source_switch():
    a = LanguageGuidedFusion(12, 6, 16, prev_in=16, flow_attn_source="rgb").eval()
    b = LanguageGuidedFusion(12, 6, 16, prev_in=16, flow_attn_source="flow").eval()
    b.load_state_dict(a.state_dict())
    args = torch.randn(2, 12, 8, 8), torch.randn(2, 6, 8, 8), torch.randn(2, 16), torch.randn(2, 16, 4, 4)
    va, fa, oa = a(*args)
    vb, fb, ob = b(*args)
    assert oa.shape == (2, 16, 8, 8)
    torch.testing.assert_close(va, vb)
    torch.testing.assert_close(fa, fb)  # the sources are equal; the gating differs
    assert not torch.allclose(oa, ob)
    with pytest.raises(ValueError):
        LanguageGuidedFusion(12, 6, 16, flow_attn_source="both")


def test_alignment_head_cosines_and_subsampling():
    head = AlignmentHead(12, 10, 8)
    vis, flo, sent = torch.randn(2, 12, 4, 4), torch.randn(2, 12, 4, 4), torch.randn(2, 10)
    s_vl, s_fl, s_vf = head(vis, flo, sent)
    assert s_vl.shape == s_fl.shape == (2, 1, 4, 4) and s_vf.shape == (2, 16, 16)
    assert s_vf.abs().max() <= 1 + 1e-5 and s_vl.abs().max() <= 1 + 1e-5
    idx = torch.tensor([[0, 5, 7], [15, 1, 2]])
    _, _, sub = head(vis, flo, sent, idx)
    expected = torch.stack([s_vf[b][idx[b]][:, idx[b]] for b in range(2)])
    torch.testing.assert_close(sub, expected)
    assert head(vis, None, sent)[1:] == (None, None)


# ------------------------------------------------------------------------------------------------ TBVSNet
def test_variants_and_arch_table():
    assert variant_overrides("BMTLA") == VARIANTS["B+M+T+L+A"]
    assert build_arch("small", "B").clip_len == 1 and build_arch("small", "B+T").clip_len == 3
    assert build_arch("paper", "B+M+T+L+A") == ARCHS["paper"]
    assert build_arch("demo", "B+M+T+L+A", flow_attn_source="flow").flow_attn_source == "flow"
    with pytest.raises(ValueError):
        variant_overrides("B+X")
    no_motion = build_arch("demo", "B+T+L+A")  # the full model minus its motion branch, nothing else
    assert no_motion == build_arch("demo", "B+M+T+L+A", use_flow=False)


@pytest.mark.parametrize("preset", ["demo", "small"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_shapes_every_variant(preset, variant):
    model = create_model(preset, variant).eval()
    arch = model.arch
    images, flows, tokens, mask = _inputs(arch, pad=3)
    with torch.no_grad():
        out = model(images, flows if arch.use_flow else None, tokens, mask)
    s, g = arch.input_size, arch.input_size // 4
    assert out.logits.shape == (2, 1, s, s) and torch.isfinite(out.logits).all()
    if arch.use_alignment and arch.use_flow:
        assert out.s_vl.shape == out.s_fl.shape == (2, 1, g, g)
        assert out.s_vf.shape == (2, g * g, g * g) and out.vf_index is None
    elif arch.use_alignment:  # without motion only the vision-sentence map exists
        assert out.s_vl.shape == (2, 1, g, g) and out.s_fl is None and out.s_vf is None
    else:
        assert out.s_vl is None and out.s_fl is None and out.s_vf is None


def test_parameter_counts():
    assert {k: _n_params(TBVSNet(ARCHS[k])) for k in ("demo", "small")} == {"demo": 550_107, "small": 2_205_455}


def test_single_frame_variants_read_only_the_last_frame():
    images, flows, tokens, mask = _inputs(ARCHS["demo"])
    later = images.clone()
    later[:, 0] = torch.randn_like(later[:, 0])
    with torch.no_grad():
        b = create_model("demo", "B").eval()
        torch.testing.assert_close(b(images, None, tokens, mask).logits, b(later, None, tokens, mask).logits)
        full = create_model("demo", "B+M+T+L+A").eval()
        seen = []
        full.up_16_16.register_forward_hook(lambda mod, args, out: seen.append(args[3]))
        full(images, flows, tokens, mask)
        full(later, flows, tokens, mask)
        # the stride-16 input of the decoder (the annotated frame's transformer output) sees frame 0
        assert (seen[0] - seen[1]).abs().max() > 1e-4
        assert full(images[:, -1:], flows[:, -1:], tokens, mask).logits.shape == (2, 1, 96, 96)  # T = 1


def test_text_changes_the_prediction_in_every_variant():
    for variant in VARIANTS:
        model = create_model("demo", variant).eval()
        images, flows, tokens, mask = _inputs(model.arch)
        flows = flows if model.arch.use_flow else None
        with torch.no_grad():
            a = model(images, flows, tokens, mask, with_alignment=False).logits
            b = model(images, flows, torch.randn_like(tokens), mask, with_alignment=False).logits
        assert not torch.allclose(a, b), variant


def test_vf_pixel_subsampling_and_eval_determinism():
    arch = build_arch("demo", vf_pixels=50)
    model = TBVSNet(arch).eval()
    full = TBVSNet(arch.replace(vf_pixels=None)).eval()
    full.load_state_dict(model.state_dict())
    images, flows, tokens, mask = _inputs(arch)
    with torch.no_grad():
        out, again = model(images, flows, tokens, mask), model(images, flows, tokens, mask)
        ref = full(images, flows, tokens, mask)
    for a, b in zip(out, again, strict=True):
        torch.testing.assert_close(a, b)
    assert out.s_vf.shape == (2, 50, 50) and out.vf_index.shape == (2, 50)
    idx = out.vf_index
    torch.testing.assert_close(out.s_vf, torch.stack([ref.s_vf[b][idx[b]][:, idx[b]] for b in range(2)]))
    model.train()
    train_idx = model(images, flows, tokens, mask).vf_index
    assert train_idx.shape == (2, 50) and all(len(set(row.tolist())) == 50 for row in train_idx)


def test_flow_required_when_the_variant_uses_motion():
    model = create_model("demo").eval()
    images, _, tokens, mask = _inputs(model.arch)
    with pytest.raises(ValueError, match="flows"):
        model(images, None, tokens, mask)


def test_gradients_reach_every_parameter_of_the_full_model():
    from tbvs.losses import TBVSLoss

    model = create_model("demo").train()
    images, flows, tokens, mask = _inputs(model.arch, pad=2)
    gt = (torch.rand(2, 1, 96, 96) > 0.7).float()
    TBVSLoss()(model(images, flows, tokens, mask), gt)["total"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


def test_predict_is_a_probability_map():
    model = create_model("demo").eval()
    images, flows, tokens, mask = _inputs(model.arch)
    prob = model.predict(images, flows, tokens, mask)
    assert prob.shape == (2, 1, 96, 96) and prob.min() >= 0 and prob.max() <= 1


@pytest.mark.slow
def test_paper_shapes_at_320():
    model = TBVSNet(ARCHS["paper"]).eval()
    seen = {}

    def keep(name):
        return lambda mod, args, out: seen.__setitem__(name, (args, out))

    model.transformer.register_forward_hook(keep("transformer"))
    for name in ("up_16_16", "up_16_8", "up_8_4"):
        getattr(model, name).register_forward_hook(keep(name))
    images, flows, tokens, mask = _inputs(ARCHS["paper"], n=1, words=20, pad=5)
    with torch.no_grad():
        out = model(images, flows, tokens, mask)
    args, rgb_out = seen["transformer"]
    assert sum(a.shape[1] for a in args[:3]) == 820 and args[0].shape == (3, 20, 256)
    assert rgb_out.transpose(1, 2).reshape(3, 256, 20, 20).shape == (3, 256, 20, 20) and rgb_out.shape == (3, 400, 256)
    for name, side in (("up_16_16", 20), ("up_16_8", 40), ("up_8_4", 80)):
        assert all(o.shape == (1, 256, side, side) for o in seen[name][1])
    assert out.logits.shape == (1, 1, 320, 320)
    assert out.s_vl.shape == out.s_fl.shape == (1, 1, 80, 80)
    assert out.s_vf.shape == (1, 6400, 6400)
    assert _n_params(model) == PAPER_PARAMS


PAPER_PARAMS = 103_393_799  # 42.5M ResNet-101 + 21.3M ResNet-34 + 39.6M heads, no text encoder
