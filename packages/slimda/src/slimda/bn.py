"""BN recalibration: shared BN parameters, statistics re-estimated per architecture (unverified against the paper;
the practice of slimmable networks).

Running statistics are meaningless across widths, so before an architecture is evaluated or ranked its
statistics are reset and re-estimated as a cumulative average (momentum None) over calibration batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from slimda.models import Arch, ModelBank, SlimmableBatchNorm2d


@torch.no_grad()
def recalibrate_bn(bank: ModelBank, arch: Arch, batches: Iterable[torch.Tensor]) -> ModelBank:
    """Set ``arch``, re-estimate every BN's running statistics on ``batches``, and leave the bank in eval mode.

    Only running statistics change; weights are untouched. The result is deterministic given the batches.
    """
    bank.set_arch(arch)
    norms = [m for m in bank.modules() if isinstance(m, SlimmableBatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    bank.train()
    try:
        for batch in batches:
            bank.backbone(batch)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        bank.eval()
    return bank
