"""dotrio's value codec: the compiled one unless DOTRIO_NO_EXTENSIONS is set.

Both implementations give the same bytes and the same errors; the format and
the rules are documented in ``dotrio._codec_py``. ``DOTRIO_NO_EXTENSIONS`` set
to anything but "" or "0" selects the pure-Python twin; otherwise the compiled
``dotrio._ext._codec`` is used, falling back to the pure one only if it is not
built (an ImportError): ``USING_EXTENSION`` says which one is in use, and the
test suite fails when it is False without the variable set.
"""

from __future__ import annotations

import os

__all__ = ["MAX_DEPTH", "FORMAT_VERSION", "USING_EXTENSION", "encode", "decode", "copy"]

USING_EXTENSION: bool

if os.environ.get("DOTRIO_NO_EXTENSIONS", "") not in ("", "0"):
    from ._codec_py import FORMAT_VERSION, MAX_DEPTH, copy, decode, encode

    USING_EXTENSION = False
else:
    try:
        from ._ext._codec import FORMAT_VERSION, MAX_DEPTH, copy, decode, encode

        USING_EXTENSION = True
    except ImportError:
        from ._codec_py import FORMAT_VERSION, MAX_DEPTH, copy, decode, encode

        USING_EXTENSION = False
