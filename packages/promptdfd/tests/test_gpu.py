"""The demo pipeline on CUDA (skipped without a device): both schedules run and give a scored student."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from promptdfd.engine import fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("schedule", ["alternating", "two-stage"])
def test_fit_on_cuda(tmp_path, schedule):
    results = fit(tiny_config(schedule=schedule), tmp_path, torch.device("cuda"), quiet=True)
    assert 0 <= results["student"]["accuracy"] <= 1 and results["teacher"]["accuracy"] > 0.9
