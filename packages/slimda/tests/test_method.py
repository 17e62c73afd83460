"""The objectives against hand-computed values, gradient routing, sampling and UPEM."""

import math

import pytest
import torch
import torch.nn.functional as F

from shared.errors import UserError
from slimda.config import build_config
from slimda.engine import BatchStream, Trainer, seed_weight, step_losses
from slimda.losses import (
    ensemble_target,
    folded_entropy,
    lambda_schedule,
    lr_schedule,
    seed_loss,
    source_mass_log,
    symnets_classifier_loss,
    symnets_feature_loss,
    target_mass_log,
)
from slimda.models import Arch, ModelBank, knowledge
from slimda.sampling import ArchSampler
from slimda.upem import (
    Scored,
    bank_ensemble,
    candidate_architectures,
    kendall_tau,
    select_by_upem,
    spearman_rho,
    upem_score,
)


def test_schedules():
    assert lambda_schedule(0.0) == 0.0
    assert lambda_schedule(1.0) == pytest.approx(0.99991, abs=1e-5)
    assert lr_schedule(0.0, 0.01) == 0.01
    assert lr_schedule(1.0, 0.01) == pytest.approx(0.01 / 11**0.75)


def test_uniform_logits_give_log_2_domain_terms():
    k = 3
    z = torch.zeros(4, 2 * k)
    assert torch.allclose(-source_mass_log(z, k), torch.full((4,), math.log(2)))
    assert torch.allclose(-target_mass_log(z, k), torch.full((4,), math.log(2)))
    y = torch.tensor([0, 1, 2, 0])
    # L_C = CE_s + CE_t + log2 + log2 = 2·log3 + 2·log2
    assert symnets_classifier_loss(z, y, z).item() == pytest.approx(2 * math.log(3) + 2 * math.log(2))
    # L_G = ½·log6 + ½·log6 + λ(½log2 + ½log2 + log3): q is uniform over K
    assert folded_entropy(z, k).item() == pytest.approx(math.log(3))
    lam = 0.3
    expected = math.log(6) + lam * (math.log(2) + math.log(3))
    assert symnets_feature_loss(z, y, z, lam).item() == pytest.approx(expected)
    assert symnets_feature_loss(z, y, z, lam, entropy_min=False).item() == pytest.approx(
        math.log(6) + lam * math.log(2)
    )


def test_domain_terms_on_a_hand_made_example():
    z = torch.tensor([[2.0, 0.0, 1.0, -1.0]])  # K = 2
    p = z.softmax(1)[0]
    y = torch.tensor([0])
    hand = -math.log(p[0] / (p[0] + p[1])) - math.log(p[2] / (p[2] + p[3]))
    hand += -math.log(p[0] + p[1]) - math.log(p[2] + p[3])
    assert symnets_classifier_loss(z, y, z).item() == pytest.approx(float(hand), rel=1e-6)
    category = 0.5 * -math.log(p[0]) + 0.5 * -math.log(p[2])
    q = torch.stack([p[0] + p[2], p[1] + p[3]])
    domain = 0.5 * -math.log(p[2] + p[3]) + 0.5 * -math.log(p[0] + p[1])
    entropy = -(q * q.log()).sum()
    assert symnets_feature_loss(z, y, z, 1.0).item() == pytest.approx(float(category + domain + entropy), rel=1e-6)


