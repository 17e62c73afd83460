"""reprozoo's thin common layer: what two or more packages need, and nothing else.

Modules: :mod:`shared.device`, :mod:`shared.distributed`, :mod:`shared.data`,
:mod:`shared.checkpoint`, :mod:`shared.logging`, :mod:`shared.cli`, :mod:`shared.errors`,
:mod:`shared.report`, :mod:`shared.nn`, :mod:`shared.testing`.
"""

from importlib.metadata import version

from shared.errors import UserError

__version__ = version("reprozoo-shared")

__all__ = ["UserError", "__version__"]
