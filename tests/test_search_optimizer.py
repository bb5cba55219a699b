"""NSGA-II pieces: dominance with the budget constraint, fronts, selection, deterministic proposals."""

from __future__ import annotations

import numpy as np

from gpunet.search.optimizer import Point, dominates, non_dominated_sort, pareto_front, propose, select_survivors
from gpunet.search.space import tiny_space


def _points(n: int, seed: int, budget: float = float("inf")) -> list[Point]:
    rng = np.random.default_rng(seed)
    return [Point(float(a), float(b), budget) for a, b in zip(rng.random(n) * 10, rng.integers(0, 30, n), strict=True)]


def test_front_is_non_dominated_and_dominates_the_rest() -> None:
    for seed in range(20):
        pts = _points(40, seed)
        front = pareto_front(pts)
        assert front
        for i in front:
            assert not any(dominates(p, pts[i]) for p in pts)
        for j in set(range(len(pts))) - set(front):
            assert any(dominates(pts[i], pts[j]) for i in front)
        lat = [pts[i].latency_ms for i in front]
        acc = [pts[i].accuracy for i in front]
        assert lat == sorted(lat) and acc == sorted(acc)


def test_sort_partitions_into_ranked_fronts() -> None:
    pts = _points(50, 1)
    fronts = non_dominated_sort(pts)
    assert sorted(i for f in fronts for i in f) == list(range(50))
    for r, f in enumerate(fronts[1:], start=1):
        for j in f:  # everyone in front r is dominated by someone in front r-1
            assert any(dominates(pts[i], pts[j]) for i in fronts[r - 1])


def test_budget_constraint() -> None:
    fast_bad, slow_good = Point(1.0, 10.0, budget_ms=5.0), Point(9.0, 90.0, budget_ms=5.0)
    assert dominates(fast_bad, slow_good) and not dominates(slow_good, fast_bad)
    assert dominates(Point(6.0, 1.0, 5.0), Point(7.0, 99.0, 5.0))  # both over: the smaller excess wins
    pts = _points(30, 2, budget=5.0)
    assert all(pts[i].latency_ms <= 5.0 for i in pareto_front(pts))


def test_survivor_selection() -> None:
    pts = _points(30, 3)
    chosen = select_survivors(pts, 10)
    assert len(chosen) == len(set(chosen)) == 10
    assert set(non_dominated_sort(pts)[0]) <= set(chosen) or len(non_dominated_sort(pts)[0]) > 10


def test_proposals_are_deterministic_and_respect_accept() -> None:
    space = tiny_space()

    def run(seed: int) -> list[list[int]]:
        rng = np.random.default_rng(seed)
        parents = propose(space, rng, 6)
        pts = _points(6, seed)
        kids = propose(space, rng, 6, parents=parents, parent_points=pts,
                       accept=lambda v: int(v[-1]) != 2)  # e.g. "predicted over budget"
        return [v.tolist() for v in parents + kids]

    a, b = run(11), run(11)
    assert a == b and a != run(12)
    assert all(v[-1] != 2 for v in a[6:])
    assert len({tuple(v) for v in a[6:]}) == len(a[6:])