def test_seed_loss_is_a_tempered_kl():
    torch.manual_seed(0)
    teacher = torch.softmax(torch.randn(5, 4), 1)
    logits = torch.randn(5, 4)
    expected = 4.0 * F.kl_div(F.log_softmax(logits / 2, 1), teacher, reduction="batchmean")
    assert seed_loss(teacher, logits, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)
    assert seed_loss(teacher, teacher.log(), 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert seed_loss(teacher, torch.randn(5, 4), 1.0).item() >= 0


def test_teacher_and_student_are_tempered_alike_at_t2():
    """L_seed at T = 2 against a hand computation: teacher π = (0.7, 0.2, 0.1), student logits (1, 0, -1)."""
    teacher = ensemble_target([torch.tensor([[0.7, 0.2, 0.1]])], temperature=2.0)
    roots = [math.sqrt(0.7), math.sqrt(0.2), math.sqrt(0.1)]  # π^{1/2}, normalised
    p = [r / sum(roots) for r in roots]
    exps = [math.exp(0.5), 1.0, math.exp(-0.5)]  # softmax((1, 0, -1) / 2)
    q = [e / sum(exps) for e in exps]
    hand = 4.0 * sum(pk * math.log(pk / qk) for pk, qk in zip(p, q, strict=True))
    assert hand == pytest.approx(0.0075505, rel=1e-4)
    torch.testing.assert_close(teacher, torch.tensor([p]))
    assert seed_loss(teacher, torch.tensor([[1.0, 0.0, -1.0]]), 2.0).item() == pytest.approx(hand, rel=1e-4)
    untempered = ensemble_target([torch.tensor([[0.7, 0.2, 0.1]])])
    assert seed_loss(untempered, torch.tensor([[1.0, 0.0, -1.0]]), 2.0).item() != pytest.approx(hand, rel=1e-2)


def test_seed_teacher_is_the_detached_mean():
    preds = [torch.softmax(torch.randn(3, 4, requires_grad=True), 1) for _ in range(3)]
    teacher = ensemble_target(preds)
    assert not teacher.requires_grad
    torch.testing.assert_close(teacher, (preds[0] + preds[1] + preds[2]).detach() / 3)


def test_seed_is_zero_when_every_arch_agrees_and_ca_matches():
    pi = torch.softmax(torch.randn(6, 5), 1)
    assert seed_loss(ensemble_target([pi, pi, pi]), pi.log()).item() == pytest.approx(0.0, abs=1e-6)


def _bank_and_batch(seed=0):
    torch.manual_seed(seed)
    bank = ModelBank("slimcnn", 4)
    x_s, x_t = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    y_s = torch.randint(4, (6,))
    return bank, x_s, y_s, x_t


def _grads(bank, loss):
    bank.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    parts = {
        "backbone": bank.backbone.parameters(),
        "fc": bank.heads.fc.parameters(),
        "fc_aux": bank.heads.fc_aux.parameters(),
    }
    return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in params) for name, params in parts.items()}


@pytest.mark.parametrize("ostc", [True, False])
def test_gradient_routing(ostc):
    """Backbone ← L_G + β·L_seed, Cs⊕Ct ← L_C, Ca ← β·L_seed (OSTC); without OSTC SEED reaches Ct instead."""
    bank, x_s, y_s, x_t = _bank_and_batch()
    config = build_config("demo", "mnist-digits", ostc=ostc)
    bank.set_arch(bank.parse_arch("0.5-0.75-0.25-1"))
    teacher = torch.softmax(torch.randn(6, 4), 1)
    losses = step_losses(bank, config, x_s, y_s, x_t, 0.7, teacher)
    assert _grads(bank, losses.classifier) == {"backbone": False, "fc": True, "fc_aux": False}
    assert _grads(bank, losses.feature) == {"backbone": True, "fc": False, "fc_aux": False}
    assert _grads(bank, losses.seed) == {"backbone": True, "fc": not ostc, "fc_aux": ostc}
    if not ostc:  # SEED through Ct: the Cs rows of fc get nothing
        bank.zero_grad(set_to_none=True)
        losses.seed.backward()
        assert bank.heads.fc.weight.grad[:4].abs().sum() == 0 and bank.heads.fc.weight.grad[4:].abs().sum() > 0


def test_total_gradient_is_the_sum_of_the_routed_parts():
    bank, x_s, y_s, x_t = _bank_and_batch(1)
    config = build_config("demo", "mnist-digits")
    teacher = torch.softmax(torch.randn(6, 4), 1)
    losses = step_losses(bank, config, x_s, y_s, x_t, 0.5, teacher)
    bank.zero_grad(set_to_none=True)
    losses.total.backward(retain_graph=True)
    total = {n: p.grad.clone() for n, p in bank.named_parameters() if p.grad is not None}
    summed = {}
    for part in (losses.classifier, losses.feature, config.seed_weight * losses.seed):
        bank.zero_grad(set_to_none=True)
        part.backward(retain_graph=True)
        for n, p in bank.named_parameters():
            if p.grad is not None:
                summed[n] = summed.get(n, 0) + p.grad
    assert total.keys() == summed.keys()
    for name in total:
        torch.testing.assert_close(total[name], summed[name])


