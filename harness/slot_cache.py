"""A static-shape KV cache with per-row writes, for the static decode path (decoders/static.py).

Each layer owns fixed buffers [B, kv_heads, length, head_dim]. Before every forward the adapter arms
the cache (`write_next()` -> `armed_slots` [B, q], the slot each query token's key/value goes to, which
the engine gave it); the layer scatters
there and returns the whole buffers, and the engine's 4D mask decides what each query sees. Shapes
never change between decode steps, so a step can be captured and replayed (CUDA graphs), and rows
that advance at different speeds write at their own offsets, with no holes to mask.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class SlotLayer(CacheLayerMixin):
    is_compileable = True

    def __init__(self, owner: "SlotCache", shape: tuple[int, int, int, int], dtype, device):
        super().__init__()
        self.owner = owner
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.dtype, self.device = dtype, device
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:  # buffers exist from the start
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        index = self.owner.armed_slots[:, None, :, None].expand_as(key_states)  # [B, H, q, d]
        self.keys.scatter_(2, index, key_states)
        self.values.scatter_(2, index, value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[2], 0

    def get_seq_length(self) -> int:
        return 0  # positions are always passed explicitly; nothing is derived from a length

    def get_max_length(self) -> int:
        return self.keys.shape[2]


class SlotCache(Cache):
    def __init__(self, config, batch_size: int, length: int, dtype, device):
        heads = config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (batch_size, heads, length, head_dim)
        self.armed_slots = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        super().__init__(layers=[SlotLayer(self, shape, dtype, device) for _ in range(config.num_hidden_layers)])
        self.length = length

    def write_next(self, write_slots: torch.Tensor) -> None:
        """Where the next forward's keys and values go: [B, q] slot per query token."""
        self.armed_slots = write_slots
