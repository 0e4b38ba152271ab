"""margin-threshold: the threshold rule with the top-2 margin as the confidence it compares (Dream's
`topk_margin` confidence, HKUNLP/Dream; Kim et al. 2025, arXiv 2502.06768), on both block engines.

Rule, per forward and row: a slot's confidence is m_i = p_i(1st) - p_i(2nd), the gap between the two
most likely tokens of the distribution its proposal is drawn from (softmax of the logits; at
temperature > 0 the tempered, filtered one). Decide the open slot with the largest margin plus every
open slot with m_i > threshold (causal engine; >= on the canvas, as block-diffusion compares); on the
block's last allowed forward (max_steps_per_block) every open slot. A slot torn between two tokens has
a small margin even when their sum is large, which p(top-1) alone cannot tell. threshold = 0 decides
the whole block in one forward, as block-diffusion at threshold 0 does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decoders import register, unmask
from decoders.base import check, param
from decoders.block_diffusion import BlockEngine
from decoders.sampling import distribution
from decoders.unmask import Step


def top2_margin(probs: torch.Tensor) -> torch.Tensor:
    """probs [..., V] -> [...]: p(1st) - p(2nd)."""
    top2 = probs.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


@register("margin-threshold")
@dataclass
class MarginThreshold(BlockEngine):
    source = "top-2 margin confidence p1 - p2 under a threshold (Dream topk_margin; Kim et al. 2025, arXiv 2502.06768)"
    threshold: float = param(0.7, "a number in [0, 1]: the margin p1 - p2 a slot needs (0 = the whole block)")
    confidence: str = param("prob", "prob (fixed: the rule compares the margin, computed from the same distribution)",
                            choices=("prob",))

    def validate(self) -> None:
        super().validate()
        check(self, "threshold", isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool)
              and 0 <= self.threshold <= 1, "a number in [0, 1]")

    def select(self, s: Step) -> torch.Tensor:
        probs = distribution(s.logits, self.temperature, self.top_p, self.top_k)  # [A, k, V]
        s.conf = s.per_slot(top2_margin(probs), float("-inf")).masked_fill(~s.open, float("-inf"))  # [A, n]
        return unmask.threshold_select(s, s.conf, self.threshold)
