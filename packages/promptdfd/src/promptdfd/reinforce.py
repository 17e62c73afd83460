"""REINFORCE for the topic prompter (Ma et al., PromptDFD, IJCAI 2022: the prompter is trained by
reinforcement learning because sampling tokens is not differentiable).

Loss of one batch of prompts p_i for classes c_i with rewards r_i:

    L = -mean_i (A_i * log P(p_i | c_i)) - beta_ent * mean entropy + beta_kl * KL(P || P_init)
    A_i = (r_i - b) / (std_batch(r) + 1e-8)

with ``b`` an exponential moving average of the batch-mean reward (``ema``) or one such average per class
(``per-class``). The entropy bonus keeps each class from collapsing onto one prompt; the KL term keeps an
LM-initialised prompter's prompts natural (it is off for a policy that starts uniform).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

BASELINES = ("ema", "per-class")


class Reinforce:
    """One policy-gradient update per call of :meth:`step`; ``policy`` has ``score(classes, actions)`` and
    ``step_logits(classes, actions)`` (see :class:`promptdfd.models.GRUPrompter`)."""

    def __init__(
        self,
        policy: nn.Module,
        n_classes: int,
        *,
        lr: float = 1e-3,
        entropy_coef: float = 0.01,
        kl_coef: float = 0.0,
        baseline: str = "ema",
        momentum: float = 0.9,
        standardize: bool = True,
        grad_clip: float = 1.0,
    ) -> None:
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        self.policy = policy
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
        self.entropy_coef, self.kl_coef = entropy_coef, kl_coef
        self.baseline_kind, self.momentum = baseline, momentum
        self.standardize, self.grad_clip = standardize, grad_clip
        self.initial = copy.deepcopy(policy).requires_grad_(False) if kl_coef > 0 else None
        self.baseline = torch.zeros(n_classes if baseline == "per-class" else 1)
        self.seen = torch.zeros_like(self.baseline, dtype=torch.bool)

    def advantages(self, classes: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """``(r - b) / std(r)`` with the baseline before this batch; then the baseline moves towards the batch."""
        rewards = rewards.detach().float().cpu()
        slots = classes.cpu() if self.baseline_kind == "per-class" else torch.zeros_like(classes.cpu())
        means = torch.zeros_like(self.baseline).index_add_(0, slots, rewards)
        counts = torch.zeros_like(self.baseline).index_add_(0, slots, torch.ones_like(rewards))
        present = counts > 0
        means[present] /= counts[present]
        # A slot's first batch has no history: its own mean is the baseline.
        start = present & ~self.seen
        self.baseline[start] = means[start]
        advantage = rewards - self.baseline[slots]
        spread = rewards.std() if rewards.numel() > 1 else torch.zeros(())
        if self.standardize and spread > 1e-6:  # a batch of equal rewards keeps its unscaled advantage
            advantage = advantage / (spread + 1e-8)
        update = present & ~start
        self.baseline[update] = self.momentum * self.baseline[update] + (1 - self.momentum) * means[update]
        self.seen |= present
        return advantage

    def step(self, classes: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        """One update on prompts ``actions`` sampled for ``classes`` that earned ``rewards``."""
        advantage = self.advantages(classes, rewards).to(actions.device)
        scored = self.policy.score(classes, actions)
        loss = -(advantage * scored.logprob).mean() - self.entropy_coef * scored.entropy.mean()
        kl = torch.zeros(())
        if self.initial is not None:
            log_p = F.log_softmax(self.policy.step_logits(classes, actions), dim=-1)
            with torch.no_grad():
                log_q = F.log_softmax(self.initial.step_logits(classes, actions), dim=-1)
            kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
            loss = loss + self.kl_coef * kl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip)
        self.optimizer.step()
        return {
            "loss": float(loss.detach()),
            "reward": float(rewards.float().mean()),
            "entropy": float(scored.entropy.detach().mean()),
            "kl": float(kl.detach()),
        }

    def state_dict(self) -> dict:
        """Optimizer, baselines and (with the KL term) the initial policy: what an exact resume needs."""
        state = {"optimizer": self.optimizer.state_dict(), "baseline": self.baseline, "seen": self.seen}
        if self.initial is not None:
            state["initial"] = self.initial.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline, self.seen = state["baseline"].clone(), state["seen"].clone()
        if self.initial is not None:
            self.initial.load_state_dict(state["initial"])
