"""Which masked slots of a block one forward decides (specs/block_diffusion.md §3.1-3.4, §4.2): the
policy API of both block engines (decoders/block_diffusion.py: the causal-window engine and the canvas
engine of decoders/canvas.py) and the rules of `block-diffusion`. Nothing here runs the model.

A policy is a `BlockEngine.select(step)` method: each forward, both engines hand it a `Step` (the
forward's logits and proposals for the current block of A rows, the open slots, the per-row state it
keeps) and write the slots it returns. The rules of `block-diffusion` (`policy`):

    threshold  Fast-dLLM v1 / Dream `confidence_threshold`: the most confident open slot, plus every
               open slot with confidence >= threshold (at least one per forward, so a block ends); the
               causal engine's rule is strict (>), as SDLM's reference (Step.strict).
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
from dataclasses import dataclass

import torch

from decoders.sampling import distribution, draw

EPS = 1e-3  # Dream's final timestep


@dataclass
class Step:
    """What a selection policy sees of one forward: A rows (those that took part) x the n slots of their
    current block. `logits` are on the model's device; every other tensor is on `conf.device`."""

    logits: torch.Tensor  # [A, k, V] float32: the forward's logits for the block slots `scored`
    scored: torch.Tensor  # [k] long: the block slot each logits column scores (slots no row has open are not scored)
    tokens: torch.Tensor  # [A, n] long: each open slot's proposal (argmax, or a draw when temperature > 0)
    conf: torch.Tensor  # [A, n] float: the proposal's confidence (the decoder's `confidence`); -inf where closed
    open: torch.Tensor  # [A, n] bool: the slots of this row's block still masked
    step: torch.Tensor  # [A] long: forwards this row's block had before this one (0 = the block's first)
    start: list[int]  # per row: output position of the block's first slot (per-block state keys on it)
    steps: int  # forwards a block may take (max_steps_per_block, 0 = n); threshold rules decide all on the last
    state: list[dict]  # per row: whatever the policy keeps between forwards (one dict per row per generate())
    strict: bool  # thresholds compare with > (causal engine: Fast-dLLM v2, SDLM) or >= (canvas: v1, Dream)

    @property
    def last(self) -> torch.Tensor:
        """[A] bool: this is the block's last allowed forward (max_steps_per_block)."""
        return (self.step + 1 >= self.steps).to(self.open.device)

    def over(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        """x passes the threshold tau, with the engine's comparison."""
        return x > tau if self.strict else x >= tau

    def per_slot(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """values [A, k] (one per scored column) -> [A, n] on conf's device, `fill` on unscored slots."""
        out = torch.full(self.open.shape, fill, dtype=values.dtype, device=self.conf.device)
        out[:, self.scored.to(out.device)] = values.to(out.device)
        return out


def propose(logits: torch.Tensor, temperature: float, top_p: float, top_k: int, confidence: str,
            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [A, n, V] -> (tokens [A, n], confidence [A, n]), from the distribution the causal engine
    draws from (decoders/sampling.py); entropy in Dream's form."""
    probs = distribution(logits, temperature, top_p, top_k)  # [A, n, V]
    if temperature > 0:
        tokens = draw(probs, generator)
        conf = probs.gather(-1, tokens[..., None]).squeeze(-1)
    else:
        conf, tokens = probs.max(-1)
    if confidence == "entropy":
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
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                            .expand_as(order))
    return (rank < k.to(rank.device)[:, None]) & open_


def best_open(conf: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
    """[A, n] bool: each row's most confident open slot (ties: the lower slot; none for a row with none open)."""
    return top_k_open(conf, open_, torch.ones(conf.shape[0], dtype=torch.long))


def threshold_take(conf: torch.Tensor, open_: torch.Tensor, threshold: float,
                   limit: torch.Tensor | None = None) -> torch.Tensor:
    """The best open slot plus every open slot >= threshold; with `limit`, only among the limit[a] best."""
    take = best_open(conf, open_) | (open_ & (conf >= threshold))
    if limit is not None:
        take &= top_k_open(conf, open_, limit.clamp_min(1))
    return take


def threshold_select(s: Step, conf: torch.Tensor, threshold: float, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """The threshold rule every threshold-like policy shares: among `candidates` (default: the open slots),
    the most confident one plus every one whose `conf` passes `threshold` (the engine's comparison), so a
    forward decides at least one slot; on the block's last allowed forward, every open slot."""
    cand = s.open if candidates is None else candidates & s.open
    take = best_open(conf, cand) | (cand & s.over(conf, threshold))
    return take | (s.open & s.last[:, None])