@pytest.mark.parametrize("bn_forward", ["separate", "joint"])
def test_separate_forwards_give_each_domain_its_own_batch_statistics(bn_forward):
    """With ``separate`` (SymNets) each domain leaves the first BN normalised by its own statistics: the same mean
    (β) per channel in both. With ``joint`` the shifted target batch shares the source's statistics and keeps its
    shift."""
    bank, x_s, y_s, x_t = _bank_and_batch()
    x_t = x_t + 3.0  # a domain shift the joint batch statistics average away
    config = build_config("demo", "mnist-digits", bn_forward=bn_forward)
    first_bn = next(m for m in bank.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    outputs = []
    # cloned: the ReLU after it works in place
    hook = first_bn.register_forward_hook(lambda module, inputs, output: outputs.append(output.detach().clone()))
    bank.train()
    step_losses(bank, config, x_s, y_s, x_t, 0.5, torch.softmax(torch.randn(6, 4), 1))
    hook.remove()
    rows = torch.cat(outputs)
    source_mean, target_mean = rows[: len(x_s)].mean(dim=(0, 2, 3)), rows[len(x_s) :].mean(dim=(0, 2, 3))
    gap = (target_mean - source_mean).abs().max().item()  # both β per channel when each has its own statistics
    assert [len(o) for o in outputs] == ([6, 6] if bn_forward == "separate" else [12])
    assert (gap < 1e-4) == (bn_forward == "separate")


def test_the_separate_teacher_reads_the_target_batch_alone():
    bank, x_s, _, x_t = _bank_and_batch(2)
    config = build_config("demo", "mnist-digits", bn_forward="separate", seed_temperature=2.0, batch_size=4)
    trainer = Trainer(
        config,
        bank,
        torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
        torch.zeros(4).long(),
        torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
        torch.device("cpu"),
    )
    arch = bank.parse_arch("0.5-0.75-0.25-1")
    bank.train()
    teacher = trainer.teacher([arch], x_s, x_t)
    alone = knowledge(bank.set_arch(arch)(x_t), config.seed_source_head)
    torch.testing.assert_close(teacher, ensemble_target([alone], 2.0))


@pytest.mark.parametrize("bn_forward", ["separate", "joint"])
def test_teacher_accuracy_scores_the_steps_teacher_and_leaves_the_bank_unchanged(bn_forward):
    """The diagnostic of the first SEED step: p̄ of the step's architectures on full target batches of a fixed
    permutation, read as training reads them; the BN buffers it touches are restored."""
    torch.manual_seed(0)
    bank = ModelBank("slimcnn", 4)
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(4, (10,))
    config = build_config("demo", "mnist-digits", bn_forward=bn_forward, batch_size=4)
    trainer = Trainer(config, bank, images, labels, images, torch.device("cpu"))
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    accuracy = trainer.teacher_accuracy(5, labels)
    for key, value in bank.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    x_s, _, _ = trainer.batches(5)
    archs = trainer.sampler.sample(5)
    chunks = torch.randperm(10, generator=torch.Generator().manual_seed(0))[:8].split(4)  # the last 2 left out
    bank.train()
    hits = 0
    for chunk in chunks:
        teacher = trainer.teacher(archs, x_s, trainer.pipeline.test(images[chunk]))
        hits += int((teacher[-4:].argmax(dim=1) == labels[chunk]).sum())
    assert accuracy == 100.0 * hits / 8


def test_the_seed_ramp_starts_at_zero_and_the_detach_control_keeps_seed_out_of_the_backbone():
    ramped = build_config("demo", "mnist-digits", seed_ramp="lambda", seed_weight=2.0)
    assert seed_weight(ramped, lambda_schedule(0.0)) == 0.0  # the first adaptation step
    assert seed_weight(ramped, lambda_schedule(0.5)) == pytest.approx(2.0 * lambda_schedule(0.5))
    assert seed_weight(build_config("demo", "mnist-digits", seed_weight=2.0), 0.0) == 2.0
    bank, x_s, y_s, x_t = _bank_and_batch()
    teacher = torch.softmax(torch.randn(6, 4), 1)
    losses = step_losses(bank, ramped, x_s, y_s, x_t, 0.0, teacher)
    assert losses.seed.item() > 0 and losses.total.item() == pytest.approx((losses.classifier + losses.feature).item())
    detached = build_config("demo", "mnist-digits", seed_detach_features=True)
    losses = step_losses(bank, detached, x_s, y_s, x_t, 0.5, teacher)
    assert _grads(bank, losses.seed) == {"backbone": False, "fc": False, "fc_aux": True}


def test_source_only_trains_backbone_and_cs_only():
    bank, x_s, y_s, x_t = _bank_and_batch()
    config = build_config("demo", "mnist-digits", method="source-only")
    losses = step_losses(bank, config, x_s, y_s, x_t, 0.5, None)
    assert _grads(bank, losses.total) == {"backbone": True, "fc": True, "fc_aux": False}
    assert bank.heads.fc.weight.grad[4:].abs().sum() == 0  # Ct untouched
    assert config.head == "cs"


def test_a_few_steps_lower_the_source_loss():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (128, 3, 16, 16), dtype=torch.uint8)
    labels = (images.float().mean((1, 2, 3)) > 127.5).long()
    images[labels == 1, 0] = 255  # a learnable cue
    config = build_config("demo", "mnist-digits", method="source-only", iterations=40, batch_size=32, lr=0.05)
    bank = ModelBank("slimcnn", 2)
    trainer = Trainer(config, bank, images, labels, images, torch.device("cpu"))
    first = trainer.step(0)["loss_c"]
    for it in range(1, 40):
        last = trainer.step(it)["loss_c"]
    assert last < 0.5 * first


