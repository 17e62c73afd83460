"""The synthetic faces are written under a temporary XDG_CACHE_HOME during the tests; one tiny split is shared."""

import pytest

from facemae.synthetic import write_synthetic_faces
from shared.testing import private_cache  # noqa: F401


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory):
    """8 source and 8 target identities x 8 faces at 32 px, 40 verification pairs of 6 further identities."""
    root = tmp_path_factory.mktemp("faces") / "synthetic"
    return write_synthetic_faces(root, size=32, source=(8, 8), target=(8, 8), pair_identities=6, pairs=40)
