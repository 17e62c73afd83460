import pytest
import torch

from shared.testing import private_cache  # noqa: F401  (the synthetic set is cached in a temporary folder)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
