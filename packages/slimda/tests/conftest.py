"""The embedded datasets are written under a temporary XDG_CACHE_HOME during the tests."""

from shared.testing import private_cache  # noqa: F401
