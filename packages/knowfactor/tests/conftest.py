"""The embedded datasets are written under a temporary XDG_CACHE_HOME during the tests."""

from pathlib import Path

import pytest

from knowfactor.data import write_synthetic_dsprites
from shared.testing import private_cache  # noqa: F401


@pytest.fixture(scope="session")
def sprites(tmp_path_factory) -> Path:
    """A small dSprites-lite in the real .npz layout (224 train / 96 test images: 3 batches of 64 per epoch)."""
    return write_synthetic_dsprites(tmp_path_factory.mktemp("data") / "dsprites.npz", n=320, seed=0)
