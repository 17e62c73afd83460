"""reprozoo's thin common layer: what two or more packages need, and nothing else.

Modules: :mod:`shared.device`, :mod:`shared.distributed`, :mod:`shared.data`,
:mod:`shared.checkpoint`, :mod:`shared.logging`, :mod:`shared.cli`, :mod:`shared.errors`,
:mod:`shared.report`.
"""

from shared.errors import UserError

__version__ = "0.1.0"

__all__ = ["UserError", "__version__"]
