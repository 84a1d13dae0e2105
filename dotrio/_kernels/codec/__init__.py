"""dotrio's value codec: the compiled twin unless ``DOTRIO_NO_EXTENSIONS`` is set.

Both twins give the same bytes and the same errors; the format and the rules
are documented in ``dotrio._kernels.codec._pure``. ``USING_EXTENSION`` says
which one is in use (see ``dotrio._kernels._select``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._constants import FORMAT_VERSION, MAX_DEPTH
from .._select import load

__all__ = ["MAX_DEPTH", "FORMAT_VERSION", "USING_EXTENSION", "encode", "decode", "copy"]

_impl, USING_EXTENSION = load(__name__)

if TYPE_CHECKING:
    from ._pure import copy, decode, encode
else:
    encode = _impl.encode
    decode = _impl.decode
    copy = _impl.copy
