"""The masked-diffusion toy: its training batches (LLaDA's objective), a tiny end-to-end training run
that the harness loads as a LLaDA-family model, and the shipped checkpoint (size, family; accuracy
floors in the slow test)."""

from __future__ import annotations

import json

import pytest
import torch

import decoders
from harness.models import SHIPPED_CHECKPOINTS, load_model
from toy.train_mdm import IGNORE, MDMConfig, batches, load_toy_tokenizer, train

MDM = SHIPPED_CHECKPOINTS / "pdbench-toy-mdm"


@pytest.mark.parametrize("prompt_mask_frac", [0.0, 1.0])
def test_batches_follow_llada_objective_and_attend_within_an_example(prompt_mask_frac):
    """SFT form: the prompt clean, answer slots masked at ratio t, loss on exactly those, weight 1/t.
    Pre-training form (prompt_mask_frac): the whole example noised, weight gen_len / (t * length)."""
    tok = load_toy_tokenizer()
    cfg = MDMConfig(out="unused", rows=2, row_len=256, gen_len=64, prompt_mask_frac=prompt_mask_frac)
    ids, pos, mask, labels, weights, n_examples = next(batches(cfg, tok))
    starts = (pos == 0).logical_and(ids != tok.pad_token_id).nonzero().tolist()  # [row, column] of each example
    assert n_examples == len(starts) >= 2
    for r, s in starts:
        rest = pos[r, s + 1:]
        n = 1 + int((rest > 0).cumprod(0).sum())  # positions count up until the next example or the filler
        visible = mask[r, 0, s:s + n, :] == 0
        assert visible[:, s:s + n].all() and visible.sum() == n * n  # bidirectional, this example only
        noised = slice(s + n - 64, s + n) if prompt_mask_frac == 0 else slice(s, s + n)
        masked = ids[r, noised] == tok.mask_token_id
        assert (labels[r, noised] != IGNORE).eq(masked).all()  # loss exactly on the masked slots
        if prompt_mask_frac == 0:  # the prompt is never masked nor scored
            assert (labels[r, s:s + n - 64] == IGNORE).all()
            assert (ids[r, s:s + n - 64] != tok.mask_token_id).all()
        if masked.any():  # one ratio per example: every masked slot carries the same weight
            w = weights[r, noised][masked]
            length = 64 if prompt_mask_frac == 0 else n
            assert torch.allclose(w, w[0].expand_as(w)) and w[0] * length / 64 >= 1.0


@pytest.mark.parametrize("init,logits,family", [("", "in-place", "llada"), ("pdbench-toy", "shifted", "dream")])
def test_short_training_run_loads_as_a_bidirectional_model(tmp_path, init, logits, family):
    """From scratch (a tiny LLaDA-style model) and from the causal toy (Dream's recipe): the harness
    loads the result with the family the config declares and block-diffusion decodes it."""
    out = train(MDMConfig(out=str(tmp_path), steps=2, rows=1, row_len=256, hidden=32, layers=1, heads=2, kv_heads=2,
                          intermediate=64, threads=1, log_every=1, probe_every=1, compile=False, fused_adamw=False,
                          init=init, logits=logits), ["--out", "x"])
    record = json.loads((out / "run.json").read_text())
    assert record["wall_s"] > 0 and record["cpu_s"] >= 0 and record["config"]["steps"] == 2
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(0 <= row["copy_acc"] <= 1 for row in log)
    adapter = load_model(str(out), device="cpu")
    assert (adapter.family.name, adapter.family.attention, adapter.family.logits) == (family, "bidirectional", logits)
    assert adapter.mask_id == adapter.tokenizer.mask_token_id
    prompts = [adapter.tokenizer.encode("Write a Python function f(x)"), adapter.tokenizer.encode("Ann has")]
    for r in decoders.get("block-diffusion", block_size=4, cache="dual").generate(adapter, prompts, 8):
        r.check_bookkeeping()


@pytest.mark.skipif(not (MDM / "config.json").exists(), reason="pdbench-toy-mdm not shipped")
def test_shipped_mdm_checkpoint_is_small_and_bidirectional():
    assert (MDM / "model.safetensors").stat().st_size <= 20e6
    assert (MDM / "README.md").exists()
    config = json.loads((MDM / "config.json").read_text())
    assert (config["pdbench_family"], config["architectures"]) == ("dream", ["Qwen2ForCausalLM"])
    assert "text_mask_token_id" not in config  # not an SDLM-family model any more


# (policy params, cache) -> (min accuracy, min mean tokens per forward) on the first 30 toy-code test
# problems; measured values in the comments, floors a margin below (toy/TRAINING-mdm.md has the 100-problem run)
FLOORS = {
    (("policy", "steps"), ("max_steps_per_block", 16)): (0.75, 0.6),  # 0.83 (25/30), TPF 0.68 (none and dual)
    (("policy", "threshold"), ("threshold", 0.9)): (0.75, 5.3),  # 0.83, TPF 5.95 (none) / 5.96 (dual)
}


@pytest.mark.slow
@pytest.mark.skipif(not (MDM / "config.json").exists(), reason="pdbench-toy-mdm not shipped")
@pytest.mark.parametrize("cache", ["none", "dual"])
@pytest.mark.parametrize("params", list(FLOORS), ids=["llada-steps", "threshold-0.9"])
def test_shipped_mdm_accuracy_floors(params, cache):
    import suites
    from toy.evaluate import decode_and_grade

    adapter = load_model("pdbench-toy-mdm", device="cpu", dtype="float32")
    suite = suites.get("toy-code", limit=30, allow_code_exec=True)
    samples = list(suite.samples())
    prompts = [suite.render(s, adapter.tokenizer) for s in samples]
    decoder = decoders.get("block-diffusion", block_size=16, cache=cache, **dict(params))
    results, accuracy, _ = decode_and_grade(adapter, suite, samples, prompts, decoder, 64, 10)
    min_acc, min_tpf = FLOORS[params]
    assert accuracy >= min_acc
    assert sum(r.tpf for r in results) / len(results) >= min_tpf
