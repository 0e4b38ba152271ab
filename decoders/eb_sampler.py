"""eb-sampler: entropy-bounded unmasking (EB-sampler: Ben-Hamu et al. 2025, "Accelerated Sampling from
Masked Diffusion Models via Entropy Bounded Unmasking", arXiv 2505.24857) on both block engines.

Rule, per forward and row, over the open slots of its block: order them by confidence (`confidence`:
`entropy`, the default, is lowest entropy first, as the paper's released sampler in transformers'
DiffusionGemma and diffusers' EntropyBoundScheduler; `prob` is highest p(top-1) first) and decide the
longest prefix U of that order with

    sum_{i in U} H_i - max_{i in U} H_i <= entropy_bound          (gamma, in nats)

where H_i is the entropy of the distribution slot i's proposal is drawn from (softmax of the logits;
at temperature > 0 the tempered, filtered one). The left side bounds the mutual information among the
decided tokens, so they are nearly independent given the context and deciding them together costs
little. The first slot always qualifies (its left side is 0): at least one per forward, and
entropy_bound = 0 decides one slot per forward (two only if one has zero entropy), which is
`block-diffusion` at threshold 1 with the same `confidence`. On the block's last allowed forward
(max_steps_per_block) every open slot is decided, as block-diffusion does.

The bound leaves the largest entropy in U unbounded: with few slots per block (the toy's 4) one
uncertain slot is decided beside near-certain ones. `subtract_max = false` bounds the plain sum,
sum_{i in U} H_i <= entropy_bound (at least one slot), SDAR's `entropy_bounded` reading of the same
sampler (specs/block_diffusion.md §3.5); it is its own AUP family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decoders import register, unmask
from decoders.base import check, param
from decoders.block_diffusion import BlockEngine
from decoders.sampling import distribution
from decoders.unmask import Step


def entropy_bounded(conf: torch.Tensor, entropy: torch.Tensor, open_: torch.Tensor, bound: float,
                    subtract_max: bool = True) -> torch.Tensor:
    """conf, entropy [A, n], open_ [A, n] bool -> [A, n] bool: the longest prefix of the open slots in
    confidence order (ties: the lower slot) whose entropies sum to at most `bound` (plus their largest
    when subtract_max), and at least the first."""
    order = conf.masked_fill(~open_, float("-inf")).argsort(dim=-1, descending=True, stable=True)  # [A, n]
    is_open = open_.gather(-1, order)
    h = entropy.gather(-1, order).masked_fill(~is_open, 0.0)  # [A, n] in decision order
    total = h.cumsum(-1) - (h.cummax(-1).values if subtract_max else 0.0)  # only grows along the order
    fits = (total <= bound) & is_open
    k = fits.long().cumprod(-1).sum(-1).clamp_min(1)  # [A]: the prefix length, at least one slot
    return unmask.top_k_open(conf, open_, k)


@register("eb-sampler")
@dataclass
class EBSampler(BlockEngine):
    source = "EB-sampler, entropy-bounded unmasking (Ben-Hamu et al. 2025, arXiv 2505.24857)"
    entropy_bound: float = param(0.1, "a number >= 0, in nats (0 = one token per forward)")
    subtract_max: bool = param(True, "true: sum H - max H <= bound (the paper, DiffusionGemma) | false: sum H <= bound "
                                     "(SDAR's entropy_bounded)")
    confidence: str = param("entropy", "entropy (lowest entropy first) | prob (highest p first): the order slots "
                                       "are taken in", choices=("entropy", "prob"))

    def validate(self) -> None:
        super().validate()
        check(self, "entropy_bound", isinstance(self.entropy_bound, (int, float))
              and not isinstance(self.entropy_bound, bool) and self.entropy_bound >= 0, "a number >= 0 (nats)")
        check(self, "subtract_max", isinstance(self.subtract_max, bool), "true or false")

    def select(self, s: Step) -> torch.Tensor:
        probs = distribution(s.logits, self.temperature, self.top_p, self.top_k)  # [A, k, V]
        entropy = s.per_slot(-(probs * probs.clamp_min(1e-30).log()).sum(-1))  # [A, n] nats
        take = entropy_bounded(s.conf, entropy, s.open, float(self.entropy_bound), self.subtract_max)
        return take | (s.open & s.last[:, None])
