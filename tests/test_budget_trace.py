"""max_nfe and trace, the two features every decoder gets from the shared machinery: each registered
decoder stops at the cap with its bookkeeping intact, and a trace says which positions each forward
committed. The block engine's policies are checked on both engines: the causal one (tiny Qwen2) and the
canvas one (tiny Llama / Qwen2 run as LLaDA- / Dream-family bidirectional models)."""

from __future__ import annotations

import pytest

import decoders
from harness.adapter import HFModelAdapter
from harness.tiny import tiny_model, tiny_tokenizer

# one configuration per decoder shipped in decoders/: a new decoder must add its own here
PARAMS = {
    "ar": {},
    "sdlm-conf": dict(block_size=4, threshold=0.5),
    "sdlm-ssd": dict(block_size=4),
    "block-diffusion": dict(block_size=4, threshold=0.3),
    "hf-generate": {},
    "prompt-lookup": dict(draft_len=3),
    "draft-spec": dict(drafter="tiny-random-qwen2", draft_len=3),
    "diffusion-gemma": dict(max_denoising_steps=3, canvas_length=4),
    "eb-sampler": dict(block_size=4, entropy_bound=1.0),
    "credit-threshold": dict(block_size=4, threshold=0.5),
    "sub-block": dict(block_size=4, sub_block_size=2, threshold=0.3),
    "margin-threshold": dict(block_size=4, threshold=0.2),
}
CAUSAL = [n for n in PARAMS if n != "diffusion-gemma"]
# the block engine's policies on bidirectional models (the canvas engine), one with its dual cache
CANVAS = {"block-diffusion": dict(block_size=4, threshold=0.3, cache="dual"),
          **{n: PARAMS[n] for n in ("eb-sampler", "credit-threshold", "sub-block", "margin-threshold")}}


@pytest.fixture(scope="module", params=[("llama", "llada"), ("qwen2", "dream")], ids=["llada-like", "dream-like"])
def bidi(request):
    arch, family = request.param
    return HFModelAdapter(tiny_model(arch, seed=2), tiny_tokenizer(), name=f"tiny-{family}", family=family)


def packaged() -> set[str]:
    return {n for n in decoders.available() if decoders.get_class(n).__module__.startswith("decoders.")}


def test_every_packaged_decoder_is_covered():
    assert packaged() == set(PARAMS), "add the new decoder to PARAMS"


def model_for(name, tiny_qwen2, tiny_dgemma):
    return tiny_dgemma if name == "diffusion-gemma" else tiny_qwen2


@pytest.mark.parametrize("cap", [1, 5])
@pytest.mark.parametrize("name", list(PARAMS))
def test_every_decoder_stops_at_max_nfe(tiny_qwen2, tiny_dgemma, prompts, name, cap):
    if name == "diffusion-gemma" and cap == 1:
        cap = 2  # its smallest cap (test_decoders_api: max_nfe=1 is refused); truncates its first canvas
    stops_at_max_nfe(model_for(name, tiny_qwen2, tiny_dgemma), prompts, name, PARAMS[name], cap)


@pytest.mark.parametrize("cap", [1, 5])
@pytest.mark.parametrize("name", list(CANVAS))
def test_canvas_engine_stops_at_max_nfe(bidi, prompts, name, cap):
    stops_at_max_nfe(bidi, prompts, name, CANVAS[name], cap)


def stops_at_max_nfe(model, prompts, name, params, cap):
    uncapped = decoders.get(name, **params).generate(model, prompts[:1], 40)[0]
    before = model.n_forward
    (res,) = decoders.get(name, max_nfe=cap, **params).generate(model, prompts[:1], 40)
    res.check_bookkeeping()
    assert res.n_forward == model.n_forward - before <= cap
    assert len(res.accepted) == len(res.step_s) and sum(res.accepted) == len(res.tokens)
    if uncapped.n_forward > cap:  # the cap bites: the row ends there, on what it had committed
        assert res.finish == "nfe_cap"
        if name == "diffusion-gemma":  # a canvas needs 2+ forwards; the cap shortens the last one's denoising
            assert res.n_forward >= cap - 1
        else:
            assert res.n_forward == cap
        if name != "diffusion-gemma" or res.n_forward < cap:  # what was committed before the cap is unchanged
            assert res.tokens == uncapped.tokens[:len(res.tokens)]
    else:
        assert res.tokens == uncapped.tokens and res.finish == uncapped.finish


@pytest.mark.parametrize("name", CAUSAL)
def test_cap_in_a_batch(tiny_qwen2, prompts, name):
    cap_in_a_batch(tiny_qwen2, prompts, name, PARAMS[name])


@pytest.mark.parametrize("name", list(CANVAS))
def test_canvas_engine_cap_in_a_batch(bidi, prompts, name):
    cap_in_a_batch(bidi, prompts, name, CANVAS[name])


def cap_in_a_batch(model, prompts, name, params):
    res = decoders.get(name, max_nfe=3, **params).generate(model, prompts, 40)
    assert any(r.finish == "nfe_cap" for r in res)
    for r in res:
        r.check_bookkeeping()
        assert r.n_forward <= 3 and r.finish in ("nfe_cap", "eos")


@pytest.mark.parametrize("name", list(PARAMS))
def test_trace_records_each_committed_position_once(tiny_qwen2, tiny_dgemma, prompts, name):
    trace_records_each_position_once(model_for(name, tiny_qwen2, tiny_dgemma), prompts, name, PARAMS[name])


@pytest.mark.parametrize("name", list(CANVAS))
def test_canvas_engine_trace(bidi, prompts, name):
    trace_records_each_position_once(bidi, prompts, name, CANVAS[name])


def trace_records_each_position_once(model, prompts, name, params):
    plain = decoders.get(name, **params).generate(model, prompts, 12)
    traced = decoders.get(name, trace=True, **params).generate(model, prompts, 12)
    assert all(r.trace is None for r in plain)
    for p, r in zip(plain, traced):
        if name != "diffusion-gemma":  # its random canvases depend on the batch only, not on tracing
            assert r.tokens == p.tokens and r.accepted == p.accepted
        assert len(r.trace) == r.n_forward
        assert [len(step["pos"]) for step in r.trace] == r.accepted
        assert sorted(pos for step in r.trace for pos in step["pos"]) == list(range(len(r.tokens)))
        confs = [c for step in r.trace for c in step["conf"]]
        assert all(0.0 <= c <= 1.0 for c in confs)
