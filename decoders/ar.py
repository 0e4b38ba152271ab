"""Autoregressive decoding with a KV cache: one token per forward, the baseline every speedup divides by."""

from __future__ import annotations

from dataclasses import dataclass

from decoders import register
from decoders.base import Decoder, DecodeResult, ModelAdapter
from decoders.batch import open_batch
from decoders.sampling import choose, make_generator


@register("ar")
@dataclass
class AR(Decoder):
    source = "autoregressive decoding with a KV cache (the baseline)"

    def generate(self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int) -> list[DecodeResult]:
        self.check_model(model)
        batch = open_batch(self, model, prompts, max_new_tokens)
        gen = make_generator(model.device, self.seed)
        while batch.active:
            logits = batch.forward([len(r.seq) for r in batch.active], None)  # [A, 1, V]
            tokens, conf = choose(logits[:, -1], self.temperature, self.top_p, self.top_k, gen)
            confs = conf.tolist() if self.trace else [None] * len(tokens)
            for row, t, c in zip(batch.active, tokens.tolist(), confs):  # the one host sync of the step
                batch.commit(row, [t], confidence=[c])
            batch.drop_finished()
        return batch.results()
