"""dotrio's write coalescer: the compiled one unless DOTRIO_NO_EXTENSIONS is set.

Both implementations behave the same; the rules are documented in
``dotrio.storage._coalesce_py``. ``DOTRIO_NO_EXTENSIONS`` set to anything but
"" or "0" selects the pure-Python twin; otherwise the compiled
``dotrio._ext._coalesce`` is used, falling back to the pure one only if it is
not built (an ImportError): ``USING_EXTENSION`` says which one is in use, and
the test suite fails when it is False without the variable set.
"""

from __future__ import annotations

import os

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

USING_EXTENSION: bool

if os.environ.get("DOTRIO_NO_EXTENSIONS", "") not in ("", "0"):
    from ._coalesce_py import (
        DEFAULT_CACHE_BUDGET,
        ENTRY_OVERHEAD,
        MAX_KEY_BYTES,
        MAX_VALUE_BYTES,
        MISSING,
        READY,
        Coalescer,
        check_key,
    )

    USING_EXTENSION = False
else:
    try:
        from .._ext._coalesce import (
            DEFAULT_CACHE_BUDGET,
            ENTRY_OVERHEAD,
            MAX_KEY_BYTES,
            MAX_VALUE_BYTES,
            MISSING,
            READY,
            Coalescer,
            check_key,
        )

        USING_EXTENSION = True
    except ImportError:
        from ._coalesce_py import (
            DEFAULT_CACHE_BUDGET,
            ENTRY_OVERHEAD,
            MAX_KEY_BYTES,
            MAX_VALUE_BYTES,
            MISSING,
            READY,
            Coalescer,
            check_key,
        )

        USING_EXTENSION = False
