"""Type stub for dotrio._kernels.codec._compiled, the compiled twin of dotrio._kernels.codec._pure."""

__all__ = ["MAX_DEPTH", "FORMAT_VERSION", "encode", "decode", "copy"]

MAX_DEPTH: int
FORMAT_VERSION: int

def encode(value: object) -> bytes: ...
def decode(data: bytes | memoryview) -> object: ...
def copy(value: object, passthrough: tuple[type, ...] = ()) -> object: ...
