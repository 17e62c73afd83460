import random

import numpy as np
import pytest
import torch

from shared.device import AmpScaler, autocast, resolve_device, seed_everything
from shared.errors import UserError


def test_resolve_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_cuda_is_a_clear_error():
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(UserError, match="CUDA is not available; use --device cpu"):
            resolve_device(spec)


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "cpu:1", "gpu"])
def test_malformed_device_is_a_clear_error(spec):
    with pytest.raises(UserError, match="device"):
        resolve_device(spec)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_out_of_range():
    with pytest.raises(UserError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_autocast_cpu_bf16_and_disabled_noop():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    cpu = torch.device("cpu")
    with autocast(cpu, enabled=False):
        assert (a @ b).dtype == torch.float32
    with autocast(cpu, enabled=True):
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(UserError, match="AMP dtype"):
        autocast(cpu, dtype="fp8")
    assert not AmpScaler(cpu).enabled and not AmpScaler(cpu, enabled=False, dtype="fp16").enabled
    assert AmpScaler(cpu, dtype="fp16").enabled  # fp16 needs loss scaling wherever it runs


def test_seed_everything_repeats_every_rng():
    def draw(seed):
        generator = seed_everything(seed)
        return random.random(), float(np.random.rand()), float(torch.rand(1)), float(torch.rand(1, generator=generator))

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
