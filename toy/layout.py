"""SDLM training layout (sdlm.md §2.5, §4): the clean sequence, then one block per response position.

For a conversation x0 (prompt + response + <|im_end|>) and block size D, every response position p
(from the "\\n" that ends `<|im_start|>assistant\\n` up to the token before <|im_end|>) gets a block

    [x_p, s_1, ..., s_{D-1}]   at position ids p, p+1, ..., p+D-1

where s_j is the mask token (a "full" block, what SDLM confidence decoding and SSD feed) or, in
"partial" blocks, either the true x_{p+j} or the mask (what fixed-block diffusion feeds after its
first pass). Row j of a block predicts x_{p+1+j} (the causal-LM shift: the head predicts the next
token). Partial blocks carry a loss only where that target is still masked in the input.

Visibility (query row -> key column), one example at a time:
  clean -> clean   causal (key index <= query index)
  block -> clean   key position < the block head's position p (the prefix strictly before x_p;
                   the block's own head is a duplicate, as at inference, not the clean original)
  block -> block   the same block only (bidirectional inside it)
  clean -> block   never
Several examples are packed into one row with block-diagonal visibility; filler positions see only
themselves so no softmax row is empty.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    position_ids: list[int]
    ar_labels: list[int]  # target at this row for the plain next-token loss (clean rows), else IGNORE
    prompt_labels: list[int]  # next-token target inside the prompt (a small auxiliary loss), else IGNORE
    block_labels: list[int]  # target at this row for the block loss (block rows), else IGNORE
    block_offset: list[int]  # j for row j of a block (0 = head), -1 for clean rows
    block_id: list[int]  # which block (0, 1, ...) a row belongs to, -1 for clean rows
    head_pos: list[int]  # block rows: position of the block head; clean rows: own position

    def __len__(self) -> int:
        return len(self.input_ids)


def build_example(x0: list[int], response_start: int, block_size: int, mask_id: int,
                  rng: random.Random | None = None, partial_frac: float = 0.0,
                  heads: list[int] | None = None) -> Example:
    """`response_start` = index of the first response token in x0; x0 ends with the EOS token.
    `heads` (default: every response position) are the block head positions p."""
    n0, D = len(x0), block_size
    if heads is None:
        heads = list(range(response_start - 1, n0 - 1))
    ex = Example(list(x0), list(range(n0)), [IGNORE] * n0, [IGNORE] * n0, [IGNORE] * n0, [-1] * n0, [-1] * n0,
                 list(range(n0)))
    for i in range(response_start - 1, n0 - 1):
        ex.ar_labels[i] = x0[i + 1]
    for i in range(response_start - 1):
        ex.prompt_labels[i] = x0[i + 1]
    for b, p in enumerate(heads):
        partial = rng is not None and rng.random() < partial_frac
        # A partial block reveals each slot with one probability drawn per block, so both nearly
        # empty and nearly full windows occur (block diffusion passes through both).
        reveal = rng.random() if partial else 0.0
        shown = [False] + [partial and rng.random() < reveal for _ in range(D - 1)]
        for j in range(D):
            q = p + j
            ex.input_ids.append(x0[p] if j == 0 else (x0[q] if shown[j] and q < n0 else mask_id))
            ex.position_ids.append(q)
            target, target_hidden = p + 1 + j, j == D - 1 or not shown[j + 1]
            ex.ar_labels.append(IGNORE)
            ex.prompt_labels.append(IGNORE)
            ex.block_labels.append(x0[target] if target < n0 and target_hidden else IGNORE)
            ex.block_offset.append(j)
            ex.block_id.append(b)
            ex.head_pos.append(p)
    return ex


def visibility(ex: Example) -> np.ndarray:
    """[L, L] bool: row i may attend to column j (the rules in the module docstring).
    numpy, not torch: these are small arrays built per example, where torch's per-op overhead dominates."""
    n = len(ex)
    idx = np.arange(n)
    pos = np.asarray(ex.position_ids)
    block = np.asarray(ex.block_id)
    head = np.asarray(ex.head_pos)
    clean = block < 0
    q_clean, k_clean = clean[:, None], clean[None, :]
    causal = k_clean & q_clean & (idx[None, :] <= idx[:, None])
    prefix = k_clean & ~q_clean & (pos[None, :] < head[:, None])
    same_block = ~q_clean & ~k_clean & (block[:, None] == block[None, :])
    return causal | prefix | same_block


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]
    visible: torch.Tensor  # [B, L, L] bool
    ar_labels: torch.Tensor  # [B, L]
    prompt_labels: torch.Tensor  # [B, L]
    block_labels: torch.Tensor  # [B, L]
    block_offset: torch.Tensor  # [B, L]

    def additive_mask(self, dtype=torch.float32) -> torch.Tensor:
        """[B, 1, L, L]: 0 where visible, finfo.min elsewhere (what stock transformers take as-is)."""
        mask = torch.zeros(self.visible.shape, dtype=dtype)
        mask.masked_fill_(~self.visible, torch.finfo(dtype).min)
        return mask[:, None]


def pack(rows: list[list[Example]], length: int, pad_id: int) -> Batch:
    """Each inner list becomes one row of `length` tokens (examples side by side, then filler)."""
    B = len(rows)
    ids = np.full((B, length), pad_id, dtype=np.int64)
    pos = np.zeros((B, length), dtype=np.int64)
    ar = np.full((B, length), IGNORE, dtype=np.int64)
    lm = np.full((B, length), IGNORE, dtype=np.int64)
    blk = np.full((B, length), IGNORE, dtype=np.int64)
    off = np.full((B, length), -1, dtype=np.int64)
    vis = np.repeat(np.eye(length, dtype=bool)[None], B, axis=0)  # filler sees itself
    for r, examples in enumerate(rows):
        start = 0
        for ex in examples:
            end = start + len(ex)
            if end > length:
                raise ValueError(f"row {r} holds {end} tokens, more than length={length}")
            ids[r, start:end] = ex.input_ids
            pos[r, start:end] = ex.position_ids
            ar[r, start:end] = ex.ar_labels
            lm[r, start:end] = ex.prompt_labels
            blk[r, start:end] = ex.block_labels
            off[r, start:end] = ex.block_offset
            vis[r, start:end, start:end] = visibility(ex)
            start = end
    return Batch(*(torch.from_numpy(a) for a in (ids, pos, vis, ar, lm, blk, off)))
