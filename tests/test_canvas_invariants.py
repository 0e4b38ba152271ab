"""block-diffusion on bidirectional models (the canvas engine): DESIGN.md's invariants on tiny
random-weight Llama / Qwen2 models run as LLaDA-family (in place) and Dream-family (shifted) models,
fp32 on CPU, prompts of different lengths; a naive full-recompute reference written here from
specs/block_diffusion.md §3.1-3.2; parameter errors."""

from __future__ import annotations

import pytest
import torch

import decoders
from decoders.base import DecoderConfigError
from harness.adapter import HFModelAdapter
from harness.tiny import tiny_model, tiny_tokenizer

NEW = 16


@pytest.fixture(scope="module", params=[("llama", "llada"), ("qwen2", "dream")], ids=["llada-like", "dream-like"])
def bidi(request):
    arch, family = request.param
    return HFModelAdapter(tiny_model(arch, seed=2), tiny_tokenizer(), name=f"tiny-{family}", family=family)


def run(model, prompts, new=NEW, **params):
    results = decoders.get("block-diffusion", **params).generate(model, prompts, new)
    for r in results:
        r.check_bookkeeping()
        assert len(r.tokens) <= new
    return results


CONFIGS = [
    dict(block_size=4, policy="threshold", threshold=0.0),
    dict(block_size=4, policy="threshold", threshold=0.3, cache="prefix"),
    dict(block_size=4, policy="threshold", threshold=0.3, cache="dual", extra_forward=True),
    dict(block_size=8, policy="steps", max_steps_per_block=4, cache="dual"),
    dict(block_size=4, policy="steps", max_steps_per_block=4, confidence="random", seed=3),
    dict(block_size=8, policy="timesteps", max_steps_per_block=4, confidence="entropy", first_slot_ar=True,
         cache="prefix"),
    dict(block_size=NEW, policy="quota", max_steps_per_block=4, threshold=0.2, stop_at_eos=False),
    dict(block_size=5, policy="threshold", threshold=0.2, cache="dual"),  # a partial last block
]
IDS = ["-".join(f"{k}={v}" for k, v in c.items()) for c in CONFIGS]


@pytest.mark.parametrize("params", CONFIGS, ids=IDS)
def test_batched_equals_one_by_one(bidi, prompts, params):
    batched = run(bidi, prompts, **params)
    for p, b in zip(prompts, batched):
        (alone,) = run(bidi, [p], **params)
        assert b.tokens == alone.tokens
        assert b.accepted == alone.accepted  # the same forwards, deciding the same slots


@pytest.mark.parametrize("params", CONFIGS[:4], ids=IDS[:4])
def test_batch_one_counts_the_adapters_forwards(bidi, prompts, params):
    before = bidi.n_forward
    (r,) = run(bidi, prompts[:1], **params)
    assert r.n_forward == bidi.n_forward - before
    assert len(r.step_s) == r.n_forward and all(s > 0 for s in r.step_s)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_one_token_per_forward_with_the_full_schedule(bidi, prompts, cache):
    """LLaDA's schedule with steps = block size decides exactly one slot per forward, refreshes included."""
    for r in run(bidi, prompts, block_size=4, policy="steps", max_steps_per_block=4, cache=cache, stop_at_eos=False):
        assert r.accepted[: len(r.tokens)] == [1] * len(r.tokens)
        assert r.n_forward == NEW


def naive_canvas(adapter, prompt: list[int], B: int, policy: str, k_steps: int, tau: float) -> tuple[list[int], int]:
    """One sequence, the whole canvas through the HF model at every step, an explicit all-visible mask."""
    shift = 1 if adapter.family.logits == "shifted" else 0
    x = prompt + [adapter.mask_id] * NEW
    open_ = [False] * len(prompt) + [True] * NEW
    P, nfe = len(prompt), 0
    for s in range(P, P + NEW, B):
        e = min(s + B, P + NEW)
        counts = [(e - s) // k_steps + (1 if i < (e - s) % k_steps else 0) for i in range(k_steps)]
        step = 0
        while any(open_[s:e]):
            mask = torch.zeros(1, 1, len(x), len(x))  # additive: 0 = visible, everywhere
            with torch.no_grad():
                logits = adapter.hf_model(input_ids=torch.tensor([x]), position_ids=torch.arange(len(x))[None],
                                          attention_mask=mask).logits[0].float()
            nfe += 1
            probs = logits[s - shift:e - shift].softmax(-1)
            conf, tok = probs.max(-1)
            cand = sorted((j for j in range(e - s) if open_[s + j]), key=lambda j: -float(conf[j]))
            if policy == "steps":
                take = cand[: counts[step]]
            else:
                take = cand[:1] + [j for j in cand[1:] if conf[j] >= tau]
            for j in take:
                x[s + j], open_[s + j] = int(tok[j]), False
            step += 1
    out = x[P:]
    cut = next((i for i, t in enumerate(out) if t in adapter.eos_ids), None)
    return (out if cut is None else out[: cut + 1]), nfe


@pytest.mark.parametrize("policy,k_steps,tau", [("steps", 2, 0.0), ("steps", 4, 0.0), ("threshold", 4, 0.25)])
def test_no_cache_equals_naive_full_recompute(bidi, prompts, policy, k_steps, tau):
    params = dict(block_size=4, policy=policy, max_steps_per_block=k_steps, threshold=tau, stop_at_eos=False)
    for p in prompts:
        (r,) = run(bidi, [p], **params)
        want, nfe = naive_canvas(bidi, p, 4, policy, k_steps, tau)
        assert (r.tokens, r.n_forward) == (want, nfe)


def test_caches_are_approximations_that_differ_here(bidi, prompts):
    """On random weights the stale prefix / suffix KV changes some decisions: the caches are really used."""
    out = {c: [r.tokens for r in run(bidi, prompts, block_size=4, policy="steps", max_steps_per_block=4, cache=c)]
           for c in ("none", "prefix", "dual")}
    assert out["prefix"] != out["none"] or out["dual"] != out["none"]


@pytest.mark.parametrize("params,match", [
    (dict(policy="greedy"), r"policy='greedy'.*'threshold' \| 'steps' \| 'timesteps' \| 'quota'"),
    (dict(cache="full"), r"cache='full'.*'none' \| 'prefix' \| 'dual'"),
    (dict(confidence="random"), r"confidence='random'.*'prob' or 'entropy' with policy threshold"),
    (dict(extra_forward=1), r"extra_forward=1.*true or false"),
    (dict(cache="dual", engine="static"), r"engine='static'.*'dynamic' with cache prefix/dual"),
])
def test_bad_parameters_name_the_parameter_and_the_accepted_values(params, match):
    with pytest.raises(DecoderConfigError, match=match):
        decoders.get("block-diffusion", **params)


def test_canvas_parameters_are_refused_on_causal_models(tiny_qwen2, prompts):
    with pytest.raises(DecoderConfigError, match=r"cache='dual' applies to bidirectional models only.*causal"):
        decoders.get("block-diffusion", cache="dual").generate(tiny_qwen2, prompts, 4)


def test_causal_decoders_refuse_bidirectional_models(bidi, prompts):
    with pytest.raises(DecoderConfigError, match="decodes causal models.*bidirectional attention"):
        decoders.get("ar").generate(bidi, prompts, 4)
    with pytest.raises(DecoderConfigError, match="engine='static' is invalid on a bidirectional model"):
        decoders.get("block-diffusion", engine="static").generate(bidi, prompts, 4)
