"""The static-shape path (fixed-size slot cache, CUDA-graph-ready steps) against the dynamic path:
token for token, forward for forward; and every decode step has the same tensor shapes."""

from __future__ import annotations

import pytest

import decoders
from decoders.base import DecoderConfigError

CONFIGS = [
    ("ar", {}),
    ("sdlm-conf", dict(block_size=4, threshold=0.0)),
    ("sdlm-conf", dict(block_size=8, threshold=0.8)),
    ("sdlm-ssd", dict(block_size=4)),
    ("sdlm-ssd", dict(block_size=8)),
    ("block-diffusion", dict(block_size=4, threshold=0.5)),
]


@pytest.mark.parametrize("model_name", ["tiny_qwen2", "tiny_llama", "binary_qwen2"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name,params", CONFIGS)
def test_static_equals_dynamic(request, prompts, model_name, batch, name, params):
    model = request.getfixturevalue(model_name)
    dynamic = decoders.get(name, **params).generate(model, prompts[:batch], 20)
    static = decoders.get(name, engine="static", **params).generate(model, prompts[:batch], 20)
    for d, s in zip(dynamic, static):
        s.check_bookkeeping()
        assert s.tokens == d.tokens
        assert s.accepted == d.accepted


@pytest.mark.parametrize("name,params", CONFIGS)
def test_static_decode_steps_have_fixed_shapes(binary_qwen2, prompts, name, params, monkeypatch):
    shapes = []
    forward = binary_qwen2.forward

    def spy(input_ids, position_ids, visible, cache, logits_to_keep, write_slots=None):
        shapes.append((tuple(input_ids.shape), tuple(visible.shape), logits_to_keep, tuple(write_slots.shape)))
        return forward(input_ids, position_ids, visible, cache, logits_to_keep, write_slots)

    monkeypatch.setattr(binary_qwen2, "forward", spy)
    results = decoders.get(name, engine="static", **params).generate(binary_qwen2, prompts, 24)
    assert len(shapes) == max(r.n_forward for r in results)
    decode_shapes = set(shapes[1:]) if name != "sdlm-ssd" else set(shapes[2:])  # ssd: prefill, then verify
    assert len(decode_shapes) == 1, decode_shapes


def test_static_engine_needs_the_cache():
    with pytest.raises(DecoderConfigError, match="engine"):
        decoders.get("ar", engine="static", use_cache=False)
    with pytest.raises(DecoderConfigError, match="engine='paged'"):
        decoders.get("ar", engine="paged")
