"""Reconstruction and IRM losses by hand; IRM's invariances and gradient routing."""

import math

import pytest
import torch

from facemae.losses import irm_loss, reconstruction_loss
from facemae.models import iresnet_mini, mae_vit_tiny_patch4
from shared.errors import UserError

KINDS = ["kl", "mse", "mean"]


def test_reconstruction_loss_on_a_two_patch_toy():
    pred = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    target = torch.tensor([[[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]])
    assert reconstruction_loss(pred, target, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(14 / 3)
    assert reconstruction_loss(pred, target, torch.tensor([[0.0, 1.0]])).item() == pytest.approx(9.0)
    both = reconstruction_loss(pred, target, torch.tensor([[1.0, 0.0]]), "all")
    assert both.item() == pytest.approx((14 / 3 + 9) / 2)


def embeddings(batch=6, dim=8, seed=0):
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_irm_is_zero_when_the_reconstruction_is_the_original(kind):
    real = embeddings()
    assert irm_loss(real, real.clone(), kind).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_irm_is_invariant_to_a_consistent_batch_permutation(kind):
    real, recon = embeddings(seed=1), embeddings(seed=2)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    loss = irm_loss(real, recon, kind)
    assert loss.item() > 1e-3
    torch.testing.assert_close(irm_loss(real[order], recon[order], kind), loss)


@pytest.mark.parametrize("kind", KINDS)
def test_irm_ignores_embedding_norms(kind):
    real, recon = embeddings(seed=1), embeddings(seed=2)
    scale = torch.rand(6, 1, generator=torch.Generator().manual_seed(4)) + 0.5
    torch.testing.assert_close(irm_loss(real * scale, recon * 3, kind), irm_loss(real, recon, kind))


def test_irm_hand_values():
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    recon = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert irm_loss(real, recon, "mse").item() == pytest.approx(1.0)  # both relations go from 0 to 1
    assert irm_loss(real, recon, "mean").item() == pytest.approx(0.5)  # |(0.5, 0.5) - (1, 0)|^2


def test_irm_kl_equals_the_row_wise_definition():
    real, recon, tau = embeddings(4, 3, 5), embeddings(4, 3, 6), 0.1
    e = real / real.norm(dim=1, keepdim=True)
    f = recon / recon.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(4):
        others = [j for j in range(4) if j != i]
        p = torch.softmax(torch.stack([e[i] @ e[j] / tau for j in others]), 0)
        q = torch.softmax(torch.stack([f[i] @ f[j] / tau for j in others]), 0)
        total += sum(p[k] * math.log(p[k] / q[k]) for k in range(3))
    assert irm_loss(real, recon, "kl", tau).item() == pytest.approx(total.item() / 4, rel=1e-4)


def test_irm_kl_is_positive_when_one_relation_row_changes():
    real = embeddings()
    recon = real.clone()
    recon[2] = embeddings(1, 8, seed=9)[0]
    assert irm_loss(real, recon, "kl").item() > 1e-3


def test_irm_refuses_bad_arguments():
    with pytest.raises(UserError, match="IRM kind"):
        irm_loss(embeddings(), embeddings(), "cosine")
    with pytest.raises(UserError, match="batch size 2"):
        irm_loss(embeddings(2), embeddings(2), "kl")
    with pytest.raises(UserError, match="temperature"):
        irm_loss(embeddings(), embeddings(), "kl", tau=0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_irm_gradient_reaches_the_mae_and_not_phi_or_the_real_branch(kind):
    torch.manual_seed(0)
    mae = mae_vit_tiny_patch4()
    phi = iresnet_mini().eval().requires_grad_(False)
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    real = images.clone().requires_grad_(True)
    _, pred, mask = mae(images, generator=torch.Generator().manual_seed(0))
    irm_loss(phi(real), phi(mae.compose(images, pred, mask)), kind).backward()
    for name in ("decoder_pred.weight", "decoder_blocks.0.mlp.fc1.weight", "blocks.0.attn.qkv.weight"):
        assert mae.get_parameter(name).grad.abs().sum() > 0, name
    assert all(p.grad is None for p in phi.parameters())
    assert real.grad is None
