"""The in-process store: LRU bound, TTL, tags and prefixes."""

from __future__ import annotations

from otelperf.cache._memory import MemoryStore


def put(store: MemoryStore, key: str, expires: float = 100.0, **kw: object) -> None:
    store.set(key, key.upper(), expires=expires, stale_until=expires, **kw)  # type: ignore[arg-type]


def test_the_least_recently_used_entry_is_evicted_and_counted() -> None:
    """Past max_entries the entry read longest ago goes, and evictions are counted."""
    store = MemoryStore(2)
    put(store, "a")
    put(store, "b")
    assert store.get("a", 0.0) is not None  # a is now the most recent
    put(store, "c")
    assert store.get("b", 0.0) is None
    assert [k for k in ("a", "c") if store.get(k, 0.0)] == ["a", "c"]
    assert (store.evictions, len(store)) == (1, 2)


def test_entries_expire_and_stale_ones_are_kept_until_stale_until() -> None:
    """An entry is returned until stale_until (the caller judges freshness), then dropped."""
    store = MemoryStore(10)
    store.set("k", 1, expires=10.0, stale_until=20.0)
    assert store.get("k", 15.0) is not None
    assert store.get("k", 20.0) is None
    assert len(store) == 0


def test_tags_and_prefixes_invalidate_exactly_their_entries() -> None:
    """invalidate_tags and invalidate_prefix remove what they name and nothing else."""
    store = MemoryStore(10)
    put(store, "ns:a:1", tags=("x",))
    put(store, "ns:a:2", tags=("x", "y"))
    put(store, "ns:b:1", tags=("y",))
    assert store.invalidate_tags(["x"]) == 2
    assert store.get("ns:b:1", 0.0) is not None
    put(store, "ns:a:3")
    assert store.invalidate_prefix("ns:a:") == 1
    assert store.invalidate_tags(["y"]) == 1
    assert len(store) == 0


def test_evicted_and_replaced_entries_leave_no_stale_tag_references() -> None:
    """A tag set forgets keys that were evicted or rewritten without the tag."""
    store = MemoryStore(1)
    put(store, "a", tags=("t",))
    put(store, "b")  # evicts a
    put(store, "b", tags=("u",))
    put(store, "b")  # rewritten without tags
    assert store._tags == {}
