"""Durable Object ids: 64 hex chars = 16-byte base + 16-byte HMAC check.

The check is an HMAC-SHA256 of the base under a key derived for the namespace
from a secret kept in the data dir, so an id made for one namespace (or another
data dir) is rejected by ``id_from_string`` instead of silently addressing a
fresh, empty object.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["DurableObjectId", "IdFactory"]

_BASE_LEN = 16
_CHECK_LEN = 16
_HEX_LEN = 2 * (_BASE_LEN + _CHECK_LEN)
_HEXDIGITS = frozenset("0123456789abcdef")


class DurableObjectId:
    """An object's identity within its namespace. Immutable and hashable."""

    __slots__ = ("_hex", "name", "_namespace")

    _hex: str
    _namespace: str
    name: str | None  # the name given to id_from_name, else None

    def __init__(self, hex_id: str, namespace: str, name: str | None = None) -> None:
        object.__setattr__(self, "_hex", hex_id)
        object.__setattr__(self, "_namespace", namespace)
        object.__setattr__(self, "name", name)

    @property
    def namespace(self) -> str:
        """The name of the namespace (class) the id belongs to."""
        return self._namespace

    def __str__(self) -> str:
        return self._hex

    def to_string(self) -> str:
        """The id as 64 lowercase hex characters (the same as ``str(id)``)."""
        return self._hex

    def __repr__(self) -> str:
        label = f" name={self.name!r}" if self.name is not None else ""
        return f"<DurableObjectId {self._namespace}/{self._hex[:12]}…{label}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DurableObjectId):
            return self._hex == other._hex and self._namespace == other._namespace
        return NotImplemented

    def equals(self, other: DurableObjectId) -> bool:
        """Whether ``other`` is the same id (the same as ``==``)."""
        return self == other

    def __hash__(self) -> int:
        return hash(self._hex)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("DurableObjectId is immutable")

    def __copy__(self) -> DurableObjectId:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> DurableObjectId:
        return self


class IdFactory:
    """Makes and checks the ids of one namespace."""

    __slots__ = ("namespace", "_key")

    def __init__(self, namespace: str, secret: bytes) -> None:
        self.namespace = namespace
        self._key = hmac.new(secret, b"dotrio-namespace:" + namespace.encode(), hashlib.sha256).digest()

    def _check(self, base: bytes) -> bytes:
        return hmac.new(self._key, base, hashlib.sha256).digest()[:_CHECK_LEN]

    def _make(self, base: bytes, name: str | None) -> DurableObjectId:
        return DurableObjectId((base + self._check(base)).hex(), self.namespace, name)

    def hex_from_base(self, base: bytes) -> str:
        """The full hex id of the object whose 16-byte base is ``base``."""
        return (base + self._check(base)).hex()

    def from_name(self, name: str) -> DurableObjectId:
        if not isinstance(name, str):
            raise TypeError(f"id_from_name() takes a str name, got {type(name).__name__}")
        base = hmac.new(self._key, b"name:" + name.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        # The top bit separates named ids from unique ones, as on Cloudflare.
        base = bytes([base[0] | 0x80]) + base[1:_BASE_LEN]
        return self._make(base, name)

    def new_unique(self) -> DurableObjectId:
        raw = secrets.token_bytes(_BASE_LEN)
        return self._make(bytes([raw[0] & 0x7F]) + raw[1:], None)

    def from_string(self, hex_id: str) -> DurableObjectId:
        if not isinstance(hex_id, str):
            raise TypeError(f"id_from_string() takes a str, got {type(hex_id).__name__}")
        if len(hex_id) != _HEX_LEN:
            raise ValueError(
                f"malformed Durable Object id: expected {_HEX_LEN} lowercase hex characters, "
                f"got {len(hex_id)} characters"
            )
        if not _HEXDIGITS.issuperset(hex_id):
            raise ValueError("malformed Durable Object id: expected only lowercase hex characters 0-9a-f")
        raw = bytes.fromhex(hex_id)
        if not hmac.compare_digest(raw[_BASE_LEN:], self._check(raw[:_BASE_LEN])):
            raise ValueError(
                f"Durable Object id {hex_id[:12]}… does not belong to namespace {self.namespace!r} "
                "(made for another namespace or another data dir)"
            )
        return DurableObjectId(hex_id, self.namespace, None)
