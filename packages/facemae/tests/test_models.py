"""The MAE, IResNet and margin head against the official releases, closed forms and hand values."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from facemae import models
from facemae.losses import margin_logits
from facemae.models import MAE_CONFIGS, MarginHead, MaskedAutoencoderViT, iresnet_mini, mae_vit_tiny_patch4
from shared.errors import UserError

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # made from the official releases (fixtures/README.md)

OFFICIAL = {
    "mae_vit_base_patch16": "mae_vit_base_patch16_dec512d8b",
    "mae_vit_large_patch16": "mae_vit_large_patch16_dec512d8b",
    "mae_vit_huge_patch14": "mae_vit_huge_patch14_dec512d8b",
    "iresnet18": "iresnet18",
    "iresnet34": "iresnet34",
    "iresnet50": "iresnet50",
    "iresnet100": "iresnet100",
}


def count(module):
    return sum(p.numel() for p in module.parameters())


def on_meta(name):
    """Shapes and counts without allocating weights."""
    with torch.device("meta"):
        return getattr(models, name)()


@pytest.fixture(scope="module")
def manifest():
    return json.loads((FIXTURES / "official_state_dict_manifest.json").read_text())["models"]


@pytest.fixture(scope="module")
def golden():
    return torch.load(FIXTURES / "mae_tiny_official_golden.pt", weights_only=True)


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_state_dict_equals_official_manifest(name, manifest):
    model = on_meta(name)
    official = manifest[OFFICIAL[name]]
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == official["state_dict"]
    assert count(model) == official["parameters"]


def golden_model(golden):
    config = dict(golden["config"])
    assert config.pop("norm_layer_eps") == 1e-6  # the LayerNorm eps our blocks use
    return MaskedAutoencoderViT(**config)


def test_official_golden_forward(golden):
    model = golden_model(golden)
    model.load_state_dict(golden["state_dict"], strict=True)
    loss, pred, mask = model(golden["input"], golden["mask_ratio"], noise=golden["noise"])
    assert torch.equal(mask, golden["mask"])
    torch.testing.assert_close(pred, golden["pred"], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, golden["loss"], atol=1e-5, rtol=0)


def test_sincos_positions_equal_the_official_ones(golden):
    """The golden's positions are the official sin-cos table plus N(0, 0.02): the mean |difference| from ours
    is 0.02 * sqrt(2/pi) = 0.016 (a row/column swap or a wrong frequency would give ~0.5)."""
    model = golden_model(golden)
    for key in ("pos_embed", "decoder_pos_embed"):
        gap = (model.state_dict()[key] - golden["state_dict"][key]).abs().mean().item()
        assert 0.012 < gap < 0.020, (key, gap)


def test_sincos_hand_values():
    table = models.sincos_pos_embed(8, 3)  # dim 8: per axis [sin, sin, cos, cos] of pos * (1, 1/100)
    assert torch.equal(table[0], torch.zeros(8))
    row, col = 2, 1
    expected = [math.sin(col), math.sin(col / 100), math.cos(col), math.cos(col / 100)]
    expected += [math.sin(row), math.sin(row / 100), math.cos(row), math.cos(row / 100)]
    torch.testing.assert_close(table[1 + row * 3 + col], torch.tensor(expected))


def vit_params(dim, depth, mlp_ratio=4):
    """Closed form of a stack of pre-norm ViT blocks: 2 LayerNorms, qkv, proj, fc1, fc2."""
    hidden = mlp_ratio * dim
    return depth * (4 * dim + 3 * dim * dim + 3 * dim + dim * dim + dim + 2 * dim * hidden + hidden + dim)


def mae_params(img_size, patch_size, embed_dim, depth, num_heads, decoder_embed_dim, decoder_depth, **_):
    tokens = (img_size // patch_size) ** 2 + 1
    pixels = 3 * patch_size**2
    encoder = pixels * embed_dim + embed_dim + embed_dim + tokens * embed_dim + vit_params(embed_dim, depth)
    encoder += 2 * embed_dim
    d = decoder_embed_dim
    decoder = embed_dim * d + d + d + tokens * d + vit_params(d, decoder_depth) + 2 * d + d * pixels + pixels
    return encoder, decoder


@pytest.mark.parametrize("name", list(MAE_CONFIGS))
def test_parameter_counts_equal_the_closed_form(name):
    model = on_meta(name)
    config = MAE_CONFIGS[name]
    encoder, decoder = mae_params(**config)
    in_encoder = ("patch_embed.", "cls_token", "pos_embed", "blocks.", "norm.")
    assert sum(p.numel() for k, p in model.named_parameters() if k.startswith(in_encoder)) == encoder
    assert count(model) == encoder + decoder
    assert model.num_patches == (config["img_size"] // config["patch_size"]) ** 2


def test_vit_b16_encoder_is_about_86m():
    encoder, _ = mae_params(**MAE_CONFIGS["mae_vit_base_patch16"])
    assert 85_500_000 < encoder < 86_500_000


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return mae_vit_tiny_patch4().eval()


def test_patchify_round_trip_and_layout(tiny):
    images = torch.randn(2, 3, 32, 32)
    patches = tiny.patchify(images)
    assert patches.shape == (2, 64, 48)
    assert torch.equal(tiny.unpatchify(patches), images)
    # patch 9 is row 1, column 1; its features run (row, column, channel) within the patch
    assert torch.equal(patches[1, 9].view(4, 4, 3), images[1, :, 4:8, 4:8].permute(1, 2, 0))


@pytest.mark.parametrize(("ratio", "kept"), [(0.0, 64), (0.25, 48), (0.5, 32), (0.75, 16), (0.9, 6)])
def test_masking_keeps_floor_of_the_visible_share(tiny, ratio, kept):
    tokens = torch.randn(3, 64, 5)
    visible, mask, ids_restore = tiny.random_masking(tokens, ratio, generator=torch.Generator().manual_seed(1))
    assert visible.shape == (3, kept, 5)
    assert torch.equal(mask.sum(1), torch.full((3,), 64.0 - kept))
    for b in range(3):  # the visible tokens are exactly the unmasked ones
        assert sorted(visible[b, :, 0].tolist()) == sorted(tokens[b, mask[b] == 0, 0].tolist())
    shuffled = torch.gather(tokens, 1, torch.argsort(ids_restore, dim=1)[..., None].expand(-1, -1, 5))
    assert torch.equal(shuffled[:, :kept], visible)
    assert torch.equal(torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, 5)), tokens)


def test_masks_differ_per_sample_and_follow_the_generator(tiny):
    images = torch.randn(4, 3, 32, 32)
    _, _, mask_a = tiny(images, generator=torch.Generator().manual_seed(5))
    _, _, mask_b = tiny(images, generator=torch.Generator().manual_seed(5))
    _, _, mask_c = tiny(images, generator=torch.Generator().manual_seed(6))
    assert torch.equal(mask_a, mask_b) and not torch.equal(mask_a, mask_c)
    assert len({tuple(m.tolist()) for m in mask_a}) == 4


def test_loss_on_all_at_ratio_zero_is_the_full_image_mse():
    torch.manual_seed(0)
    model = mae_vit_tiny_patch4(loss_on="all")
    images = torch.randn(2, 3, 32, 32)
    loss, pred, mask = model(images, mask_ratio=0.0)
    assert not mask.any()
    torch.testing.assert_close(loss, F.mse_loss(model.unpatchify(pred), images))


def test_masked_loss_averages_masked_patches_only(tiny):
    images = torch.randn(2, 3, 32, 32)
    loss, pred, mask = tiny(images, generator=torch.Generator().manual_seed(0))
    per_patch = (pred - tiny.patchify(images)).pow(2).mean(-1)
    torch.testing.assert_close(loss, per_patch[mask.bool()].mean())
    assert not torch.isclose(loss, per_patch.mean())


def test_compose_paste_keeps_visible_patches_and_pred_takes_the_decoder(tiny):
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    _, pred, mask = tiny(images, generator=torch.Generator().manual_seed(3))
    pasted = tiny.patchify(tiny.compose(images, pred, mask, "paste"))
    visible = mask == 0
    assert torch.equal(pasted[visible], tiny.patchify(images)[visible])
    assert torch.equal(pasted[~visible], pred[~visible])
    assert torch.equal(tiny.compose(images, pred, mask, "pred"), tiny.unpatchify(pred))
    again = tiny.reconstruct(images, 0.75, torch.Generator().manual_seed(3))
    torch.testing.assert_close(again, tiny.compose(images, pred, mask, "paste"))


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_mask_ratio_outside_the_unit_interval_is_refused(tiny, ratio):
    with pytest.raises(UserError, match="mask ratio"):
        tiny(torch.zeros(1, 3, 32, 32), mask_ratio=ratio)


def test_bad_options_are_refused(tiny):
    with pytest.raises(UserError, match="masks no patch"):
        tiny(torch.zeros(1, 3, 32, 32), mask_ratio=0.0)
    with pytest.raises(UserError, match="loss_on"):
        mae_vit_tiny_patch4(loss_on="visible")
    with pytest.raises(UserError, match="compose"):
        tiny.reconstruct(torch.zeros(1, 3, 32, 32), compose="blend")
    with pytest.raises(UserError, match="norm_pix_loss"):
        mae_vit_tiny_patch4(norm_pix_loss=True).reconstruct(torch.zeros(1, 3, 32, 32))


def iresnet_params(layers, widths, input_size, features=512):
    """Closed form of arcface_torch's IResNet: stem, units (with a 1x1 shortcut when the shape changes), head."""
    total = 27 * widths[0] + 3 * widths[0]
    inplanes = widths[0]
    for units, planes in zip(layers, widths, strict=True):
        for unit in range(units):
            cin = inplanes if unit == 0 else planes
            total += 2 * cin + 9 * cin * planes + 3 * planes + 9 * planes * planes + 2 * planes
            if unit == 0:
                total += cin * planes + 2 * planes
        inplanes = planes
    return total + 2 * inplanes + inplanes * (input_size // 16) ** 2 * features + features + 2 * features


@pytest.mark.parametrize("name", list(models.IRESNET_CONFIGS))
def test_iresnet_counts_equal_the_closed_form(name):
    assert count(on_meta(name)) == iresnet_params(**models.IRESNET_CONFIGS[name])


def test_iresnet_mini_embeds_32px_faces_and_freezes_the_embedding_scale():
    torch.manual_seed(0)
    net = iresnet_mini()
    out = net(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 512)
    out.sum().backward()
    assert net.features.weight.grad is None and not net.features.weight.requires_grad
    assert net.fc.weight.grad.abs().sum() > 0


THETA_ZERO = torch.tensor([[1.0, 0.0]])


def test_arcface_target_logit_hand_values():
    labels = torch.tensor([0])
    assert margin_logits(THETA_ZERO, labels, 64, 1.0, 0.5, 0.0)[0, 0].item() == pytest.approx(56.17, abs=0.005)
    at_zero = torch.tensor([[math.cos(math.pi / 2 - 0.5), 0.3]])
    logits = margin_logits(at_zero, labels, 64, 1.0, 0.5, 0.0)
    assert logits[0, 0].item() == pytest.approx(0.0, abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(64 * 0.3)  # other classes keep s*cos(theta)


def test_cosface_target_logit_hand_value():
    logit = margin_logits(THETA_ZERO, torch.tensor([0]), 64, *models.MARGINS["cosface"])[0, 0]
    assert logit.item() == pytest.approx(38.4, abs=1e-4)


def test_arcface_is_not_the_easy_margin_past_pi_minus_m():
    theta = math.pi - 0.2
    logit = margin_logits(torch.tensor([[math.cos(theta)]]), torch.tensor([0]), 64, 1.0, 0.5, 0.0)[0, 0]
    assert logit.item() == pytest.approx(64 * (math.cos(theta) - 0.5 * math.sin(0.5)), abs=1e-4)
    thetas = torch.linspace(0, math.pi, 181)
    curve = margin_logits(thetas.cos()[:, None], torch.zeros(181, dtype=torch.long), 64, 1.0, 0.5, 0.0)[:, 0]
    assert (curve[1:] < curve[:-1]).all()  # falling with theta everywhere


def test_combined_margin_with_m1():
    theta = 0.4
    logit = margin_logits(torch.tensor([[math.cos(theta)]]), torch.tensor([0]), 10, 1.5, 0.2, 0.1)[0, 0]
    assert logit.item() == pytest.approx(10 * (math.cos(1.5 * theta + 0.2) - 0.1), abs=1e-4)


def test_margin_head_loss_by_hand_and_finite_gradient_at_theta_zero():
    head = MarginHead(2, 2, "arcface", s=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2) * 3)
    embeddings = torch.tensor([[2.0, 0.0]], requires_grad=True)
    torch.testing.assert_close(head(embeddings), torch.tensor([[1.0, 0.0]]))
    loss = head.loss(embeddings, torch.tensor([1]))  # target at theta = pi/2: cos(pi/2 + 0.5) = -sin(0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(1 + math.sin(0.5))), abs=1e-5)
    head.loss(embeddings, torch.tensor([0])).backward()  # target at theta = 0
    assert torch.isfinite(embeddings.grad).all() and torch.isfinite(head.weight.grad).all()
    with pytest.raises(UserError, match="margin"):
        MarginHead(2, 2, "sphereface")
