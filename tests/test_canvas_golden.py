"""Reference equality: every record of fixtures/refmodels/golden.jsonl (the unmodified Fast-dLLM v1
LLaDA / Dream decoders at temperature 0 on the tiny reference-format models) reproduced by
`block-diffusion` on the stock classes, output ids AND forward count, token for token.

Reference-faithful settings per function (fixtures/refmodels/README.md lists what they do):
    llada generate                 cache none, policy steps (threshold=None) or threshold
    llada *_prefix_cache / _dual   cache prefix / dual, extra_forward (a cached forward after every refresh)
    dream generation_utils_block   cache prefix / dual, first_slot_ar, policy threshold or timesteps+entropy
    dream generation_utils         one block of the whole length, policy quota (threshold) or timesteps
all with stop_at_eos=False (the references decode the whole canvas). The efficient settings of the two
quirks that only cost forwards (extra_forward off, stop_at_eos on) must change the count and nothing else.
"""

from __future__ import annotations

import json

import pytest

import decoders
from harness.adapter import HFModelAdapter
from harness.tiny import tiny_model, tiny_tokenizer
from tests.conftest import FIXTURES

GOLDEN = FIXTURES / "refmodels" / "golden.jsonl"
RECORDS = [json.loads(line) for line in GOLDEN.read_text().splitlines()] if GOLDEN.exists() else []


def reference_params(rec: dict) -> tuple[dict, int]:
    p, fn = rec["params"], rec["function"]
    G = p.get("gen_length") or p["max_new_tokens"]
    out: dict = dict(stop_at_eos=False)
    if fn.startswith("llada/"):
        B = p["block_length"]
        out.update(block_size=B, max_steps_per_block=p["steps"] // (G // B))
        if p["threshold"] is None:
            out.update(policy="steps", confidence="prob" if p["remasking"] == "low_confidence" else "random")
        else:
            out.update(policy="threshold", threshold=p["threshold"])
        if "prefix_cache" in fn or "dual_cache" in fn:
            out.update(cache="prefix" if "prefix_cache" in fn else "dual", extra_forward=True)
    elif "generation_utils_block" in fn:
        B = p["block_length"]
        out.update(block_size=B, first_slot_ar=True, cache="dual" if p["dual_cache"] else "prefix")
        if p["alg"] == "confidence_threshold":  # no step limit: a block runs until it is full
            out.update(policy="threshold", threshold=p["threshold"])
        else:  # the block util ranks by negative entropy whatever `alg` says
            out.update(policy="timesteps", confidence="entropy", max_steps_per_block=p["steps"] // (G // B))
    else:  # the plain sampler: no blocks
        out.update(block_size=G, max_steps_per_block=p["steps"])
        if p["alg"] == "confidence_threshold":
            out.update(policy="quota", threshold=p["threshold"])
        else:
            out.update(policy="timesteps", confidence="entropy" if p["alg"] == "entropy" else "prob")
    return out, G


def record_id(rec: dict) -> str:
    fn = rec["function"].split("/")[-1].replace(".py:", ".").replace("DreamGenerationMixin.diffusion_generate", "")
    keys = ("steps", "threshold", "alg", "dual_cache")
    return f"{rec['model']}-p{rec['prompt_id']}-{fn}-" + "-".join(str(rec["params"].get(k)) for k in keys)


def decode(model, rec: dict, **changes):
    params, G = reference_params(rec)
    before = model.n_forward
    (result,) = decoders.get("block-diffusion", **{**params, **changes}).generate(model, [rec["prompt"]], G)
    result.check_bookkeeping()
    assert result.n_forward == model.n_forward - before
    return result


def expected_tokens(rec: dict, eos_ids) -> list[int]:
    out = rec["output_ids"]
    cut = next((i for i, t in enumerate(out) if t in eos_ids), None)  # DecodeResult cuts after the first EOS
    return out if cut is None else out[: cut + 1]


@pytest.fixture(scope="module")
def golden_models(llada_tiny, dream_tiny):
    if not RECORDS:
        pytest.skip(f"{GOLDEN} is absent (set PDBENCH_FIXTURES)")
    return {"llada-tiny": llada_tiny, "dream-tiny": dream_tiny}


@pytest.mark.parametrize("index", range(len(RECORDS) or 46), ids=[record_id(r) for r in RECORDS] or None)
def test_golden_record(golden_models, index):
    rec = RECORDS[index]
    model = golden_models[rec["model"]]
    result = decode(model, rec)
    assert result.tokens == expected_tokens(rec, model.eos_ids)
    assert result.n_forward == rec["nfe"]
    if len(result.tokens) == len(rec["output_ids"]):  # nothing cut: the per-forward counts match too
        assert result.accepted == rec["tokens_per_step"]


def test_all_46_records_are_checked():
    if not RECORDS:
        pytest.skip(f"{GOLDEN} is absent")
    assert len(RECORDS) == 46


@pytest.mark.parametrize("index", [i for i, r in enumerate(RECORDS) if "_cache" in r["function"]
                                   and r["params"].get("threshold") is not None] or [0])
def test_extra_forward_only_costs_forwards(golden_models, index):
    """LLaDA's cached variants: without the quirk, the forwards that decided nothing after a refresh
    that completed its block are gone; every token is the same."""
    rec = RECORDS[index]
    model = golden_models[rec["model"]]
    efficient = decode(model, rec, extra_forward=False)
    assert efficient.tokens == expected_tokens(rec, model.eos_ids)
    assert efficient.n_forward == rec["nfe"] - rec["tokens_per_step"].count(0)
    assert efficient.accepted == [a for a in rec["tokens_per_step"] if a]


def eos_heavy_bidirectional(prompts):
    """A tiny random Llama run as a LLaDA-family model whose head makes EOS win wherever its most
    frequent output token won, so stopping at EOS has something to stop."""
    from collections import Counter

    import torch

    model = HFModelAdapter(tiny_model("llama", seed=1), tiny_tokenizer(), family="llada")
    first = decoders.get("block-diffusion", block_size=4, stop_at_eos=False).generate(model, prompts, 24)
    common = Counter(t for r in first for t in r.tokens).most_common(1)[0][0]
    head = model.hf_model.get_output_embeddings().weight
    with torch.no_grad():
        head[model.eos_ids[0]] = head[common] * 1.05
    return model


@pytest.mark.parametrize("params", [dict(policy="threshold", threshold=0.5),
                                    dict(policy="steps", max_steps_per_block=4, cache="dual", extra_forward=True)])
def test_stop_at_eos_only_costs_forwards(prompts, params):
    model = eos_heavy_bidirectional(prompts)
    run = lambda stop: decoders.get("block-diffusion", block_size=4, stop_at_eos=stop, **params).generate(  # noqa: E731
        model, prompts, 24)
    full, stopped = run(False), run(True)
    assert [r.tokens for r in stopped] == [r.tokens for r in full]
    assert any(r.finish == "eos" for r in full)
    assert all(s.n_forward <= f.n_forward for s, f in zip(stopped, full))
    assert sum(s.n_forward for s in stopped) < sum(f.n_forward for f in full)
    for s, f in zip(stopped, full):  # the forwards both ran decided the same tokens
        assert s.accepted == f.accepted[: s.n_forward]
