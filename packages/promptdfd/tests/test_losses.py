"""Tests of the KD loss and the prompter's reward terms (promptdfd.losses)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close

from promptdfd.losses import composite_reward, disagreement_reward, fluency_reward, kd_loss, topic_reward


def _logits(seed: int, b: int = 4, c: int = 5) -> torch.Tensor:
    return torch.randn(b, c, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- kd_loss


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_kd_loss_is_zero_for_identical_logits(tau):
    z = _logits(0)
    assert float(kd_loss(z.clone(), z.clone(), tau=tau)) == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_is_positive_for_different_logits():
    assert float(kd_loss(_logits(0), _logits(1), tau=2.0)) > 1e-3


@pytest.mark.parametrize("tau", [1.0, 2.0, 3.5])
def test_kd_loss_gradient_follows_tau_squared_convention(tau):
    # L = tau^2 / B * sum_i KL(p_t,i || p_s,i), p = softmax(z / tau); dKL/dz_s = (p_s - p_t) / tau,
    # so dL/dz_s = tau * (softmax(z_s / tau) - softmax(z_t / tau)) / B.
    student, teacher = _logits(2).double().requires_grad_(True), _logits(3).double()
    kd_loss(student, teacher, tau=tau).backward()
    expected = tau * ((student.detach() / tau).softmax(-1) - (teacher / tau).softmax(-1)) / student.shape[0]
    assert_close(student.grad, expected, rtol=1e-9, atol=1e-12)


def test_kd_loss_gives_no_gradient_to_the_teacher():
    student, teacher = _logits(2).requires_grad_(True), _logits(3).requires_grad_(True)
    kd_loss(student, teacher, tau=2.0).backward()
    assert teacher.grad is None
    assert student.grad is not None and float(student.grad.abs().sum()) > 0


def test_kd_loss_hand_computed_two_class_value():
    # teacher (0.5, 0.5), student (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3) = 0.5 ln(4/3)
    teacher = torch.tensor([[0.0, 0.0]])
    student = torch.tensor([[0.0, math.log(3.0)]])
    assert float(kd_loss(student, teacher, tau=1.0)) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-5)
    # at tau = 2 the student logits (0, 2 ln 3) give the same distributions, times tau^2 = 4
    assert float(kd_loss(2 * student, 2 * teacher, tau=2.0)) == pytest.approx(2 * math.log(4 / 3), rel=1e-5)


def test_kd_loss_is_a_batch_mean():
    teacher = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    student = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # second row agrees: KL 0
    assert float(kd_loss(student, teacher)) == pytest.approx(0.25 * math.log(4 / 3), rel=1e-5)


# ------------------------------------------------------------------------------------------ topic_reward


def test_topic_reward_forms_on_a_hand_case():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])  # p = (0.25, 0.75)
    classes = torch.tensor([1, 0])
    assert_close(topic_reward(logits, classes, "logprob"), torch.tensor([math.log(0.75), math.log(0.25)]))
    assert_close(topic_reward(logits, classes, "prob"), torch.tensor([0.75, 0.25]))
    assert_close(topic_reward(logits, classes, "hit"), torch.tensor([1.0, 0.0]))


def test_topic_reward_default_is_logprob():
    logits, classes = _logits(4), torch.tensor([0, 1, 2, 3])
    assert_close(topic_reward(logits, classes), topic_reward(logits, classes, "logprob"))


def test_topic_reward_is_maximal_when_the_teacher_is_sure_of_the_class():
    classes = torch.tensor([0, 2, 4])
    sure = torch.full((3, 5), -100.0)
    sure[torch.arange(3), classes] = 100.0
    assert_close(topic_reward(sure, classes, "logprob"), torch.zeros(3), atol=1e-6, rtol=0)
    assert_close(topic_reward(sure, classes, "prob"), torch.ones(3), atol=1e-6, rtol=0)
    other = _logits(5, b=3)
    assert bool((topic_reward(other, classes, "logprob") < -1e-3).all())
    assert bool((topic_reward(other, classes, "prob") < 1 - 1e-3).all())


def test_topic_reward_rejects_unknown_kind():
    with pytest.raises(ValueError, match="topic reward kind"):
        topic_reward(_logits(0), torch.tensor([0, 0, 0, 0]), "entropy")


# ------------------------------------------------------------------------------------ disagreement_reward


@pytest.mark.parametrize("kind", ["kl", "l1"])
def test_disagreement_is_zero_when_student_equals_teacher(kind):
    z = _logits(6)
    assert_close(disagreement_reward(z, z.clone(), kind), torch.zeros(4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["kl", "l1"])
def test_disagreement_is_positive_otherwise(kind):
    out = disagreement_reward(_logits(6), _logits(7), kind)
    assert out.shape == (4,)
    assert bool((out > 0).all())


def test_disagreement_kl_hand_computed():
    teacher = torch.tensor([[0.0, 0.0]])
    student = torch.tensor([[0.0, math.log(3.0)]])
    assert float(disagreement_reward(teacher, student, "kl")[0]) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-5)
    # the direction is KL(p_T || p_S): swapping gives KL((.25,.75) || (.5,.5)) = .25 ln .5 + .75 ln 1.5
    swapped = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert float(disagreement_reward(student, teacher, "kl")[0]) == pytest.approx(swapped, rel=1e-5)
    # a temperature divides the logits
    assert float(disagreement_reward(2 * teacher, 2 * student, "kl", tau=2.0)[0]) == pytest.approx(
        0.5 * math.log(4 / 3), rel=1e-5
    )


def test_disagreement_l1_hand_computed():
    teacher, student = torch.tensor([[1.0, 2.0, -3.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    assert float(disagreement_reward(teacher, student, "l1")[0]) == pytest.approx(2.0)


def test_disagreement_rejects_unknown_kind():
    with pytest.raises(ValueError, match="disagreement reward kind"):
        disagreement_reward(_logits(0), _logits(1), "js")


# ---------------------------------------------------------------------------------- fluency / composite


def test_fluency_reward_is_the_masked_mean():
    logprobs = torch.tensor([[-1.0, -2.0, -30.0], [-4.0, -5.0, -6.0], [-7.0, -8.0, -9.0]])
    mask = torch.tensor([[True, True, False], [True, True, True], [False, False, False]])
    # an all-masked row has no tokens: its reward is 0, not NaN
    assert_close(fluency_reward(logprobs, mask), torch.tensor([-1.5, -5.0, 0.0]))


def test_composite_reward_weights_the_terms():
    topic, dis, flu = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 6.0])
    out = composite_reward(topic, dis, flu, lambda_topic=2.0, lambda_adv=0.5, lambda_lm=0.1)
    assert_close(out, torch.tensor([2 + 1.5 + 0.5, 4 + 2 + 0.6]))
    # defaults: topic + disagreement, no fluency
    assert_close(composite_reward(topic, dis), torch.tensor([4.0, 6.0]))


def test_composite_reward_allows_none_for_zero_weight_terms():
    topic = torch.tensor([1.0, -2.0])
    assert_close(composite_reward(topic, None, None, lambda_adv=0.0, lambda_lm=0.0), topic)


def test_composite_reward_refuses_a_weighted_term_that_is_missing():
    topic = torch.tensor([1.0])
    with pytest.raises(ValueError, match="disagreement"):
        composite_reward(topic, None, lambda_adv=1.0)
    with pytest.raises(ValueError, match="fluency"):
        composite_reward(topic, torch.tensor([0.0]), None, lambda_lm=0.5)
