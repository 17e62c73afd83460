"""pytest fixtures the packages' test suites share (needs pytest, the ``test`` extra).

``from shared.testing import private_cache  # noqa: F401`` in a package's ``tests/conftest.py`` makes every
test of that suite write the embedded datasets under a temporary ``XDG_CACHE_HOME``, never in the
user's cache. pytest is imported when a fixture is first asked for, so this module imports without it.
"""

from __future__ import annotations

import functools


@functools.cache
def _private_cache():
    import pytest

    @pytest.fixture(scope="session", autouse=True)
    def private_cache(tmp_path_factory):
        """Point ``XDG_CACHE_HOME`` (where :func:`shared.data.cache_dir` writes) at a session temp folder."""
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
            yield

    return private_cache


def __getattr__(name: str):
    if name == "private_cache":
        return _private_cache()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
