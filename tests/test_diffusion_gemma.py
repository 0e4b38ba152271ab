"""diffusion-gemma on a tiny random-weight DiffusionGemmaForBlockDiffusion: the model's own generate()
run canvas by canvas equals one generate() call, our forward counts agree with its tokens_per_forward,
and loading dispatches on the config's architecture (with a clear error where transformers lacks it)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

import decoders
from decoders.base import DecoderConfigError
from harness.adapter import HFModelAdapter
from harness.models import diffusion_gemma_class, load_model
from harness.tiny import tiny_tokenizer
from tests.conftest import tiny_diffusion_gemma

STEPS, NEW, C = 5, 24, 8


def reference(adapter, prompt: list[int], seed: int):
    """One plain generate() call for the whole length, as a user would make it."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return adapter.hf_model.generate(torch.tensor([prompt]), max_new_tokens=NEW, max_denoising_steps=STEPS,
                                         t_min=0.4, t_max=0.8, stability_threshold=1, confidence_threshold=0.005,
                                         eos_token_id=list(adapter.eos_ids), pad_token_id=adapter.pad_id)


@pytest.mark.parametrize("seed", [0, 3])
def test_equals_one_generate_call_and_its_tokens_per_forward(tiny_dgemma, prompts, seed):
    before = tiny_dgemma.n_forward
    (res,) = decoders.get("diffusion-gemma", max_denoising_steps=STEPS, seed=seed).generate(tiny_dgemma, [prompts[0]], NEW)
    res.check_bookkeeping()
    assert res.n_forward == tiny_dgemma.n_forward - before  # every encoder and decoder call counted
    out = reference(tiny_dgemma, prompts[0], seed)
    ref = out.sequences[0, len(prompts[0]):].tolist()
    valid = [t for t in ref if t != tiny_dgemma.pad_id]  # it pads after EOS; we cut there
    assert res.tokens == valid
    assert res.finish == "length"  # the random model never meets EOS here
    canvases = NEW // C  # each canvas: one encoder pass + STEPS denoising steps, committed at the last
    assert [i for i, a in enumerate(res.accepted) if a] == [k * (STEPS + 1) - 1 for k in range(1, canvases + 1)]
    # its TPF counts denoising steps only: ours minus one encoder pass per canvas
    assert len(valid) / (res.n_forward - canvases) == pytest.approx(out.tokens_per_forward.item(), rel=1e-6)


def test_batch_rows_leave_at_eos_and_counts_hold(prompts):
    adapter = HFModelAdapter(tiny_diffusion_gemma(), tiny_tokenizer())
    dec = decoders.get("diffusion-gemma", max_denoising_steps=STEPS, seed=1)
    first = dec.generate(adapter, prompts[:2], NEW)
    adapter.eos_ids = (first[1].tokens[2],)  # the second row meets EOS in its first canvas
    before = adapter.n_forward
    res = dec.generate(adapter, prompts[:2], NEW)
    for r in res:
        r.check_bookkeeping()
    assert res[1].finish == "eos" and res[1].n_forward == STEPS + 1 < res[0].n_forward
    assert max(r.n_forward for r in res) == adapter.n_forward - before


def test_canvas_length_parameter_and_config_restored(tiny_dgemma, prompts):
    (res,) = decoders.get("diffusion-gemma", canvas_length=4, max_denoising_steps=2).generate(tiny_dgemma, [prompts[1]], 10)
    assert [a for a in res.accepted if a] == [4, 4, 2] and tiny_dgemma.hf_model.config.canvas_length == C


def test_other_decoders_refuse_it_and_it_refuses_causal_lms(tiny_dgemma, tiny_qwen2):
    for name in ("ar", "sdlm-conf", "prompt-lookup", "hf-generate"):
        with pytest.raises(DecoderConfigError, match="diffusion-gemma"):
            decoders.get(name).check_model(tiny_dgemma)
    with pytest.raises(DecoderConfigError, match="DiffusionGemmaForBlockDiffusion"):
        decoders.get("diffusion-gemma").generate(tiny_qwen2, [[1, 2]], 4)


def test_load_model_dispatches_on_the_architecture(tmp_path, monkeypatch):
    tiny_diffusion_gemma().save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    adapter = load_model(str(tmp_path), dtype="float32")
    assert type(adapter.hf_model).__name__ == "DiffusionGemmaForBlockDiffusion" and adapter.native_only
    res = decoders.get("diffusion-gemma", max_denoising_steps=2).generate(adapter, [[5, 6, 7]], 8)
    assert res[0].n_forward == 3 == adapter.n_forward
    # a transformers without the class: the error names the version needed
    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(__version__="5.10.0"))
    with pytest.raises(ImportError, match=r"transformers >= 5\.24 \(installed: 5\.10\.0\)"):
        diffusion_gemma_class()
