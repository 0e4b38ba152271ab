"""hf-generate: a causal LM's own transformers `generate()`, greedy or sampled: the AR baseline exactly
as users run it, measured by pdbench (the adapter's hooks count and time every forward it makes).

Prompts of different lengths are left-padded with an attention mask, as transformers expects. A
streamer does the bookkeeping live: generate() hands it each step's tokens right after the forward
that made them, so step k of the call (k = 0 is the prefill) is the adapter's forward first + k,
and every row still running took part in it and committed one token. A row that meets EOS leaves
our batch at once (decoders/native.py: the forwards generate() runs after that, feeding it padding,
are not the row's), which makes n_forward and accepted equal to `ar`'s at any batch size.

The generation config is built from this decoder's parameters (greedy, or temperature / top-p / top-k
sampling); the checkpoint's generation_config.json fills only what is left unset, and the settings
that would change greedy output (repetition penalty, n-gram bans, a minimum length) are pinned off.
max_nfe caps the call at max_nfe new tokens (one forward each). engine="static" asks transformers
for its static cache; use_cache=False for full recompute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decoders import register
from decoders.base import Decoder, DecodeResult, ModelAdapter
from decoders.batch import Batch
from decoders.native import LastScores, hf_module, left_padded, seeded


class _CommitEachStep:
    """A transformers streamer: put(prompt ids) once, then put(tokens [B]) after every step."""

    def __init__(self, batch: Batch, first_forward: int, scores: LastScores | None):
        self.batch, self.forward, self.scores = batch, first_forward, scores
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        tokens = value.reshape(-1).tolist()  # [B], the original row order
        rows = list(self.batch.active)
        conf = None
        if self.scores is not None and self.scores.scores is not None:
            probs = self.scores.scores.float().softmax(-1)  # [B, V]
            conf = probs[torch.arange(len(tokens)), value.reshape(-1).to(probs.device)].tolist()
        self.batch.took_part(rows, self.forward)
        for r in rows:
            self.batch.commit(r, [tokens[r.index]], confidence=None if conf is None else [conf[r.index]])
        self.batch.drop_finished()
        self.forward += 1

    def end(self) -> None:
        pass


@register("hf-generate")
@dataclass
class HFGenerate(Decoder):
    source = "transformers GenerationMixin.generate() (greedy or sampled AR decoding, as shipped)"

    def generate(self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int) -> list[DecodeResult]:
        from transformers import GenerationConfig, LogitsProcessorList

        self.check_model(model)
        hf = hf_module(self, model)
        batch = Batch(model, prompts, max_new_tokens, None, self.max_nfe, self.trace)
        ids, mask = left_padded(prompts, model.pad_id, model.device)
        steps = min(max_new_tokens, self.max_nfe) if self.max_nfe else max_new_tokens
        sampled = self.temperature > 0
        config = GenerationConfig(
            max_new_tokens=steps, do_sample=sampled, num_beams=1, use_cache=self.use_cache,
            eos_token_id=list(model.eos_ids), pad_token_id=model.pad_id,
            temperature=self.temperature if sampled else None, top_p=self.top_p if sampled else None,
            top_k=self.top_k if sampled else None,
            cache_implementation="static" if self.engine == "static" else None,
            # transformers fills unset (None) fields from the checkpoint's generation_config.json: pin the
            # ones that would change greedy output, so hf-generate stays plain AR decoding
            repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
            # a static cache on CUDA would otherwise have generate() compile the forward (CUDA graphs),
            # capturing the adapter's per-forward timing hooks with it
            disable_compile=True,
        )
        scores = LastScores() if self.trace else None
        streamer = _CommitEachStep(batch, model.n_forward, scores)
        with seeded(model.device, self.seed):
            hf.generate(ids, attention_mask=mask, generation_config=config, streamer=streamer,
                        logits_processor=LogitsProcessorList([scores] if scores else []))
        return batch.results()
