"""The stored envelope: serializers, compression, signatures, and what a forged entry gets."""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
import zlib
from typing import Any

import pytest

from otelperf import MissingDependencyError, OtelperfError
from otelperf.cache import SerializationError
from otelperf.cache._serializers import MAX_INFLATED, Codec, InvalidEntryError
from otelperf.config._schema import CacheCompression

VALUE = {"name": "tea", "tags": ["green", "loose"], "price": 4.5, "stock": None}


def codec(**kw: Any) -> Codec:
    kw.setdefault("cache", "c")
    kw.setdefault("serializer", "json")
    kw.setdefault("compression", None)
    kw.setdefault("signing_key", None)
    return Codec(**kw)


@pytest.mark.parametrize("serializer", ["json", "msgpack", "pickle"])
def test_each_serializer_round_trips_value_expiry_and_delta(serializer: str) -> None:
    """A value comes back equal, with the expiry and origin time stored beside it."""
    pytest.importorskip("msgpack") if serializer == "msgpack" else None
    c = codec(serializer=serializer, signing_key="k" if serializer == "pickle" else None)
    stored = c.decode(c.encode(VALUE, 1234.5, 0.25))
    assert stored.value == VALUE
    assert (stored.expires_at, round(stored.delta, 6)) == (1234.5, 0.25)


@pytest.mark.parametrize("algorithm", ["zlib", "zstd"])
def test_values_above_the_threshold_are_compressed(algorithm: str) -> None:
    """Big values shrink; small ones are stored as they are; both decode."""
    if algorithm == "zstd":
        pytest.importorskip("zstandard")
    c = codec(
        compression=CacheCompression.model_validate({"algorithm": algorithm, "min_size": 256})
    )
    big = {"text": "abc" * 2000}
    small = {"text": "abc"}
    plain = codec()
    assert len(c.encode(big, 0, 0)) < len(plain.encode(big, 0, 0)) / 10
    assert c.encode(small, 0, 0) == plain.encode(small, 0, 0)
    assert c.decode(c.encode(big, 0, 0)).value == big


def test_a_compression_bomb_is_a_miss_not_a_memory_blowup() -> None:
    """An entry inflating past MAX_INFLATED is rejected as undecodable."""
    c = codec(compression=CacheCompression.model_validate({"min_size": 1}))
    header = struct.pack(">BBdf", 1, 1, 0.0, 0.0)
    bomb = header + zlib.compress(b"0" * (MAX_INFLATED + 1024), 9)
    with pytest.raises(InvalidEntryError) as info:
        c.decode(bomb)
    assert info.value.kind == "decode"


def test_signed_entries_verify_and_forged_or_unsigned_ones_never_deserialize(tmp_path: Any) -> None:
    """A wrong or missing HMAC is rejected before pickle ever runs the payload."""
    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self) -> Any:
            return (open, (str(canary), "w"))

    c = codec(serializer="pickle", signing_key="right-key")
    payload = struct.pack(">BBdf", 1, 0, 9e9, 0.0) + pickle.dumps(Evil())
    forged = hmac.digest(b"wrong-key", payload, hashlib.sha256) + payload
    truncated = b"\x00" * 10
    for data in (forged, payload, truncated):
        with pytest.raises(InvalidEntryError) as info:
            c.decode(data)
        assert info.value.kind == "invalid_signature"
    assert not canary.exists()
    good = c.encode({"ok": 1}, 9e9, 0.0)
    assert c.decode(good).value == {"ok": 1}
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(InvalidEntryError):
        c.decode(tampered)


def test_pickle_without_a_key_is_refused() -> None:
    """The codec refuses pickle without a signing key, even if the config check is bypassed."""
    with pytest.raises(OtelperfError, match="signing_key"):
        codec(serializer="pickle")


def test_a_value_json_cannot_store_raises_a_clear_error() -> None:
    """An unserializable value names the cache, the type and the serializer."""
    with pytest.raises(SerializationError, match=r"cache 'c'.*type object.*serializer json"):
        codec().encode(object(), 0, 0)


def test_garbage_and_foreign_versions_are_misses() -> None:
    """Bytes that are not an entry of ours (another version, another writer) are a miss."""
    c = codec()
    for data in (b"", b"{}", struct.pack(">BBdf", 9, 0, 0.0, 0.0) + b"1", b"\x01\x07" + b"0" * 20):
        with pytest.raises(InvalidEntryError):
            c.decode(data)


def test_a_missing_optional_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """msgpack or zstd without their package raise MissingDependencyError with the pip line."""
    import sys

    monkeypatch.setitem(sys.modules, "msgpack", None)
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(MissingDependencyError, match=r"otelperf\[msgpack\]"):
        codec(serializer="msgpack")
    with pytest.raises(MissingDependencyError, match=r"otelperf\[compression\]"):
        codec(compression=CacheCompression.model_validate({"algorithm": "zstd"}))
