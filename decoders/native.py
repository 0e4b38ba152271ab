"""Helpers for decoders that run a model's own generate() instead of pdbench's engines.

The adapter's hooks count and time every forward of the wrapped module, whoever calls it, so such a
decoder only has to say which rows took part in each forward and what each forward committed; it
does that through a `Batch` without an engine (`Batch.took_part`, `Batch.commit`), which also gives
it the EOS and length cuts, the max_nfe cap and the trace of every other decoder.

Row accounting, the same rule for every native decoder: a row takes part in every forward of the
batch from the first one up to the forward that completes its output. Forwards the model's batched
generate() runs after that (a finished row riding along as padding until the others finish) are not
the row's: its output was final, and run alone it would not have paid them. They still cost wall
time, which the batch's wall clock (tok/s, speedup) includes.
"""

from __future__ import annotations

import contextlib

import torch

from decoders.base import DecoderConfigError, ModelAdapter


def hf_module(decoder, model: ModelAdapter):
    """The transformers module behind the adapter (the protocol's optional `hf_model`)."""
    hf = getattr(model, "hf_model", None)
    if hf is None:
        raise DecoderConfigError(
            f"decoder {decoder.name!r} runs the model's own generate() and needs the adapter's hf_model "
            f"(the transformers module); {type(model).__name__} has none")
    return hf


def left_padded(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """-> input_ids [B, L] left-padded with pad_id, attention_mask [B, L] (1 = real token)."""
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), L), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, L - len(p):] = 1
    return ids.to(device), mask.to(device)


@contextlib.contextmanager
def seeded(device: torch.device, seed: int):
    """generate() samples from torch's global generator: seed it for this call only."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class LastScores:
    """A logits processor that keeps the scores of the latest step (for the trace's confidences)."""

    def __init__(self):
        self.scores = None

    def __call__(self, input_ids, scores):
        self.scores = scores
        return scores
