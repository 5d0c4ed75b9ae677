from __future__ import annotations

import pytest

from exlsp.runtime.lanes import LanePool, common_prefix_len


@pytest.mark.parametrize(
    ("a", "b", "n"),
    [([], [1], 0), ([1, 2, 3], [1, 2, 4], 2), (list(range(1000)), list(range(1000)), 1000),
     (list(range(600)), list(range(599)) + [7], 599)],
)
def test_common_prefix_len(a, b, n):
    assert common_prefix_len(a, b) == n


def test_longest_prefix_wins_and_ties_go_to_lru():
    pool = LanePool(3)
    pool.lanes[0].tokens = list(range(100))
    pool.lanes[1].tokens = list(range(50))
    pool.touch(pool.lanes[0])
    lane, reuse = pool.route("default", list(range(80)) + [999])
    assert (lane.index, reuse) == (0, 80)
    lane, reuse = pool.route("default", list(range(40)) + [999])
    assert lane.index == 1 and reuse == 40  # tie at 40: lane 1 was used less recently


def test_tiny_overlap_takes_an_empty_lane():
    pool = LanePool(2)
    pool.lanes[0].tokens = [1, 2, 3, 4]
    lane, reuse = pool.route("default", [1, 2] + [9] * 10)
    assert lane.index == 1 and reuse == 0


def test_groups_keep_lanes_apart():
    pool = LanePool(3, {"completion": 2, "chat": 1})
    pool.lanes[0].tokens = list(range(100))
    lane, reuse = pool.route("chat", list(range(100)))
    assert lane.group == "chat" and reuse == 0
    lane, _ = pool.route("unknown-group", [1])
    assert lane in pool.lanes  # no default group: any lane


def test_bad_group_sizes_are_refused():
    with pytest.raises(ValueError):
        LanePool(3, {"a": 1, "b": 1})
