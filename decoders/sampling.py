"""Token choice and confidence, shared by every decoder.

Greedy confidence is the softmax of the raw logits: unlike the SDLM reference we do not apply top-p /
top-k at temperature 0, which would renormalise the distribution and inflate the confidence that the
threshold test reads (specs/sdlm.md §3.1 quirks).
"""

from __future__ import annotations

import math

import torch


def filter_logits(logits: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """logits [N, V] -> logits with the tail set to -inf (top-k first, then nucleus)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum - sorted_logits.softmax(-1) > top_p  # keep the token that crosses p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def distribution(logits: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """logits [..., V] -> the probabilities a token is chosen from: softmax(logits) when greedy (no
    top-p / top-k at temperature 0, see above), else the filtered softmax(logits / T)."""
    if temperature == 0:
        return logits.float().softmax(-1)
    flat = logits.float().reshape(-1, logits.shape[-1])
    return filter_logits(flat / temperature, top_p, top_k).softmax(-1).reshape(logits.shape)


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """probs [..., V] -> one sampled token per row [...]."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def choose(
    logits: torch.Tensor,  # [..., V] float32
    temperature: float,
    top_p: float,
    top_k: int,
    generator: torch.Generator | None,
    confidence: str = "prob",
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (tokens [...], confidence [...]). confidence: "prob" = p(chosen token),
    "entropy" = 1 - H(p) / log V (1 = certain, 0 = uniform)."""
    probs = distribution(logits, temperature, top_p, top_k)
    if temperature == 0:
        conf, tokens = probs.max(-1)
    else:
        tokens = draw(probs, generator)
        conf = probs.gather(-1, tokens[..., None]).squeeze(-1)
    if confidence == "entropy":
        entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum(-1)
        conf = 1.0 - entropy / math.log(probs.shape[-1])
    return tokens, conf


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
