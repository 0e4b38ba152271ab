"""Which masked slots of a block one forward decides (specs/block_diffusion.md §3.1-3.4, §4.2), for the
canvas engine (decoders/canvas.py). Every function sees one forward's scores for the current block of
A rows and returns what to write; nothing here runs the model.

    threshold  Fast-dLLM v1 / Dream `confidence_threshold`: the most confident open slot, plus every
               open slot with confidence >= threshold (at least one per forward, so a block ends).
    steps      LLaDA's low-confidence schedule: the block's open slots split evenly over `steps`
               forwards (remainder on the first ones); each forward decides its k most confident.
    timesteps  Dream's schedule: forward i of `steps` decides int(n * (1 - s/t)) of the n open slots,
               t, s = linspace(1, 1e-3, steps + 1)[i, i + 1], computed in float32 as the reference does
               (so some forwards decide nothing); the last decides all that is left.
    quota      Dream's non-block `confidence_threshold`: forward i may decide up to n0 // steps slots
               plus the quota earlier forwards left unused; inside it, the best one and those >= threshold.

Confidence: `prob` = p(token) (a float32 softmax, as Dream; LLaDA's float64 only moves knife edges,
and costs as much as the model's forward on a 126k vocabulary), `entropy` = 1 - H(p) / log V (ranks like
Dream's negative entropy), `random` = uniform (LLaDA's random remasking; schedules only).
"""

from __future__ import annotations

import math

import torch

from decoders.sampling import choose

EPS = 1e-3  # Dream's final timestep


def propose(logits: torch.Tensor, temperature: float, top_p: float, top_k: int, confidence: str,
            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [A, n, V] -> (tokens [A, n], confidence [A, n])."""
    if temperature > 0:
        tokens, conf = choose(logits, temperature, top_p, top_k, generator, "prob")
        probs = None
    else:
        probs = logits.softmax(-1)
        conf, tokens = probs.max(-1)
    if confidence == "entropy":
        probs = probs if probs is not None else logits.softmax(-1)
        neg_entropy = (probs * torch.log(probs + 1e-10)).sum(-1)  # Dream's form, eps included
        conf = 1.0 + neg_entropy / math.log(logits.shape[-1])
    elif confidence == "random":
        conf = torch.rand(conf.shape, generator=generator, device=conf.device)
    return tokens, conf


def even_split(n: int, steps: int) -> list[int]:
    """LLaDA's per-step counts: n // steps each, one more on the first n % steps steps."""
    return [n // steps + (1 if i < n % steps else 0) for i in range(steps)]


def timestep_count(n_open: int, step: int, steps: int) -> int:
    """Dream's count for forward `step` (0-based) of `steps`, in float32 as the reference computes it."""
    if step >= steps - 1:
        return n_open
    t = torch.linspace(1, EPS, steps + 1)
    return int(torch.tensor(float(n_open)) * (1 - t[step + 1] / t[step]))


def top_k_open(conf: torch.Tensor, open_: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[A, n] bool: the k[a] most confident open slots of each row (ties: the lower slot)."""
    ranked = conf.masked_fill(~open_, float("-inf"))
    order = ranked.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1]).expand_as(order))
    return (rank < k[:, None]) & open_


def threshold_take(conf: torch.Tensor, open_: torch.Tensor, threshold: float,
                   limit: torch.Tensor | None = None) -> torch.Tensor:
    """The best open slot plus every open slot >= threshold; with `limit`, only among the limit[a] best."""
    best = top_k_open(conf, open_, torch.ones(conf.shape[0], dtype=torch.long))
    take = best | (open_ & (conf >= threshold))
    if limit is not None:
        take &= top_k_open(conf, open_, limit.clamp_min(1))
    return take
