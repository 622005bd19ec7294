"""How values are stored outside the process: serializer, compression, signature, envelope.

A stored entry is, in order::

    [32-byte HMAC-SHA256 over the rest, when a signing key is configured]
    1 byte   format version (1)
    1 byte   compression: 0 none, 1 zlib, 2 zstd
    8 bytes  logical expiry, Unix time (big-endian double)
    4 bytes  seconds the origin took to compute the value (for XFetch)
    payload  the serialized (and maybe compressed) value

The serializer and the signature algorithm are fixed by the config and never read from
the stored value; the signature is checked (in constant time) before anything else
is read, so an unsigned or forged entry is never decompressed nor deserialized. Memory
caches keep the Python objects themselves and use none of this.

JSON and msgpack return what they can represent: tuples come back as lists and JSON
turns non-string dict keys into strings, so a hit from Redis can differ in type from
the origin's own result; return lists and string-keyed dicts, or use pickle.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from otelperf._errors import MissingDependencyError, OtelperfError
from otelperf.config._schema import CacheCompression

__all__ = ["Codec", "InvalidEntryError", "SerializationError", "Stored"]

_VERSION = 1
_HEADER = struct.Struct(">BBdf")
_SIG = 32
_NONE, _ZLIB, _ZSTD = 0, 1, 2
MAX_INFLATED = 64 * 1024 * 1024
"""Largest value a compressed entry may inflate to (a bound against compression bombs)."""


class InvalidEntryError(Exception):
    """A stored entry that must be treated as a miss; ``kind`` names why (a metric label)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class SerializationError(OtelperfError, TypeError):
    """A value cannot be stored with the cache's serializer."""


SerializationError.__module__ = "otelperf"


@dataclass(frozen=True, slots=True)
class Stored:
    """A decoded entry: the value, its logical expiry (Unix time) and its origin time."""

    value: Any
    expires_at: float
    delta: float
    size: int


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _serializer(name: str, cache: str) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    if name == "json":
        return _json_dumps, json.loads
    if name == "msgpack":
        try:
            msgpack = importlib.import_module("msgpack")
        except ImportError:
            raise MissingDependencyError(
                "msgpack", "msgpack", f"cache {cache!r}: serializer msgpack"
            ) from None
        packb, unpackb = msgpack.packb, msgpack.unpackb

        def dumps(value: Any) -> bytes:
            data: bytes = packb(value, use_bin_type=True)
            return data

        def loads(data: bytes) -> Any:
            return unpackb(data, raw=False, strict_map_key=False)

        return dumps, loads
    if name == "pickle":
        return _pickle_dumps, pickle.loads
    raise OtelperfError(f"cache {cache!r}: unknown serializer {name!r}")  # pragma: no cover


class _Zstd:
    """zstd through ``compression.zstd`` (Python 3.14+) or the ``zstandard`` package."""

    def __init__(self, level: int | None, cache: str) -> None:
        self.level = 3 if level is None else level
        try:
            self.module = importlib.import_module("zstandard")
        except ImportError:
            raise MissingDependencyError(
                "zstandard", "compression", f"cache {cache!r}: zstd compression"
            ) from None
        self.compressor = self.module.ZstdCompressor(level=self.level)

    def compress(self, data: bytes) -> bytes:
        out: bytes = self.compressor.compress(data)
        return out

    def decompress(self, data: bytes) -> bytes:
        out: bytes = self.module.ZstdDecompressor().decompress(data, max_output_size=MAX_INFLATED)
        if len(out) > MAX_INFLATED:  # pragma: no cover - zstandard enforces it already
            raise InvalidEntryError("decode")
        return out


def _inflate_zlib(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_INFLATED)
    if inflater.unconsumed_tail:
        raise InvalidEntryError("decode")
    return out


class Codec:
    """Encodes values into signed, maybe compressed entries, and back. No I/O."""

    def __init__(
        self,
        *,
        cache: str,
        serializer: str,
        compression: CacheCompression | None,
        signing_key: str | None,
    ) -> None:
        if serializer == "pickle" and not signing_key:
            # The config refuses this too; the codec holds the line on its own.
            raise OtelperfError(
                f"cache {cache!r}: serializer pickle needs signing_key; set it or use json"
            )
        self.cache = cache
        self.serializer = serializer
        self._dumps, self._loads = _serializer(serializer, cache)
        self._key = signing_key.encode() if signing_key else None
        self._min_size = compression.min_size if compression is not None else None
        self._zstd: _Zstd | None = None
        self._zlib_level = -1
        if compression is not None and compression.algorithm == "zstd":
            self._zstd = _Zstd(compression.level, cache)
        elif compression is not None and compression.level is not None:
            self._zlib_level = max(-1, min(9, compression.level))

    def encode(self, value: Any, expires_at: float, delta: float) -> bytes:
        """The bytes stored for ``value``; raises :class:`SerializationError`."""
        try:
            payload = self._dumps(value)
        except Exception as exc:
            raise SerializationError(
                f"cache {self.cache!r} cannot store a value of type {type(value).__qualname__} "
                f"with serializer {self.serializer}: {type(exc).__name__}: {exc}"
            ) from None
        flag = _NONE
        if self._min_size is not None and len(payload) >= self._min_size:
            if self._zstd is not None:
                packed = self._zstd.compress(payload)
                algorithm = _ZSTD
            else:
                packed = zlib.compress(payload, self._zlib_level)
                algorithm = _ZLIB
            if len(packed) < len(payload):
                payload, flag = packed, algorithm
        body = _HEADER.pack(_VERSION, flag, expires_at, delta) + payload
        if self._key is not None:
            return hmac.digest(self._key, body, hashlib.sha256) + body
        return body

    def decode(self, data: bytes) -> Stored:
        """The entry stored as ``data``; raises :class:`InvalidEntryError` for a miss."""
        size = len(data)
        if self._key is not None:
            signature, body = data[:_SIG], data[_SIG:]
            expected = hmac.digest(self._key, body, hashlib.sha256)
            if not hmac.compare_digest(signature, expected):
                raise InvalidEntryError("invalid_signature")
        else:
            body = data
        if len(body) < _HEADER.size:
            raise InvalidEntryError("decode")
        version, flag, expires_at, delta = _HEADER.unpack_from(body)
        if version != _VERSION:
            raise InvalidEntryError("decode")
        payload = body[_HEADER.size :]
        try:
            if flag == _ZLIB:
                payload = _inflate_zlib(payload)
            elif flag == _ZSTD:
                if self._zstd is None:
                    self._zstd = _Zstd(None, self.cache)
                payload = self._zstd.decompress(payload)
            elif flag != _NONE:
                raise InvalidEntryError("decode")
            value = self._loads(payload)
        except InvalidEntryError:
            raise
        except Exception:
            raise InvalidEntryError("decode") from None
        return Stored(value, expires_at, delta, size)
