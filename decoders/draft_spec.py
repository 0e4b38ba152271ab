"""Speculative decoding with a small causal LM as drafter (Leviathan et al. 2023; Chen et al. 2023).

Each round the drafter proposes up to draft_len tokens autoregressively, then one target forward
verifies them all (decoders/speculative.py): greedy output equals the target's `ar` token for token,
sampled output is distributed as sampling from the target (standard acceptance rule).

The drafter is named by a parameter (alias, HF id or path) and loaded by the harness through the
adapter's optional `load_companion(name)` (same device and dtype, same vocabulary), so this package
imports nothing from harness. It runs on an engine of its own (the decoder's engine setting) whose
cache only ever holds committed tokens: draft j is predicted by a forward whose window is the drafts
so far (kept out of the cache, like the target's verify window), so a rejected draft needs no
rollback. That costs draft_len drafter forwards per round with windows of 0 .. draft_len - 1 tokens.

Cost accounting: n_forward, accepted and step_s are the target's alone (TPF = target tokens per target
forward); every drafter forward a row took part in counts in DecodeResult.n_draft_forward. The
drafter's time is inside ttft/e2e and the batch wall clock, so tok/s and speedup pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decoders import register
from decoders.base import DecodeResult, Decoder, DecoderConfigError, ModelAdapter, check, param
from decoders.batch import Row, make_engine, open_batch
from decoders.sampling import choose, distribution, draw, make_generator
from decoders.speculative import verify_and_commit


@register("draft-spec")
@dataclass
class DraftSpeculative(Decoder):
    drafter: str = param("", "the draft model: an alias, HF id or path sharing the target's tokenizer")
    draft_len: int = param(4, "an int >= 1: drafts per round (each one drafter forward)")

    source = "speculative decoding (Leviathan et al. 2023; Chen et al. 2023), a small causal LM as drafter"

    def validate(self) -> None:
        super().validate()
        check(self, "drafter", isinstance(self.drafter, str) and self.drafter.strip() != "",
              "the name of a causal LM sharing the target's tokenizer (alias, HF id or path)")
        check(self, "draft_len", isinstance(self.draft_len, int) and self.draft_len >= 1, "an int >= 1")

    def check_model(self, model: ModelAdapter) -> None:
        super().check_model(model)
        if not callable(getattr(model, "load_companion", None)):
            raise DecoderConfigError(f"decoder 'draft-spec' needs an adapter with load_companion(name) to load "
                                     f"its drafter; {type(model).__name__} has none")

    def generate(self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int) -> list[DecodeResult]:
        self.check_model(model)
        drafter = model.load_companion(self.drafter)
        if getattr(drafter, "native_only", False):
            raise DecoderConfigError(f"drafter {self.drafter!r} is not a causal LM that forward() can drive")
        K = self.draft_len
        batch = open_batch(self, model, prompts, max_new_tokens, max_window=K + 1, max_commit=K + 1)
        d_engine = make_engine(self, drafter, prompts, max_new_tokens, max_window=K, max_commit=K + 1)
        d_active = [Row(i, list(p), len(p)) for i, p in enumerate(prompts)]  # drafter rows, in batch.active order
        n_draft_forward = [0] * len(prompts)
        gen = make_generator(model.device, self.seed)
        while batch.active:
            for dr, r in zip(d_active, batch.active):
                dr.seq = list(r.seq)  # committed tokens only grow, so the drafter's cached prefix stays valid
            n_draft = [min(K, batch.remaining(r) - 1) for r in batch.active]  # the target adds one token
            drafts, q = self.draft(drafter, d_engine, d_active, max(n_draft), gen)  # [A, k], [A, k, V] | None
            for dr in d_active:
                n_draft_forward[dr.index] += drafts.shape[1]
            verify_and_commit(self, batch, [d[:n] for d, n in zip(drafts.tolist(), n_draft)], gen, q)
            batch.drop_finished()
            keep = [i for i, dr in enumerate(d_active) if batch.rows[dr.index].finish is None]
            if len(keep) < len(d_active):
                d_engine.drop(keep)
                d_active = [d_active[i] for i in keep]
        results = batch.results()
        for res, n in zip(results, n_draft_forward):
            res.n_draft_forward = n
        return results

    def draft(self, drafter: ModelAdapter, engine, rows: list[Row], k: int, gen: torch.Generator):
        """k drafter forwards for every row -> drafts [A, k] and, when sampling, the distributions
        they were drawn from [A, k, V]. Forward j sees the committed text and drafts 1..j (its window)."""
        A = len(rows)
        drafts = torch.zeros((A, 0), dtype=torch.long)
        qs = []
        heads = [len(r.seq) for r in rows]
        for j in range(k):
            if j == 0:  # encode what was committed since the last round; predict after it
                logits = engine.forward(rows, heads, None, None, None)  # [A, 1, V]
            else:  # the drafts so far as a causal window after the committed text
                logits = engine.forward(rows, heads, drafts, torch.arange(j), torch.ones(j, j, dtype=torch.bool).tril())
            last = logits[:, -1]  # [A, V]
            if self.temperature == 0:
                token, _ = choose(last, 0.0, 1.0, 0, None)
            else:
                q = distribution(last, self.temperature, self.top_p, self.top_k)  # [A, V]
                token = draw(q, gen)
                qs.append(q)
            drafts = torch.cat([drafts, token.cpu()[:, None]], dim=1)
        return drafts, (torch.stack(qs, dim=1) if qs else None)