def test_sandwich_sampler():
    sampler = ArchSampler(4, (0.25, 0.5, 0.75, 1.0), 4, seed=3)
    for step in range(20):
        archs = sampler.sample(step)
        assert archs[0] == Arch.uniform(1.0, 4) and archs[1] == Arch.uniform(0.25, 4)
        assert len(set(archs)) == 4
    assert sampler.sample(7) == ArchSampler(4, (0.25, 0.5, 0.75, 1.0), 4, seed=3).sample(7)  # a function of the step
    assert sampler.sample(7) != sampler.sample(8)
    uniform = ArchSampler(5, (0.5, 1.0), 5, space="uniform")
    assert len(uniform.sample(0)) == 2 and all(a.is_uniform for a in uniform.sample(0))  # only 2 exist
    with pytest.raises(UserError, match="at least 2"):
        ArchSampler(4, (0.5, 1.0), 1)


def test_batch_stream_reshuffles_every_pass_and_is_stateless():
    stream = BatchStream(10, 3, seed=0, name="source")
    first_pass = torch.cat([stream.indices(s) for s in range(3)])
    assert len(set(first_pass.tolist())) == 9
    assert not torch.equal(first_pass, torch.cat([stream.indices(s) for s in range(3, 6)]))
    assert torch.equal(BatchStream(10, 3, 0, "source").indices(4), stream.indices(4))
    with pytest.raises(UserError, match="fewer than one batch"):
        BatchStream(2, 3, 0, "target")


def test_upem_ranks_the_member_closest_to_the_ensemble_first():
    torch.manual_seed(0)
    base = torch.randn(50, 5)
    members = [torch.softmax(base + s * torch.randn(50, 5), 1) for s in (0.1, 0.5, 1.0, 2.0, 4.0)]
    reference = bank_ensemble([torch.softmax(base, 1)])
    scores = [upem_score("ensemble_kl", m, reference) for m in members]
    assert scores == sorted(scores)
    agreement = [upem_score("ensemble_agreement", m, reference) for m in members]
    assert agreement[0] <= agreement[-1]
    shuffled = bank_ensemble(members[::-1])
    torch.testing.assert_close(shuffled, bank_ensemble(members))  # order of the M archs does not matter
    assert upem_score("entropy", torch.full((3, 4), 0.25)) == pytest.approx(math.log(4))


def test_rank_correlations():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert spearman_rho([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert spearman_rho([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)


def test_candidates_respect_the_budget_and_selection_picks_lowest_upem():
    sampler = ArchSampler(4, (0.25, 0.5, 0.75, 1.0), 2)

    def macs(arch):
        return int(1000 * sum(w * w for w in arch.widths))

    archs = candidate_architectures(sampler, macs, 1500, (1.0, 0.75, 0.5, 0.25), 30, seed=0)
    assert all(macs(a) <= 1500 for a in archs) and len(set(archs)) == len(archs)
    assert Arch.uniform(0.5, 4) in archs and Arch.uniform(0.75, 4) not in archs
    scored = [
        Scored(Arch.uniform(0.5, 4), 1000, 0.3, 80.0),
        Scored(Arch.uniform(0.25, 4), 250, 0.2, 70.0),
        Scored(Arch.uniform(1.0, 4), 4000, 0.1, 90.0),
    ]
    chosen, oracle = select_by_upem(scored, 1500)
    assert chosen.arch == Arch.uniform(0.25, 4) and oracle.arch == Arch.uniform(0.5, 4)
    with pytest.raises(UserError, match="no scored architecture"):
        select_by_upem(scored, 100)


def test_knowledge_heads():
    torch.manual_seed(0)
    bank = ModelBank("slimcnn", 3).eval()
    out = bank(torch.randn(2, 3, 16, 16))
    torch.testing.assert_close(knowledge(out, "ct"), out.ct.softmax(1))
    torch.testing.assert_close(knowledge(out, "folded"), out.folded)
    with pytest.raises(UserError, match="unknown knowledge head"):
        knowledge(out, "x")


def test_the_new_switches_refuse_impossible_values():
    for bad, message in (
        ({"bn_forward": "mixed"}, "--bn-forward"),
        ({"seed_ramp": "linear"}, "--seed-ramp"),
        ({"seed_temperature": 0.0}, "--seed-temperature"),
    ):
        with pytest.raises(UserError, match=message):
            build_config("demo", "mnist-digits", **bad)
