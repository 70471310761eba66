"""Uneven key/value groups made even, exactly.

llama.cpp reads grouped-query attention as equal, consecutive groups: query head ``h`` of a layer with ``n_head``
query heads and ``n_head_kv`` key/value heads reads key/value head ``h // (n_head / n_head_kv)``. Pruning removes
query heads one by one, so a layer may keep three readers of one key/value head and one of another. Two exact
rewrites make the groups equal without changing a single output:

* a key/value head is written more than once (its projection rows copied), each copy serving part of its readers;
* a group is filled with padding query heads whose query rows and output-projection columns are zero: such a head
  attends somewhere, but its output is multiplied by zero, so it adds nothing.

Every group size ``g`` gives a valid rewrite; the one chosen adds the fewest projection rows (ties: the larger
``g``, i.e. fewer key/value heads and a smaller cache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Regrouping:
    """The even layout: ``kv_source[j]`` is the original key/value head written as head ``j``;
    ``query_source[i]`` the original query head written as head ``i`` (``None``: a zero padding head)."""

    group_size: int
    kv_source: list[int]
    query_source: list[int | None]

    @property
    def added_rows(self) -> int:
        """Extra heads' worth of projection rows (k and v per copied kv head, q and o per padding head)."""
        readers = sum(1 for q in self.query_source if q is not None)
        copies = len(self.kv_source) - len(set(self.kv_source))
        return 2 * copies + 2 * (len(self.query_source) - readers)


def regroup(kv_of_query: list[int]) -> Regrouping:
    """An even layout computing the same attention as ``kv_of_query`` (query head -> its key/value head)."""
    if not kv_of_query:
        return Regrouping(group_size=1, kv_source=[], query_source=[])
    readers: dict[int, list[int]] = {}
    for query, kv in enumerate(kv_of_query):
        readers.setdefault(kv, []).append(query)
    best: Regrouping | None = None
    for size in range(1, max(len(r) for r in readers.values()) + 1):
        candidate = _with_group_size(readers, size)
        if best is None or candidate.added_rows <= best.added_rows:
            best = candidate
    assert best is not None
    return best


def _with_group_size(readers: dict[int, list[int]], size: int) -> Regrouping:
    kv_source: list[int] = []
    query_source: list[int | None] = []
    for kv in sorted(readers):
        queries = readers[kv]
        for copy in range(math.ceil(len(queries) / size)):
            chunk: list[int | None] = list(queries[copy * size : (copy + 1) * size])
            kv_source.append(kv)
            query_source.extend(chunk + [None] * (size - len(chunk)))
    return Regrouping(group_size=size, kv_source=kv_source, query_source=query_source)
