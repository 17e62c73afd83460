"""A teacher and a generator trained once per test session on the toy task, at a tiny scale."""

from __future__ import annotations

import pytest
import torch

from promptdfd.config import build_config
from promptdfd.engine import prepare_assets

#: Settings that make every stage run in seconds.
TINY = dict(
    teacher_epochs=2,
    generator_sentences=2000,
    generator_epochs=1,
    rl_iterations=4,
    rl_batch_size=16,
    n_synth=48,
    epochs=3,
    batch_size=16,
)


def tiny_config(**overrides):
    """The demo configuration at the tiny scale, with ``overrides``."""
    return build_config("demo", **(TINY | overrides))


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Folder holding ``teacher.pt`` and ``generator.pt`` of the tiny toy setting (seed 0)."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    folder = tmp_path_factory.mktemp("assets")
    prepare_assets(tiny_config(), folder, torch.device("cpu"), quiet=True)
    return folder


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """torch.allclose with a message (torch.testing.assert_close costs seconds of imports on first use)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    same = (
        torch.allclose(actual, expected, rtol=rtol, atol=atol)
        if actual.is_floating_point()
        else torch.equal(actual, expected)
    )
    assert same, f"{actual} != {expected}"
