"""DESIGN.md's five invariants, exact token equality, batch size 1 and a batch of 3 prompts of
different lengths, on tiny random-weight Qwen2 and Llama models (fp32, CPU).

Threshold decoders run at threshold 0 (accept the whole block) and 1 (first token only), where no
confidence can straddle the threshold (DESIGN.md "Invariants")."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import decode_checked, make_adapter

NEW = 20
CONFIGS = [
    ("ar", {}),
    ("sdlm-conf", dict(block_size=4, threshold=0.0)),
    ("sdlm-conf", dict(block_size=4, threshold=1.0)),
    ("sdlm-conf", dict(block_size=8, threshold=0.0, confidence="entropy")),
    ("sdlm-ssd", dict(block_size=4)),
    ("sdlm-ssd", dict(block_size=8)),
    ("block-diffusion", dict(block_size=4, threshold=0.0)),
    ("block-diffusion", dict(block_size=4, threshold=1.0)),
    ("hf-generate", {}),
    ("prompt-lookup", dict(draft_len=4)),
    ("draft-spec", dict(drafter="tiny-random-llama", draft_len=3)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for n, p in CONFIGS]


def run(model, name, prompts, new=NEW, **params):
    return decode_checked(model, name, prompts, new, **params)


def tokens(results):
    return [r.tokens for r in results]


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def assert_same(got, want, what):
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{what}: prompt {i} diverges at token {first_divergence(g, w)}\n got {g}\nwant {w}"


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
def test_cache_equals_no_cache(tiny_any, prompts, name, params, batch):
    ps = prompts[:batch]
    cached = run(tiny_any, name, ps, use_cache=True, **params)
    uncached = run(tiny_any, name, ps, use_cache=False, **params)
    assert_same(tokens(cached), tokens(uncached), f"{name} cached vs uncached")
    assert [r.accepted for r in cached] == [r.accepted for r in uncached]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("D", [2, 4, 8])
@pytest.mark.parametrize("model_kind", ["random", "binary"])
def test_ssd_equals_first_token_only(tiny_qwen2, binary_qwen2, prompts, D, batch, model_kind):
    model = tiny_qwen2 if model_kind == "random" else binary_qwen2
    ps = prompts[:batch]
    ssd = run(model, "sdlm-ssd", ps, block_size=D)
    first_only = run(model, "sdlm-conf", ps, block_size=D, threshold=1.0)
    assert_same(tokens(ssd), tokens(first_only), f"sdlm-ssd D={D} vs sdlm-conf threshold=1")
    assert all(a == 1 for r in first_only for a in r.accepted)
    if model_kind == "binary":  # the accept path is exercised: more than one token per forward
        assert max(r.tpf for r in ssd) > 1.3


@pytest.mark.parametrize("batch", [1, 3])
def test_ar_equals_generate(tiny_any, prompts, batch):
    ps = prompts[:batch]
    results = run(tiny_any, "ar", ps)
    hf = tiny_any.hf_model
    for p, r in zip(ps, results):
        out = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                          do_sample=False, max_new_tokens=NEW, eos_token_id=list(tiny_any.eos_ids),
                          pad_token_id=tiny_any.pad_id)
        want = out[0, len(p):].tolist()
        assert r.tokens == want, f"diverges at {first_divergence(r.tokens, want)}"
        assert r.tpf == 1.0 and all(a == 1 for a in r.accepted)


@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
def test_batched_equals_one_by_one(tiny_any, prompts, name, params):
    batched = run(tiny_any, name, prompts, **params)
    single = [run(tiny_any, name, [p], **params)[0] for p in prompts]
    assert_same(tokens(batched), tokens(single), f"{name} batch of 3 vs one by one")
    assert [r.accepted for r in batched] == [r.accepted for r in single]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
def test_n_forward_equals_adapter_count(tiny_qwen2, prompts, name, params, batch):
    before = tiny_qwen2.n_forward
    results = run(tiny_qwen2, name, prompts[:batch], **params)
    ran = tiny_qwen2.n_forward - before
    # every row takes part in the forwards until it finishes, so the longest row saw all of them
    assert max(r.n_forward for r in results) == ran
    if batch == 1:
        assert results[0].n_forward == ran


@pytest.mark.parametrize("name,params", CONFIGS[:2] + CONFIGS[4:5] + CONFIGS[6:7])
def test_eager_equals_sdpa(prompts, name, params):
    sdpa = run(make_adapter("qwen2", "sdpa"), name, prompts, **params)
    eager = run(make_adapter("qwen2", "eager"), name, prompts, **params)
    assert_same(tokens(sdpa), tokens(eager), f"{name} sdpa vs eager attention")


@pytest.mark.parametrize("D", [1, 4])
def test_block_diffusion_threshold0_equals_sdlm_conf_threshold0(tiny_qwen2, prompts, D):
    # One forward per block over [anchor, M...] accepting everything is exactly SDLM's window.
    bd = run(tiny_qwen2, "block-diffusion", prompts, block_size=D, threshold=0.0)
    conf = run(tiny_qwen2, "sdlm-conf", prompts, block_size=D, threshold=0.0)
    assert_same(tokens(bd), tokens(conf), "block-diffusion vs sdlm-conf at threshold 0")


@pytest.mark.parametrize("name", ["sdlm-conf", "sdlm-ssd", "block-diffusion"])
def test_block_size_1_equals_ar(tiny_qwen2, prompts, name):
    ar = run(tiny_qwen2, "ar", prompts)
    other = run(tiny_qwen2, name, prompts, block_size=1)
    assert_same(tokens(other), tokens(ar), f"{name} with block_size=1 vs ar")
