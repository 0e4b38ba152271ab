"""bf16 comparisons: equal token for token, or parted only by a knife edge.

Two bf16 paths that compute the same function in different shapes (cached vs uncached, static vs
dynamic engine, a packed verify window vs a window per token, HF generate vs the adapter's mask)
round differently: their logits differ by about one bf16 ulp (1-1.5 ulp at logits near 16 on the tiny
models, measured on CPU). A greedy decision whose two best logits are that close can go either way,
and from there the streams part. So a bf16 comparison passes when the streams are equal, or when the
first token where they differ is a *knife edge*: recomputed canonically (one uncached forward over the
common prefix, same model, same dtype), both tokens' logits are within δ of the best one, where

    δ = max(3 x shape noise, 4 ulp of the best logit)

and the shape noise is measured on this device and model (`shape_noise`). So bf16 tests catch what
moves logits by more than bf16 rounding (a wrong mask, position or cache slot parts the streams where
no near-tie is); what hides inside rounding is the fp32 tests' to find, which are exact.

A decision is only canonical where it is an argmax of one window's logits given the committed prefix:
ar (D = 1), sdlm-conf at threshold 1 and sdlm-ssd (first token only, window of D), sdlm-conf and
block-diffusion at threshold 0 (the whole block of D from one window). Thresholds in between, and
block-diffusion at 1 (which slot is unmasked is a comparison across slots), have no such certificate:
they are compared in fp32 only.
"""

from __future__ import annotations

import math

import torch

from tests.test_invariants import first_divergence


def canonical(name: str, params: dict) -> tuple[int, bool] | None:
    """(D, blocked) of the greedy process a config follows, or None when there is none. blocked: the
    decisions of a block of D tokens come from one window at the block's start (threshold 0)."""
    D = params.get("block_size", 4)
    if name == "ar":
        return 1, False
    if name == "sdlm-ssd" or (name == "sdlm-conf" and params.get("threshold") == 1.0):
        return D, False
    if name in ("sdlm-conf", "block-diffusion") and params.get("threshold") == 0.0:
        return D, True
    return None


@torch.no_grad()
def decision_logits(adapter, prompt: list[int], generated: list[int], i: int, D: int, blocked: bool) -> torch.Tensor:
    """Logits [V] that decide generated token i: the window [head, mask x (D-1)] after the committed
    prefix, one uncached forward, read at the window row that predicts token i."""
    start = i - i % D if blocked else i
    seq = list(prompt) + list(generated[:start])
    head = len(seq) - 1  # the window's first token is the last committed one
    ids = seq + [adapter.mask_id] * (D - 1)
    n = len(ids)
    vis = torch.ones(n, n, dtype=torch.bool).tril()
    vis[head:, head:] = True  # the window is bidirectional and sees the whole prefix
    logits = adapter.forward(torch.tensor([ids]), torch.arange(n)[None], vis[None], None, D)
    return logits[0, i - start].float()


@torch.no_grad()
def shape_noise(adapter, prompts: list[list[int]], positions: int = 16) -> float:
    """Largest |logit difference| over a prompt's last `positions` positions computed three ways: in
    one forward with the adapter's mask, one prefix at a time through a KV cache, and by the model's
    own causal path (no mask tensor, another attention kernel on GPU). How far shapes round apart here."""
    worst = 0.0
    for p in prompts:
        n, k = len(p), min(len(p), positions)
        ids, pos = torch.tensor([p]), torch.arange(n)[None]
        full = adapter.forward(ids, pos, torch.ones(n, n, dtype=torch.bool).tril()[None], None, k)[0]
        own = adapter.hf_model(input_ids=ids.to(adapter.device)).logits[0, -k:].float()
        cache, stepwise = adapter.new_cache(), []
        for t in range(n - k + 1, n + 1):  # prefix through t-1 in the cache after the first step
            start = 0 if t == n - k + 1 else t - 1
            vis = torch.ones(t - start, t, dtype=torch.bool).tril(diagonal=start)
            stepwise.append(adapter.forward(ids[:, start:t], pos[:, start:t], vis[None], cache, 1)[0, -1])
        worst = max(worst, (own - full).abs().max().item(), (torch.stack(stepwise) - full).abs().max().item())
    return worst


def delta(noise: float, best_logit: float) -> float:
    """3 x the measured noise, at least 4 bf16 ulp of the best logit (path-to-path rounding measured on
    CPU is 1-1.5 ulp; a probe can read 0 where the decoders' own shapes still round apart)."""
    ulp = torch.finfo(torch.bfloat16).eps * 2.0 ** math.floor(math.log2(max(abs(best_logit), 1e-30)))
    return max(3 * noise, 4 * ulp)


def assert_agree(adapter, prompts, got: list[list[int]], want: list[list[int]], spec: tuple[int, bool],
                 noise: float, what: str) -> int:
    """Streams equal, or parted at a knife edge (module docstring). Returns the knife edges seen."""
    edges = 0
    for k, (p, g, w) in enumerate(zip(prompts, got, want)):
        i = first_divergence(g, w)
        if i is None:
            continue
        assert i < min(len(g), len(w)), f"{what}: prompt {k}: one stream ends at {i}, the other goes on\n{g}\n{w}"
        z = decision_logits(adapter, p, w, i, *spec)  # g[:i] == w[:i]: one context for both tokens
        best = z.max().item()
        d = delta(noise, best)
        a, b = g[i], w[i]
        below = best - z[a].item(), best - z[b].item()
        assert max(below) <= d, (
            f"{what}: prompt {k} parts at token {i} ({a} vs {b}) and that is no knife edge: their canonical "
            f"logits are {below[0]:.3f} and {below[1]:.3f} below the best, δ = {d:.3f}\n got {g}\nwant {w}")
        edges += 1
    return edges
