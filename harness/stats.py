"""The statistics behind the report's intervals: one definition each.

    wilson(p, n)                          95% interval of an accuracy over n distinct samples
    mcnemar_p(b, c)                       exact two-sided McNemar on the discordant pairs
    throughput_interval(tokens, walls)    Σ tokens / Σ seconds over batches, with a 95% bootstrap
                                          interval that resamples whole batches
    paired_speedup(pairs)                 (Σ tok / Σ s of a cell) ÷ (Σ tok / Σ s of its AR cell) over
                                          batches holding the same samples, with a 95% bootstrap
                                          interval that resamples batch *pairs*

Batches, not samples, are the unit of resampling: a batch's samples share one wall time. Pairing
means each resample keeps a decoder batch together with the AR batch that decoded the same prompts
next to it in time, so load that hit both cancels in the ratio, which is why the paired interval is
narrower than the two throughputs' intervals would suggest. The bootstrap is seeded: the same
stored rows always give the same interval.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 4000
MIN_BATCHES = 3  # fewer resampling units than this give no interval


def wilson(p: float, n: int) -> tuple[float, float]:
    if n == 0 or math.isnan(p):
        return float("nan"), float("nan")
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return min(lo, p), max(hi, p)  # rounding must not put p outside its own interval


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar (binomial on the discordant pairs)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def throughput_interval(tokens, walls, seed: int = 0) -> tuple[float, float, float]:
    """-> (Σ tokens / Σ walls, low, high); the bounds are NaN with fewer than MIN_BATCHES batches."""
    tokens, walls = np.asarray(tokens, dtype=float), np.asarray(walls, dtype=float)
    if len(tokens) == 0 or walls.sum() <= 0:
        return float("nan"), float("nan"), float("nan")
    estimate = float(tokens.sum() / walls.sum())
    if len(tokens) < MIN_BATCHES:
        return estimate, float("nan"), float("nan")
    pick = np.random.default_rng(seed).integers(0, len(tokens), size=(BOOTSTRAP_RESAMPLES, len(tokens)))
    return (estimate, *_percentiles(tokens[pick].sum(1) / walls[pick].sum(1)))


def paired_speedup(pairs, seed: int = 0) -> tuple[float, float, float]:
    """pairs: rows of (tokens, wall) of a batch and (tokens, wall) of the AR batch with the same samples:
    [(tok, s, ar_tok, ar_s), ...] -> (speedup, low, high), bounds NaN with fewer than MIN_BATCHES pairs."""
    a = np.asarray(pairs, dtype=float).reshape(-1, 4)
    if len(a) == 0 or a[:, 1].sum() <= 0 or a[:, 3].sum() <= 0 or a[:, 2].sum() <= 0:
        return float("nan"), float("nan"), float("nan")

    def ratio(rows: np.ndarray) -> np.ndarray:  # rows [..., n, 4]
        return (rows[..., 0].sum(-1) / rows[..., 1].sum(-1)) / (rows[..., 2].sum(-1) / rows[..., 3].sum(-1))

    estimate = float(ratio(a))
    if len(a) < MIN_BATCHES:
        return estimate, float("nan"), float("nan")
    pick = np.random.default_rng(seed).integers(0, len(a), size=(BOOTSTRAP_RESAMPLES, len(a)))
    return (estimate, *_percentiles(ratio(a[pick])))


def half_width(estimate: float, low: float, high: float) -> float:
    """The interval's larger side as a fraction of the estimate (0.1 = ±10%); NaN without one."""
    if any(math.isnan(x) for x in (estimate, low, high)) or estimate <= 0:
        return float("nan")
    return max(high - estimate, estimate - low) / estimate
