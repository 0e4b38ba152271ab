"""SDLM decoders (Sequential Diffusion Language Models, arXiv 2509.24007; specs/sdlm.md §3).

Both decoders predict D tokens per forward from a window [head, M, ..., M]: the head is the last
committed token, the D-1 masks follow it, the window is bidirectional and sees the committed prefix
before the head. Window row j predicts the token j+1 places after the head (shift by one).

sdlm-conf keeps the longest prefix whose confidence is > threshold (at least one token).
sdlm-ssd (self-speculative) keeps exactly what first-token-only decoding (threshold >= 1) would emit,
verifying the D-1 mask predictions in one packed forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from decoders import register
from decoders.base import Decoder, DecodeResult, ModelAdapter, check, param
from decoders.batch import Batch, open_batch
from decoders.sampling import choose, make_generator


def longest_confident_prefix(conf: torch.Tensor, threshold: float, room: torch.Tensor) -> torch.Tensor:
    """conf [A, D] -> accepted count [A]: leading run of conf > threshold (strict), at least 1,
    at most room (tokens left before max_new_tokens)."""
    run = (conf > threshold).long().cumprod(dim=-1).sum(dim=-1)
    return torch.minimum(run.clamp(min=1), room)


@dataclass
class _SDLMBase(Decoder):
    block_size: int = param(4, "an int >= 1 (D: tokens predicted per forward)")

    def validate(self) -> None:
        super().validate()
        check(self, "block_size", isinstance(self.block_size, int) and self.block_size >= 1, "an int >= 1")

    @property
    def needs_mask_token(self) -> bool:  # D = 1 has no mask slot
        return self.block_size > 1

    def first_window(self, batch: Batch, mask_id: int) -> torch.Tensor:
        """[A, D]: each row's last committed token followed by D-1 masks."""
        heads = torch.tensor([[r.seq[-1]] for r in batch.active], dtype=torch.long)
        return torch.cat([heads, torch.full((len(heads), self.block_size - 1), mask_id)], dim=1)


@register("sdlm-conf")
@dataclass
class SDLMConfidence(_SDLMBase):
    source = "SDLM confidence decoding (Sequential Diffusion Language Models, arXiv 2509.24007)"
    threshold: float = param(0.98, "a number in [0, 1] (1 = first token only)")
    confidence: str = param("prob", choices=("prob", "entropy"))

    def validate(self) -> None:
        super().validate()
        check(self, "threshold", isinstance(self.threshold, (int, float)) and 0 <= self.threshold <= 1,
              "a number in [0, 1] (1 = first token only)")

    def generate(self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int) -> list[DecodeResult]:
        self.check_model(model)
        D = self.block_size
        batch = open_batch(self, model, prompts, max_new_tokens, max_window=D, max_commit=D)
        gen = make_generator(model.device, self.seed)
        offsets, vis = torch.arange(D), torch.ones(D, D, dtype=torch.bool)
        while batch.active:
            window = self.first_window(batch, model.mask_id if D > 1 else 0)
            logits = batch.forward([len(r.seq) - 1 for r in batch.active], window, offsets, vis)  # [A, D, V]
            tokens, conf = choose(logits, self.temperature, self.top_p, self.top_k, gen, self.confidence)
            room = torch.tensor([batch.remaining(r) for r in batch.active], device=conf.device)
            n_keep = longest_confident_prefix(conf, self.threshold, room)
            confs = conf.tolist() if self.trace else [None] * len(tokens)
            for row, toks, n, cf in zip(batch.active, tokens.tolist(), n_keep.tolist(), confs):  # one host sync
                batch.commit(row, toks[:n], confidence=cf[:n] if cf else None)
            batch.drop_finished()
        return batch.results()


