"""Collections keyed by key id, spread over small tables so that none grows in one long step.

A dict or set grows by rebuilding its whole table at once. At 200,000 key ids
that is one C call of several milliseconds (6 ms on a quiet machine, 40 ms
traced in a serving gateway, page faults included), with the GIL held and
the event loop waiting. Spread over `SHARDS` small tables by `key_id % SHARDS`,
each rebuild moves a 64th of the ids, and a pool growing from 100,000 keys
to 200,000 never stalls the loop for a growth.

Iteration goes shard by shard: it is not in insertion order. Callers that
need the ids in order sort them (`Slot.ordered_ids`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from itertools import chain
from typing import Final, final, overload

SHARDS: Final = 64
"""Small tables an `IdSet` or `IdMap` spreads its ids over."""


class _Sharded[C: Collection[int]]:
    """Key ids in `SHARDS` small collections, `key_id % SHARDS` choosing one: what both share."""

    __slots__ = ("_shards",)

    def __init__(self, shards: list[C]) -> None:
        self._shards = shards

    def __contains__(self, key_id: object) -> bool:
        return isinstance(key_id, int) and key_id in self._shards[key_id % SHARDS]

    def __iter__(self) -> Iterator[int]:
        return chain.from_iterable(self._shards)

    def __len__(self) -> int:
        return sum(map(len, self._shards))


@final
class IdSet(_Sharded[set[int]]):
    """A set of key ids kept as `SHARDS` small sets."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__([set() for _ in range(SHARDS)])

    def update(self, ids: Iterable[int]) -> None:
        """Add `ids`."""
        shards = self._shards
        for key_id in ids:
            shards[key_id % SHARDS].add(key_id)

    def copy_shard[V](self, source: IdMap[V], index: int) -> None:
        """Make shard `index` a copy of the ids of `source`'s shard `index` (one small C copy)."""
        self._shards[index] = set(source.shard(index))

    def discard(self, key_id: int) -> None:
        """Remove `key_id` if present."""
        self._shards[key_id % SHARDS].discard(key_id)


@final
class IdMap[V](_Sharded[dict[int, V]]):
    """A mapping of key id to value kept as `SHARDS` small dicts.

    The subset of the dict interface the pool uses: item get, set and pop (with a default),
    membership, length, truth, iteration over ids and `values()`.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__([{} for _ in range(SHARDS)])

    def __setitem__(self, key_id: int, value: V) -> None:
        self._shards[key_id % SHARDS][key_id] = value

    def __getitem__(self, key_id: int) -> V:
        return self._shards[key_id % SHARDS][key_id]

    @overload
    def get(self, key_id: int) -> V | None: ...

    @overload
    def get[D](self, key_id: int, default: D) -> V | D: ...

    def get(self, key_id: int, default: object = None) -> object:
        """The value of `key_id`, or `default`."""
        return self._shards[key_id % SHARDS].get(key_id, default)

    def pop[D](self, key_id: int, default: D) -> V | D:
        """Remove `key_id` and return its value; `default` when absent."""
        return self._shards[key_id % SHARDS].pop(key_id, default)

    def shards(self) -> list[dict[int, V]]:
        """Every shard, `key_id % SHARDS` indexing them: for a bulk fill that sets items itself."""
        return self._shards

    def shard(self, index: int) -> dict[int, V]:
        """Shard `index` itself (read it, do not change it): for `IdSet.copy_shard`."""
        return self._shards[index]

    def values(self) -> Iterator[V]:
        """Every value, shard by shard."""
        return chain.from_iterable(shard.values() for shard in self._shards)

    def __bool__(self) -> bool:
        return any(self._shards)
