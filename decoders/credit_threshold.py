"""credit-threshold: dInfer's credit decoder (inclusionAI/dInfer, `CreditThresholdParallelDecoder`;
specs/block_diffusion.md §3.7, §4.2), on both block engines.

Rule, per row and block: a credit matrix C [n, V], zero when the block starts. Each forward, over the
block's slots:

    C <- decay_beta * C;   C[i, x_i] += p_i(x_i) ** boost_gamma   for every open slot i, x_i its argmax
    fused logits  z'_i = z_i + credit_alpha * log(1 + C_i)
    proposal x'_i = argmax z'_i,   confidence c_i = softmax(z'_i)[x'_i]

then the threshold rule on c: the most confident open slot plus every open one with c > threshold
(causal engine; >= on the canvas, as block-diffusion compares); on the block's last allowed forward
every open slot. A token that stays a slot's argmax forward after forward accumulates credit (a
decaying sum of its boosted probabilities) and passes the threshold sooner; when the argmax changes,
the new token starts from its own credit (zero if it never led) while the old one's decays, and may
still win the fused argmax. credit_alpha = 0 is block-diffusion's threshold rule exactly.

Differences from dInfer, stated: greedy only (dInfer samples by adding Gumbel noise to the fused
logits); dInfer's threshold test is c >= min(threshold, max c - 1e-5), so slots within 1e-5 of the
best also pass, and it never decides a slot whose proposal is the mask token; here the engine's
threshold rule applies, the one every block policy shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decoders import register, unmask
from decoders.base import check, param
from decoders.block_diffusion import BlockEngine
from decoders.unmask import Step


def credit_step(logits: torch.Tensor, credit: torch.Tensor, open_: torch.Tensor, alpha: float, gamma: float,
                beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits, credit [A, k, V], open_ [A, k] bool -> (new credit [A, k, V], tokens [A, k], conf [A, k])."""
    z = logits.float()
    p1, top1 = z.softmax(-1).max(-1)  # [A, k]
    credit = credit * beta
    credit.scatter_add_(-1, top1[..., None], (p1.pow(gamma) * open_)[..., None])
    fused = z + alpha * torch.log1p(credit)
    conf, tokens = fused.softmax(-1).max(-1)
    return credit, tokens, conf


@register("credit-threshold")
@dataclass
class CreditThreshold(BlockEngine):
    source = "credit decoding: EMA credit of a slot's lasting argmax fused into its logits (dInfer, inclusionAI/dInfer)"
    threshold: float = param(0.9, "a number in [0, 1]: the fused confidence a slot needs (1 = one token per forward)")
    credit_alpha: float = param(0.7, "a number >= 0: weight of log(1 + credit) in the fused logits (0 = plain threshold)")
    boost_gamma: float = param(0.2, "a number >= 0: credit added per forward is p(argmax) ** boost_gamma")
    decay_beta: float = param(0.8, "a number in [0, 1]: credit kept from one forward to the next")
    confidence: str = param("prob", "prob (fixed: the fused p(argmax))", choices=("prob",))

    def validate(self) -> None:
        super().validate()
        def number(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool)
        check(self, "threshold", number(self.threshold) and 0 <= self.threshold <= 1, "a number in [0, 1]")
        check(self, "credit_alpha", number(self.credit_alpha) and self.credit_alpha >= 0, "a number >= 0")
        check(self, "boost_gamma", number(self.boost_gamma) and self.boost_gamma >= 0, "a number >= 0")
        check(self, "decay_beta", number(self.decay_beta) and 0 <= self.decay_beta <= 1, "a number in [0, 1]")
        check(self, "temperature", self.temperature == 0,
              "0 (credit-threshold is greedy; dInfer's Gumbel sampling over fused logits is not reproduced)")

    def select(self, s: Step) -> torch.Tensor:
        A, n = s.open.shape
        V, dev = s.logits.shape[-1], s.logits.device
        for st, start in zip(s.state, s.start):  # a row's credit lives for one block
            if st.get("block") != start:
                st["block"], st["credit"] = start, torch.zeros(n, V, device=dev)
        cols = s.scored.to(dev)
        credit = torch.stack([st["credit"] for st in s.state])  # [A, n, V]
        scored, tokens, conf = credit_step(s.logits, credit[:, cols], s.open[:, s.scored].to(dev),
                                           self.credit_alpha, self.boost_gamma, self.decay_beta)
        credit[:, cols] = scored
        for a, st in enumerate(s.state):
            st["credit"] = credit[a]
        s.tokens = s.per_slot(tokens, -1)
        s.conf = s.per_slot(conf, float("-inf")).masked_fill(~s.open, float("-inf"))
        return unmask.threshold_select(s, s.conf, self.threshold)
