"""The constants both twins of a kernel share, and the one place they are set.

The pure twins import them from here. The compiled twins get them at compile
time: setup.py reads this file (each ``NAME = <int expression>`` line) and
hands the values to Cython as its compile-time environment, where they size
C arrays and fold into C expressions. So this file holds integer literals and
arithmetic on earlier names only; ``tests/test_kernels.py`` checks that both
twins of every kernel expose the same values.

The rest of dotrio takes the storage limits from here too (through
``dotrio._kernels.coalesce``), so a limit cannot differ between the check in
the coalescer and the messages and docs of the storage layer.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_DEPTH",
    "FORMAT_VERSION",
    "DEFAULT_CACHE_BUDGET",
    "ENTRY_OVERHEAD",
    "SETTLE_COPY_MAX",
    "SLOT_BITS",
    "LEVELS",
]

# -- storage (coalesce) -----------------------------------------------------------

MAX_KEY_BYTES: Final = 2048
"""The longest storage key, in bytes of UTF-8."""
MAX_VALUE_BYTES: Final = 2 * 1024 * 1024
"""The largest stored value, in bytes of its encoding (2 MiB)."""
DEFAULT_CACHE_BUDGET: Final = 32 * 1024
"""Bytes of committed values an object's coalescer keeps cached. Small on
purpose: thousands of objects may be live at once, and a value read once per
turn is what the cache is for, not whole data sets."""
ENTRY_OVERHEAD: Final = 96
"""What one cached entry costs beyond its key and value bytes (dict slot, str
and bytes headers), so that many tiny entries cannot exceed the budget."""
SETTLE_COPY_MAX: Final = 64
"""A committed batch bigger than this is not copied into the cache entry by
entry (that would cost as much as a small commit): only stale entries are
dropped."""

# -- codec ------------------------------------------------------------------------

MAX_DEPTH: Final = 256
"""How many containers deep a value may nest (the top-level one counts)."""
FORMAT_VERSION: Final = 1
"""The first byte of every encoded value."""

# -- timer wheel ------------------------------------------------------------------

SLOT_BITS: Final = 6
"""Each level of the wheel has ``1 << SLOT_BITS`` slots."""
LEVELS: Final = 11
"""11 * 6 = 66 bits >= 63: every non-negative int64 tick has a level."""
