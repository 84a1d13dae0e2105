"""dotrio's write coalescer: the compiled twin unless ``DOTRIO_NO_EXTENSIONS`` is set.

Both twins behave the same; the rules are documented in
``dotrio._kernels.coalesce._pure``. ``USING_EXTENSION`` says which one is in
use (see ``dotrio._kernels._select``). The storage limits are re-exported
from ``dotrio._kernels._constants``, their one definition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._constants import DEFAULT_CACHE_BUDGET, ENTRY_OVERHEAD, MAX_KEY_BYTES, MAX_VALUE_BYTES
from .._select import load

__all__ = [
    "Coalescer",
    "MISSING",
    "READY",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "DEFAULT_CACHE_BUDGET",
    "ENTRY_OVERHEAD",
    "USING_EXTENSION",
    "check_key",
]

_impl, USING_EXTENSION = load(__name__)

if TYPE_CHECKING:
    from ._pure import MISSING, READY, Coalescer, check_key
else:
    Coalescer = _impl.Coalescer
    MISSING = _impl.MISSING
    READY = _impl.READY
    check_key = _impl.check_key
