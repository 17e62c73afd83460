"""Tests of the REINFORCE update of the topic prompter (promptdfd.reinforce)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import assert_close

from promptdfd.models import GRUPrompter
from promptdfd.reinforce import Reinforce

ARMS = 5


def _bandit(seed: int = 0, *, n_classes: int = 1, dim: int = 16) -> GRUPrompter:
    torch.manual_seed(seed)
    return GRUPrompter(n_classes=n_classes, candidate_ids=range(ARMS), length=1, dim=dim)


def _arm_probs(policy: GRUPrompter, cls: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return policy.step_logits(torch.tensor([cls]), torch.zeros(1, 1, dtype=torch.long))[0, 0].softmax(-1)


def _entropy(policy: GRUPrompter) -> float:
    p = _arm_probs(policy)
    return float(-(p * p.log()).sum())


def test_reinforce_solves_a_five_armed_bandit():
    policy = _bandit(0)
    agent = Reinforce(policy, 1, lr=0.05, entropy_coef=0.0)
    rng = torch.Generator().manual_seed(0)
    classes = torch.zeros(32, dtype=torch.long)
    assert float(_arm_probs(policy)[3]) < 0.5
    for _ in range(200):
        batch = policy.sample(classes, generator=rng)
        rewards = (batch.actions[:, 0] == 3).float()
        agent.step(classes, batch.actions, rewards)
    assert float(_arm_probs(policy)[3]) > 0.9


def test_step_reports_loss_reward_entropy_kl():
    policy = _bandit(1)
    agent = Reinforce(policy, 1, lr=0.01)
    classes = torch.zeros(4, dtype=torch.long)
    actions = torch.tensor([[0], [1], [2], [3]])
    stats = agent.step(classes, actions, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert set(stats) == {"loss", "reward", "entropy", "kl"}
    assert stats["reward"] == pytest.approx(1.5)
    assert 0 < stats["entropy"] <= torch.log(torch.tensor(5.0)).item() + 1e-6
    assert stats["kl"] == 0.0


def test_unknown_baseline_is_refused():
    with pytest.raises(ValueError, match="baseline"):
        Reinforce(_bandit(), 1, baseline="median")


def test_per_class_baseline_keeps_one_baseline_per_class():
    agent = Reinforce(_bandit(n_classes=3), 3, baseline="per-class", momentum=0.5, standardize=False)
    # batch 1: class 0 rewards (1, 3), class 1 reward 5; each slot's first batch sets the baseline to its mean
    adv = agent.advantages(torch.tensor([0, 0, 1]), torch.tensor([1.0, 3.0, 5.0]))
    assert_close(adv, torch.tensor([-1.0, 1.0, 0.0]))
    assert_close(agent.baseline, torch.tensor([2.0, 5.0, 0.0]))
    assert agent.seen.tolist() == [True, True, False]
    # batch 2: class 0 reward 4 (EMA: 0.5 * 2 + 0.5 * 4 = 3), class 2 reward 7 (first: 7), class 1 untouched
    adv = agent.advantages(torch.tensor([0, 2]), torch.tensor([4.0, 7.0]))
    assert_close(adv, torch.tensor([4.0 - 2.0, 0.0]))  # the baseline before this batch
    assert_close(agent.baseline, torch.tensor([3.0, 5.0, 7.0]))
    assert agent.seen.tolist() == [True, True, True]


def test_ema_baseline_is_one_slot_moving_with_momentum():
    agent = Reinforce(_bandit(n_classes=3), 3, baseline="ema", momentum=0.9, standardize=False)
    agent.advantages(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0, 3.0]))
    assert_close(agent.baseline, torch.tensor([2.0]))
    adv = agent.advantages(torch.tensor([0, 2]), torch.tensor([10.0, 12.0]))
    assert_close(adv, torch.tensor([8.0, 10.0]))
    assert_close(agent.baseline, torch.tensor([0.9 * 2.0 + 0.1 * 11.0]))


@pytest.mark.parametrize("standardize", [False, True])
def test_advantage_has_zero_mean_when_the_baseline_is_the_batch_mean(standardize):
    agent = Reinforce(_bandit(), 1, standardize=standardize)
    rewards = torch.tensor([0.3, -1.2, 2.5, 0.0, 4.1, 1.7])
    adv = agent.advantages(torch.zeros(6, dtype=torch.long), rewards)  # first batch: baseline = its mean
    assert float(adv.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(adv.abs().sum()) > 1.0
    if standardize:
        assert float(adv.std()) == pytest.approx(1.0, rel=1e-5)


def _peaked(seed: int = 2) -> GRUPrompter:
    policy = _bandit(seed)
    with torch.no_grad():
        policy.head.bias.copy_(torch.tensor([2.0, 0.5, 0.0, -0.5, -1.0]))
    return policy


@pytest.mark.parametrize("coef, rises", [(0.1, True), (-0.1, False)])
def test_entropy_bonus_sign(coef, rises):
    policy = _peaked()
    agent = Reinforce(policy, 1, lr=1e-2, entropy_coef=coef)
    before = _entropy(policy)
    classes, actions = torch.zeros(8, dtype=torch.long), torch.arange(8).remainder(ARMS)[:, None]
    agent.step(classes, actions, torch.zeros(8))  # zero rewards: only the entropy term moves the policy
    after = _entropy(policy)
    assert (after > before + 1e-4) if rises else (after < before - 1e-4)


def test_kl_to_init_is_zero_at_first_step_and_positive_after_updates():
    policy = _bandit(3)
    agent = Reinforce(policy, 1, lr=0.05, entropy_coef=0.0, kl_coef=0.1)
    classes = torch.zeros(8, dtype=torch.long)
    actions = torch.arange(8).remainder(ARMS)[:, None]
    rewards = (actions[:, 0] == 3).float()
    first = agent.step(classes, actions, rewards)
    assert first["kl"] == pytest.approx(0.0, abs=1e-7)
    kls = [agent.step(classes, actions, rewards)["kl"] for _ in range(3)]
    assert all(k > 1e-6 for k in kls)
    # the anchor is the policy at construction, frozen
    assert agent.initial is not None
    assert all(not p.requires_grad for p in agent.initial.parameters())


def test_kl_term_is_off_without_kl_coef():
    agent = Reinforce(_bandit(), 1, kl_coef=0.0)
    assert agent.initial is None


def _batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        classes = torch.randint(0, 2, (8,), generator=g)
        actions = torch.randint(0, ARMS, (8, 1), generator=g)
        yield classes, actions, torch.rand(8, generator=g)


def _round_trip(kl_coef: float) -> tuple[GRUPrompter, GRUPrompter]:
    base = _bandit(4, n_classes=2)
    options = dict(lr=0.02, entropy_coef=0.01, kl_coef=kl_coef, baseline="per-class")
    original = Reinforce(copy.deepcopy(base), 2, **options)
    for batch in _batches(3):
        original.step(*batch)
    restored_policy = copy.deepcopy(base)
    restored_policy.load_state_dict(original.policy.state_dict())
    restored = Reinforce(restored_policy, 2, **options)
    restored.load_state_dict(copy.deepcopy(original.state_dict()))
    assert_close(restored.baseline, original.baseline)
    (batch,) = _batches(1, seed=9)
    original.step(*batch)
    restored.step(*batch)
    return original.policy, restored.policy


def test_state_dict_round_trip_gives_identical_next_steps():
    a, b = _round_trip(kl_coef=0.0)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert_close(pa, pb, rtol=0, atol=0)


def test_state_dict_round_trip_with_kl_to_init():
    a, b = _round_trip(kl_coef=0.5)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert_close(pa, pb, rtol=0, atol=0)
