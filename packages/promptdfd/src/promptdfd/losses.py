"""The distillation loss and the prompter's reward terms (Ma et al., PromptDFD, IJCAI 2022).

The paper's method section is not public; the forms here follow its abstract and introduction and the
practice of the authors' group (AS-DFD, DFAD): a temperature-scaled KD loss for the student, and a reward
for the topic prompter that asks for text the teacher files under the prompted class (topic relevance), text
the student still gets wrong (disagreement) and, optionally, text the language model finds likely (fluency).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TOPIC_KINDS = ("logprob", "prob", "hit")
DISAGREEMENT_KINDS = ("kl", "l1")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Hinton KD: ``tau**2 * KL(softmax(z_T / tau) || softmax(z_S / tau))``, mean over the batch.

    The ``tau**2`` factor keeps the gradient's scale independent of the temperature.
    """
    teacher = F.log_softmax(teacher_logits.detach() / tau, dim=-1)
    student = F.log_softmax(student_logits / tau, dim=-1)
    return tau**2 * F.kl_div(student, teacher, log_target=True, reduction="batchmean")


def topic_reward(teacher_logits: torch.Tensor, classes: torch.Tensor, kind: str = "logprob") -> torch.Tensor:
    """Topic relevance of each text to the class it was prompted for: ``log p_T(c | x)`` (``logprob``),
    ``p_T(c | x)`` (``prob``) or ``1[argmax p_T(x) = c]`` (``hit``). Shape ``[B]``."""
    log_probs = F.log_softmax(teacher_logits.float(), dim=-1)
    picked = log_probs.gather(1, classes.view(-1, 1)).squeeze(1)
    if kind == "logprob":
        return picked
    if kind == "prob":
        return picked.exp()
    if kind == "hit":
        return (log_probs.argmax(dim=-1) == classes).float()
    raise ValueError(f"topic reward kind must be one of {TOPIC_KINDS}, got {kind!r}")


def disagreement_reward(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, kind: str = "kl", tau: float = 1.0
) -> torch.Tensor:
    """How much the student still disagrees with the teacher on each text: ``KL(p_T || p_S)`` at temperature
    ``tau`` (``kl``) or the mean absolute logit gap as in DFAD (``l1``). Zero when the two agree. Shape ``[B]``."""
    if kind == "kl":
        teacher = F.log_softmax(teacher_logits.float() / tau, dim=-1)
        student = F.log_softmax(student_logits.float() / tau, dim=-1)
        return (teacher.exp() * (teacher - student)).sum(dim=-1)
    if kind == "l1":
        return (teacher_logits.float() - student_logits.float()).abs().mean(dim=-1)
    raise ValueError(f"disagreement reward kind must be one of {DISAGREEMENT_KINDS}, got {kind!r}")


def fluency_reward(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean log-probability of the generated tokens under the generator (``mask`` marks them). Shape ``[B]``."""
    mask = mask.float()
    return (token_logprobs * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def composite_reward(
    topic: torch.Tensor,
    disagreement: torch.Tensor | None = None,
    fluency: torch.Tensor | None = None,
    *,
    lambda_topic: float = 1.0,
    lambda_adv: float = 1.0,
    lambda_lm: float = 0.0,
) -> torch.Tensor:
    """``r = lambda_topic * r_topic + lambda_adv * r_adv + lambda_lm * r_lm`` (a term with weight 0 may be None)."""
    reward = lambda_topic * topic
    for weight, term, name in ((lambda_adv, disagreement, "disagreement"), (lambda_lm, fluency, "fluency")):
        if weight:
            if term is None:
                raise ValueError(f"the {name} reward has weight {weight} but was not computed")
            reward = reward + weight * term
    return reward
