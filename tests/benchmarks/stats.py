"""Statistics the benchmarks report with their numbers."""

from __future__ import annotations

from math import comb


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of what `values` sample: the
    k-th smallest and the k-th largest value, with k the largest rank for which fewer than k
    of n values fall below the median with probability at most (1 - confidence) / 2 (each
    value lies below it with probability 1/2, whatever the distribution). Its coverage is at
    least `confidence`. None when there are too few values for any such interval (fewer
    than 6 at 95%)."""
    n, tail = len(values), (1 - confidence) / 2
    k, below = 0, 0.0  # below: the probability that fewer than k values fall below
    while k < n and below + comb(n, k) / 2**n <= tail:
        below += comb(n, k) / 2**n
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]
