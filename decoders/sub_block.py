"""sub-block: hierarchical (sub-block) decoding from Fast-dLLM v2 (Wu et al. 2025, arXiv 2509.26328;
NVlabs/Fast-dLLM v2 `generate` / `batch_sample`, `small_block_size`), on both block engines.

Rule, per forward and row: the row's block of B slots is split into sub-blocks of b = sub_block_size
consecutive slots (the last one may be shorter), decoded left to right. The candidates are the open
slots of the leftmost sub-block that still has one; among them the threshold rule decides (the most
confident plus every one with confidence > threshold on the causal engine, >= on the canvas, as
block-diffusion compares). Later sub-blocks are scored by the same forward but wait for their turn, so
every sub-block costs at least one forward. On the block's last allowed forward (max_steps_per_block)
every open slot of the block is decided. b >= B is one sub-block: block-diffusion's threshold rule.

How it maps onto each engine:
- causal engine (SDLM window, pdbench-toy): the window is still the whole block [anchor, B-1 slots];
  sub-blocks only restrict which slots a forward may decide. The block is committed by the next
  block's first forward (merged commit), so there is no extra commit forward per block: the ceiling is
  B / ceil(B / b) tokens per forward, where Fast-dLLM v2 (a commit forward per block) has B / (B/b + 1).
- canvas engine (bidirectional LLaDA / Dream): the same candidates inside the canvas's current block;
  the caches stay per block (`cache` refreshes at a block's first forward), not Fast-dLLM v2's
  per-sub-block refresh of `use_block_cache`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decoders import register, unmask
from decoders.base import check, param
from decoders.block_diffusion import BlockEngine
from decoders.unmask import Step


def current_sub_block(open_: torch.Tensor, size: int) -> torch.Tensor:
    """open_ [A, n] bool -> [A, n] bool: the open slots of each row's leftmost sub-block (of `size` slots)
    that still has one (none for a row with no open slot)."""
    sub = torch.arange(open_.shape[1], device=open_.device) // size  # [n]: each slot's sub-block
    first_open = open_.long().argmax(dim=-1)  # [A]: the leftmost open slot (0 when none is open)
    return (sub[None, :] == sub[first_open][:, None]) & open_


@register("sub-block")
@dataclass
class SubBlock(BlockEngine):
    source = "hierarchical sub-block decoding, threshold per sub-block (Fast-dLLM v2, arXiv 2509.26328)"
    threshold: float = param(0.9, "a number in [0, 1] (1 = one token per forward)")
    sub_block_size: int = param(2, "an int >= 1: slots per sub-block (>= block_size: one sub-block, plain threshold)")
    confidence: str = param("prob", choices=("prob", "entropy"))

    def validate(self) -> None:
        super().validate()
        check(self, "threshold", isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool)
              and 0 <= self.threshold <= 1, "a number in [0, 1] (1 = one token per forward)")
        check(self, "sub_block_size", isinstance(self.sub_block_size, int) and not isinstance(self.sub_block_size, bool)
              and self.sub_block_size >= 1, "an int >= 1")

    def select(self, s: Step) -> torch.Tensor:
        return unmask.threshold_select(s, s.conf, self.threshold, current_sub_block(s.open, self.sub_block_size))
