"""NSGA-II over the space's integer encoding: maximise accuracy, minimise latency, under a budget.

Small pure functions: Pareto dominance (with Deb's constraint rule: a candidate within the
latency budget beats one over it; of two over it, the smaller excess wins), fast
non-dominated sorting, crowding distance, survivor selection, binary tournaments and
offspring proposal (stage-wise crossover + mutation). Every random choice comes from the
`numpy.random.Generator` passed in, so a search is deterministic given its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gpunet.search.space import SearchSpace


@dataclass(frozen=True)
class Point:
    """One evaluated candidate as the optimizer sees it."""

    latency_ms: float
    accuracy: float
    budget_ms: float = float("inf")

    @property
    def violation(self) -> float:
        return max(0.0, self.latency_ms - self.budget_ms)


def dominates(a: Point, b: Point) -> bool:
    """Constrained Pareto dominance (lower latency, higher accuracy)."""
    va, vb = a.violation, b.violation
    if va == 0 and vb > 0:
        return True
    if va > 0 or vb > 0:
        return va < vb
    return (a.latency_ms <= b.latency_ms and a.accuracy >= b.accuracy
            and (a.latency_ms < b.latency_ms or a.accuracy > b.accuracy))


def non_dominated_sort(points: Sequence[Point]) -> list[list[int]]:
    """Deb's fast non-dominated sort: fronts of indices, best first."""
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]
    count = [0] * n
    fronts: list[list[int]] = [[]]
    for i in range(n):
        for j in range(n):
            if i != j and dominates(points[i], points[j]):
                dominated_by[i].append(j)
            elif i != j and dominates(points[j], points[i]):
                count[i] += 1
        if count[i] == 0:
            fronts[0].append(i)
    k = 0
    while fronts[k]:
        nxt = []
        for i in fronts[k]:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(j)
        k += 1
        fronts.append(sorted(nxt))
    return fronts[:-1]


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points, by increasing latency."""
    if not points:
        return []
    front = non_dominated_sort(points)[0]
    return sorted(front, key=lambda i: (points[i].latency_ms, -points[i].accuracy, i))


def crowding_distance(points: Sequence[Point], front: Sequence[int]) -> dict[int, float]:
    dist = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: float("inf") for i in front}
    for get in (lambda p: p.latency_ms, lambda p: p.accuracy):
        order = sorted(front, key=lambda i: (get(points[i]), i))
        lo, hi = get(points[order[0]]), get(points[order[-1]])
        dist[order[0]] = dist[order[-1]] = float("inf")
        if hi == lo:
            continue
        for a, i, b in zip(order, order[1:], order[2:], strict=False):
            dist[i] += (get(points[b]) - get(points[a])) / (hi - lo)
    return dist


def select_survivors(points: Sequence[Point], k: int) -> list[int]:
    """NSGA-II environmental selection: whole fronts, then the least crowded of the last one."""
    chosen: list[int] = []
    for front in non_dominated_sort(points):
        if len(chosen) + len(front) <= k:
            chosen += front
            continue
        crowd = crowding_distance(points, front)
        chosen += sorted(front, key=lambda i: (-crowd[i], i))[: k - len(chosen)]
        break
    return chosen


def rank_and_crowding(points: Sequence[Point]) -> tuple[dict[int, int], dict[int, float]]:
    rank: dict[int, int] = {}
    crowd: dict[int, float] = {}
    for r, front in enumerate(non_dominated_sort(points)):
        crowd.update(crowding_distance(points, front))
        for i in front:
            rank[i] = r
    return rank, crowd


def tournament(rng: np.random.Generator, rank: dict[int, int], crowd: dict[int, float], members: Sequence[int]) -> int:
    a, b = (members[int(i)] for i in rng.integers(len(members), size=2))
    if rank[a] != rank[b]:
        return a if rank[a] < rank[b] else b
    return a if crowd[a] >= crowd[b] else b


def propose(space: SearchSpace, rng: np.random.Generator, n: int, *,
            parents: Sequence[np.ndarray] = (), parent_points: Sequence[Point] = (),
            accept: Callable[[np.ndarray], bool] = lambda v: True, max_tries: int = 200,
            mutation_rate: float | None = None) -> list[np.ndarray]:
    """`n` new vectors: uniform samples when there are no parents, else tournament + crossover + mutation.

    `accept(v)` rejects a proposal (already evaluated, predicted over budget, ...); after
    `max_tries` rejections in a row the last proposal is skipped, so fewer than `n` may return.
    """
    out: list[np.ndarray] = []
    seen: set[bytes] = set()
    members = list(range(len(parents)))
    rank, crowd = rank_and_crowding(parent_points) if parents else ({}, {})
    tries = 0
    while len(out) < n and tries < max_tries * max(1, n):
        tries += 1
        if parents:
            p1 = parents[tournament(rng, rank, crowd, members)]
            p2 = parents[tournament(rng, rank, crowd, members)]
            child = space.crossover(p1, p2, rng) if rng.random() < 0.9 else np.asarray(p1).copy()
            v = space.mutate(child, rng, mutation_rate)
        else:
            v = space.sample(rng)
        key = v.tobytes()
        if key in seen or not accept(v):
            continue
        seen.add(key)
        out.append(v)
    return out
