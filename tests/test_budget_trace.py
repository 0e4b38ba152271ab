"""max_nfe and trace, the two features every decoder gets from the shared machinery: each registered
decoder stops at the cap with its bookkeeping intact, and a trace says which positions each forward
committed."""

from __future__ import annotations

import pytest

import decoders

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
}
CAUSAL = [n for n in PARAMS if n != "diffusion-gemma"]


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
    model = model_for(name, tiny_qwen2, tiny_dgemma)
    uncapped = decoders.get(name, **PARAMS[name]).generate(model, prompts[:1], 40)[0]
    before = model.n_forward
    (res,) = decoders.get(name, max_nfe=cap, **PARAMS[name]).generate(model, prompts[:1], 40)
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
    res = decoders.get(name, max_nfe=3, **PARAMS[name]).generate(tiny_qwen2, prompts, 40)
    for r in res:
        r.check_bookkeeping()
        assert r.n_forward <= 3 and r.finish in ("nfe_cap", "eos")


@pytest.mark.parametrize("name", list(PARAMS))
def test_trace_records_each_committed_position_once(tiny_qwen2, tiny_dgemma, prompts, name):
    model = model_for(name, tiny_qwen2, tiny_dgemma)
    plain = decoders.get(name, **PARAMS[name]).generate(model, prompts, 12)
    traced = decoders.get(name, trace=True, **PARAMS[name]).generate(model, prompts, 12)
    assert all(r.trace is None for r in plain)
    for p, r in zip(plain, traced):
        if name != "diffusion-gemma":  # its random canvases depend on the batch only, not on tracing
            assert r.tokens == p.tokens and r.accepted == p.accepted
        assert len(r.trace) == r.n_forward
        assert [len(step["pos"]) for step in r.trace] == r.accepted
        assert sorted(pos for step in r.trace for pos in step["pos"]) == list(range(len(r.tokens)))
        confs = [c for step in r.trace for c in step["conf"]]
        assert all(0.0 <= c <= 1.0 for c in confs)
