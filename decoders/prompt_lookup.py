"""Prompt lookup decoding: drafts copied from the text itself, verified by the target in one forward.

No draft model: the longest suffix n-gram of the committed text (n = max_ngram down to 1) is looked up
in the text before it (prompt and output so far), and the tokens that followed its most recent earlier
occurrence become the draft (at most draft_len, and never past max_new_tokens). Verification is
decoders/speculative.py's: greedy output equals `ar` token for token, sampled output is distributed as
plain sampling. Rows with no match draft nothing and take a plain AR step inside the same forward.
Reference: Saxena 2023, "Prompt Lookup Decoding" (apoorvumang/prompt-lookup-decoding), shipped in
transformers as generate(prompt_lookup_num_tokens=...).
"""

from __future__ import annotations

from dataclasses import dataclass

from decoders import register
from decoders.base import DecodeResult, Decoder, ModelAdapter, check, param
from decoders.batch import open_batch
from decoders.sampling import make_generator
from decoders.speculative import verify_and_commit


def ngram_draft(seq: list[int], max_ngram: int, draft_len: int) -> list[int]:
    """The tokens after the most recent earlier occurrence of seq's longest matching suffix n-gram
    (n = max_ngram .. 1), at most draft_len of them; [] when no suffix occurs earlier."""
    if draft_len <= 0:
        return []
    for n in range(min(max_ngram, len(seq) - 1), 0, -1):
        suffix = seq[-n:]
        for start in range(len(seq) - n - 1, -1, -1):  # most recent first; the suffix itself excluded
            if seq[start:start + n] == suffix:
                return seq[start + n:start + n + draft_len]
    return []


@register("prompt-lookup")
@dataclass
class PromptLookup(Decoder):
    max_ngram: int = param(3, "an int >= 1: the longest suffix n-gram looked up")
    draft_len: int = param(10, "an int >= 1: the most tokens copied per draft")

    source = "prompt lookup decoding (Saxena 2023, apoorvumang/prompt-lookup-decoding)"

    def validate(self) -> None:
        super().validate()
        check(self, "max_ngram", isinstance(self.max_ngram, int) and self.max_ngram >= 1, "an int >= 1")
        check(self, "draft_len", isinstance(self.draft_len, int) and self.draft_len >= 1, "an int >= 1")

    def generate(self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int) -> list[DecodeResult]:
        self.check_model(model)
        K = self.draft_len
        batch = open_batch(self, model, prompts, max_new_tokens, max_window=K + 1, max_commit=K + 1)
        gen = make_generator(model.device, self.seed)
        while batch.active:
            # one token always comes from the target, so a row drafts at most remaining - 1
            drafts = [ngram_draft(r.seq, self.max_ngram, min(K, batch.remaining(r) - 1)) for r in batch.active]
            verify_and_commit(self, batch, drafts, gen)
            batch.drop_finished()
        return batch.results()
