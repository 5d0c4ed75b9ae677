"""KV cache lanes: which tokens each lane's cache holds, and which lane a new prompt should use.

The backend owns the caches; this module owns the book-keeping. A prompt goes to the lane (of its
group) that shares the longest token prefix with it, so only the new suffix is prefilled.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Mapping, Sequence

# Below this many shared tokens a lane's content is not worth sacrificing when an empty lane is free.
MIN_USEFUL_PREFIX = 16


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    # Compare in blocks first: prompts share thousands of tokens, and slice equality runs in C.
    step = 256
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Lane:
    index: int
    group: str
    tokens: list[int] = field(default_factory=list)
    last_used: int = 0
    hits: int = 0


class LanePool:
    """Lanes partitioned into groups. ``groups`` maps a group name to its lane count; a request
    whose group is unknown uses the "default" group (or every lane if there is none)."""

    def __init__(self, n_lanes: int, groups: Mapping[str, int] | None = None) -> None:
        groups = dict(groups or {"default": n_lanes})
        if sum(groups.values()) != n_lanes or any(v < 1 for v in groups.values()):
            raise ValueError(f"lane groups {groups} must give each group >= 1 lane and sum to {n_lanes}")
        self._clock = itertools.count(1)
        self.lanes: list[Lane] = []
        for name, count in groups.items():
            for _ in range(count):
                self.lanes.append(Lane(index=len(self.lanes), group=name))

    def members(self, group: str) -> list[Lane]:
        lanes = [lane for lane in self.lanes if lane.group == group]
        if not lanes:
            lanes = [lane for lane in self.lanes if lane.group == "default"] or self.lanes
        return lanes

    def route(self, group: str, prompt: Sequence[int], *, reuse: bool = True) -> tuple[Lane, int]:
        """The free lane to run ``prompt`` on and how many of its tokens are reusable.

        Longest common prefix wins; ties go to the least recently used lane. When the best
        match is tiny (short and under half the prompt) and an empty lane exists, the empty lane is used so a warm lane keeps its
        cache. Lanes are never held across jobs: a pre-empted job finds its lane again here.
        """
        free = self.members(group)
        if not reuse:
            lane = min(free, key=lambda la: la.last_used)
            return lane, 0
        scored = [(common_prefix_len(lane.tokens, prompt), lane) for lane in free]
        best_len = max(s for s, _ in scored)
        if best_len < MIN_USEFUL_PREFIX and best_len * 2 < len(prompt):
            empty = [lane for lane in free if not lane.tokens]
            if empty:
                return empty[0], 0
        lane = min((la for s, la in scored if s == best_len), key=lambda la: la.last_used)
        return lane, best_len

    def touch(self, lane: Lane) -> None:
        lane.last_used = next(self._clock)

    def stats(self) -> list[dict[str, object]]:
        return [
            {"lane": la.index, "group": la.group, "tokens": len(la.tokens), "hits": la.hits}
            for la in self.lanes
        ]

    def clear(self) -> None:
        for lane in self.lanes:
            lane.tokens.clear()
