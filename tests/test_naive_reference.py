"""sdlm-conf and sdlm-ssd against deliberately naive references written here from specs/sdlm.md:
full recompute every step, one sequence at a time, an explicit mask built by hand, the HF model called
directly. D = 4 and D = 8."""

from __future__ import annotations

import pytest
import torch

import decoders

NEW = 24


def block_mask(L: int, D: int) -> torch.Tensor:
    """§3.2: causal over the sequence, the last D positions (head + D-1 masks) mutually visible."""
    vis = torch.ones(L, L, dtype=torch.bool).tril()
    vis[L - D:, L - D:] = True
    return vis


def model_logits(adapter, ids: list[int], vis: torch.Tensor, positions: list[int]) -> torch.Tensor:
    mask = torch.zeros(vis.shape).masked_fill(~vis, torch.finfo(torch.float32).min)
    out = adapter.hf_model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([positions]),
                           attention_mask=mask[None, None])
    return out.logits[0].float()


def naive_conf(adapter, prompt: list[int], D: int, tau: float) -> list[int]:
    gen, eos, M = list(prompt), set(adapter.eos_ids), adapter.mask_id
    while len(gen) - len(prompt) < NEW:
        x = gen + [M] * (D - 1)
        logits = model_logits(adapter, x, block_mask(len(x), D), list(range(len(x))))[-D:]
        probs = logits.softmax(-1)
        conf, tok = probs.max(-1)
        a = 0
        while a < D and conf[a] > tau:
            a += 1
        a = max(1, a)
        for t in tok[:a].tolist():
            gen.append(t)
            if t in eos or len(gen) - len(prompt) == NEW:
                return gen[len(prompt):]
    return gen[len(prompt):]


def naive_ssd(adapter, prompt: list[int], D: int) -> list[int]:
    """§3.4: draft from the prefill, then a batch of D verify rows per step, each the committed
    sequence followed by [d_0..d_i, M x (D-1)]; rows are run separately (no padding)."""
    gen, eos, M = list(prompt), set(adapter.eos_ids), adapter.mask_id
    x = gen + [M] * (D - 1)
    draft = model_logits(adapter, x, block_mask(len(x), D), list(range(len(x))))[-D:].argmax(-1).tolist()
    while True:
        heads, preds = [], []
        for i in range(D):
            row = gen + draft[: i + 1] + [M] * (D - 1)
            # the block of row i is [d_i, M...]: its last D positions; d_0..d_{i-1} are causal
            p = model_logits(adapter, row, block_mask(len(row), D), list(range(len(row))))[-D:].argmax(-1)
            heads.append(int(p[0]))
            preds.append(p.tolist())
        a = 1
        while a < D and draft[a] == heads[a - 1]:
            a += 1
        for t in draft[:a]:
            gen.append(t)
            if t in eos or len(gen) - len(prompt) == NEW:
                return gen[len(prompt):]
        draft = preds[a - 1]


@pytest.mark.parametrize("D", [4, 8])
@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_sdlm_conf_matches_naive(tiny_qwen2, prompts, D, tau):
    got = decoders.get("sdlm-conf", block_size=D, threshold=tau).generate(tiny_qwen2, prompts, NEW)
    for p, r in zip(prompts, got):
        assert r.tokens == naive_conf(tiny_qwen2, p, D, tau)


@pytest.mark.parametrize("D", [4, 8])
def test_sdlm_conf_mid_threshold_matches_naive_on_binary_model(binary_qwen2, prompts, D):
    # Two-token model: confidences are spread over (0.5, 1], so 0.8 cuts some blocks and not others.
    got = decoders.get("sdlm-conf", block_size=D, threshold=0.8).generate(binary_qwen2, prompts, NEW)
    for p, r in zip(prompts, got):
        assert r.tokens == naive_conf(binary_qwen2, p, D, 0.8)
    assert any(a > 1 for r in got for a in r.accepted) and any(a < D for r in got for a in r.accepted)


@pytest.mark.parametrize("D", [4, 8])
@pytest.mark.parametrize("model_kind", ["random", "binary"])
def test_sdlm_ssd_matches_naive(tiny_qwen2, binary_qwen2, prompts, D, model_kind):
    model = tiny_qwen2 if model_kind == "random" else binary_qwen2
    got = decoders.get("sdlm-ssd", block_size=D).generate(model, prompts, NEW)
    for p, r in zip(prompts, got):
        assert r.tokens == naive_ssd(model, p, D)
