"""The static-shape engine: the same forwards and results as DynamicEngine, fixed tensor shapes.

The cache is a slot cache (harness/slot_cache.py): row b's token at position p lives in slot p, so
rows that advance at different speeds need no left padding and leave no holes. Every forward feeds
[K causal slots][W window slots] for all B rows, where K is fixed per decoder (the most tokens one
step can commit) and finished rows ride along as fillers: from the second forward on, every step has
the same shapes and the mask, positions and write slots are computed on the device from a few small
tensors, which is what CUDA-graph replay needs. The window's keys go to a scratch region at the end
of the cache that is rewritten every step; fillers write to one dump slot that no query sees.

    slots:  [0 .......... committed ......... | ... unused ... | scratch (W_max) | dump]
"""

from __future__ import annotations

import torch

from decoders.base import ModelAdapter


class StaticEngine:
    def __init__(self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int,
                 max_window: int, max_commit: int):
        self.model = model
        self.B = len(prompts)
        self.max_window, self.max_commit = max_window, max_commit
        self.length = max(len(p) for p in prompts) + max_new_tokens + max_window + 1
        self.scratch, self.dump = self.length - 1 - max_window, self.length - 1
        self.cache = model.new_static_cache(self.B, self.length)
        self.slots = torch.arange(self.length, device=model.device)

    def forward(self, rows, heads: list[int], window=None, offsets=None, window_vis=None) -> torch.Tensor:
        dev, B, S = self.model.device, self.B, self.length
        W = 0 if window is None else window.shape[1]
        if W > self.max_window:
            raise ValueError(f"window of {W} tokens exceeds the static cache's max_window={self.max_window}")
        k = [h - r.cached for h, r in zip(heads, rows)]
        K = max(self.max_commit, max(k))  # static from the first decode step on; the prefill is longer
        ids = torch.full((B, K + W), self.model.pad_id, dtype=torch.long)
        c = torch.zeros(B, dtype=torch.long)
        h = torch.zeros(B, dtype=torch.long)
        active = torch.zeros(B, dtype=torch.bool)
        for i, (r, hb, kb) in enumerate(zip(rows, heads, k)):
            ids[r.index, K - kb:K] = torch.tensor(r.seq[r.cached:hb], dtype=torch.long)
            if W:
                ids[r.index, K:] = window[i]
            c[r.index], h[r.index], active[r.index] = r.cached, hb, True
        ids, c, h, active = ids.to(dev), c.to(dev), h.to(dev), active.to(dev)

        q = torch.arange(K + W, device=dev)
        causal_q = q < K
        window_q = (~causal_q)[None, :] & active[:, None]  # [B, Q]
        valid = causal_q[None, :] & (q[None, :] >= K - (h - c)[:, None]) & active[:, None]
        win_off = offsets.to(dev) if W else torch.zeros(0, dtype=torch.long, device=dev)
        rel = torch.cat([q[:K] - K, win_off])  # causal: h-K..h-1, window: h + offset
        pos = (h[:, None] + rel[None, :]).clamp(min=0)
        scratch_slot = self.scratch + (q - K).clamp(min=0)
        write = torch.where(valid, pos, torch.where(window_q, scratch_slot[None, :], self.dump))

        s = self.slots[None, None, :]
        see_causal = (s <= pos[:, :, None]) & (s < self.scratch)
        scratch_vis = torch.zeros(K + W, S, dtype=torch.bool, device=dev)
        if W:
            scratch_vis[K:, self.scratch:self.scratch + W] = window_vis.to(dev)
        see_window = (s < h[:, None, None]) | scratch_vis[None]
        vis = torch.where(valid[:, :, None], see_causal, torch.where(window_q[:, :, None], see_window, s == 0))

        logits = self.model.forward(ids, pos, vis, self.cache, W if W else 1, write_slots=write)
        for r, hb in zip(rows, heads):
            r.cached = hb
        return logits[torch.tensor([r.index for r in rows], device=logits.device)]

    def drop(self, keep: list[int]) -> None:
        pass  # shapes stay: finished rows ride along as fillers