@lru_cache(maxsize=None)
def packed_verify_layout(D: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The packed verify window of specs/sdlm.md §3.5, without the dead duplicate token.

    Segment i (i = 0..D-1) is [d_0 .. d_i, M x (D-1)] at offsets 0 .. i+D-1 from the head d_0. Within a
    segment the drafts d_0..d_{i-1} are causal and the block [d_i, M...] is bidirectional and sees
    them; segments never see each other. Returns
      draft_slot [W]: which draft fills each slot (-1 for a mask),
      offsets    [W]: position offset of each slot,
      vis     [W, W]: query slot -> key slot visibility,
      block_start [D]: index of segment i's block head (row d_i) in the window.
    """
    draft_slot, offsets, segment, block_row = [], [], [], []
    block_start = []
    for i in range(D):
        for j in range(i + D):
            draft_slot.append(j if j <= i else -1)
            offsets.append(j)
            segment.append(i)
            block_row.append(j >= i)
        block_start.append(len(draft_slot) - D)
    W = len(offsets)
    seg = torch.tensor(segment)
    off = torch.tensor(offsets)
    in_block = torch.tensor(block_row)
    same = seg[:, None] == seg[None, :]
    causal = off[None, :] <= off[:, None]
    both_block = in_block[:, None] & in_block[None, :]
    vis = same & (causal | both_block)
    assert W == D * (D - 1) // 2 + D * D
    return torch.tensor(draft_slot), off, vis, torch.tensor(block_start)


@register("sdlm-ssd")
@dataclass
class SDLMSelfSpeculative(_SDLMBase):
    """Self-speculative SDLM: lossless with respect to first-token-only decoding with the same D.

    Draft d_0 is always a block-head prediction (from the previous forward), so it is committed when
    it is made. A verify forward runs all D segments at once; draft d_i (i >= 1) is accepted iff it
    equals the head prediction of segment i-1 (context: committed + d_0..d_{i-1}) and every earlier
    draft was accepted. With m drafts accepted, segment m's head prediction is what first-token-only
    decoding emits next: it is committed too, and segment m's D predictions are the next draft.
    """

    source = "SDLM self-speculative decoding (Sequential Diffusion Language Models, arXiv 2509.24007)"

    def generate(self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int) -> list[DecodeResult]:
        self.check_model(model)
        D = self.block_size
        mask_id = model.mask_id if D > 1 else 0
        slot, verify_offsets, verify_vis, block_start = packed_verify_layout(D)
        batch = open_batch(self, model, prompts, max_new_tokens, max_window=len(slot), max_commit=D)
        gen = make_generator(model.device, self.seed)
        # Prefill: the plain SDLM window; its head prediction is d_0, its mask predictions the drafts.
        logits = batch.forward([len(r.seq) - 1 for r in batch.active], self.first_window(batch, mask_id),
                               torch.arange(D), torch.ones(D, D, dtype=torch.bool))
        draft, conf = choose(logits, self.temperature, self.top_p, self.top_k, gen)  # [A, D]
        drafts = {}
        for row, d, c in zip(batch.active, draft.tolist(), conf[:, 0].tolist()):
            batch.commit(row, d[:1], confidence=[c])
            drafts[row.index] = d
        batch.drop_finished()

        is_draft = slot >= 0
        rows = (block_start[:, None] + torch.arange(D)[None, :]).to(model.device)  # [D segments, D block rows]
        while batch.active:
            d = torch.tensor([drafts[r.index] for r in batch.active], dtype=torch.long)  # [A, D]
            window = torch.full((len(d), len(slot)), mask_id, dtype=torch.long)
            window[:, is_draft] = d[:, slot[is_draft]]
            logits = batch.forward([len(r.seq) - 1 for r in batch.active], window, verify_offsets, verify_vis)
            pred, conf = choose(logits[:, rows], self.temperature, self.top_p, self.top_k, gen)  # [A, D, D]
            heads = pred[:, :, 0]  # [A, D]: head prediction of segment i = token after d_i
            head_conf = conf[:, :, 0].tolist() if self.trace else [None] * len(d)
            match = (d[:, 1:].to(heads.device) == heads[:, :-1]).long().cumprod(dim=-1)  # d_i vs head of i-1
            m = match.sum(dim=-1)  # drafts accepted beyond d_0
            next_draft = pred[torch.arange(len(d), device=pred.device), m]  # [A, D]: segment m's predictions
            for row, dr, mm, nd, hc in zip(batch.active, d.tolist(), m.tolist(), next_draft.tolist(), head_conf):
                # accepted d_i is segment i-1's head prediction, the bonus segment m's: confidences hc[:m+1]
                batch.commit(row, dr[1:1 + mm] + nd[:1], confidence=hc[:mm + 1] if hc else None)
                drafts[row.index] = nd
            batch.drop_finished()
        return batch.results()
