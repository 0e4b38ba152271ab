"""DESIGN.md's invariants on a CUDA GPU, in fp32 and bf16, on the tiny random-weight models of
tests/conftest.py (marker `cuda`: skipped without a GPU; `bash tests/gpu/check.sh` runs them).

fp32 comparisons are exact, token for token and forward for forward, as on the CPU (TF32 off).
bf16 comparisons are exact only where both sides run the same kernels on the same inputs: a repeated
run, and block-diffusion against sdlm-conf at threshold 0, whose forwards are the same tensors. Every
other bf16 comparison (cache, static engine, SSD, generate) rounds differently on each side, so it is
equal up to a certified knife edge (tests/gpu/knife_edge.py); batched vs one by one is fp32 only.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.gpu.knife_edge import assert_agree, canonical, shape_noise
from tests.test_invariants import CONFIGS, NEW, assert_same, run, tokens
from tests.test_static import CONFIGS as STATIC_CONFIGS
from tests.test_unmask_policies import IDS as POLICY_IDS
from tests.test_unmask_policies import POLICIES

pytestmark = pytest.mark.cuda

BF16_CONFIGS = [c for c in CONFIGS if canonical(*c)]  # the configs a bf16 divergence can be certified for


def cases(fp32_configs):
    """(dtype, name, params) for fp32 over `fp32_configs` and bf16 over the certifiable configs."""
    out = [("fp32", n, p) for n, p in fp32_configs] + [("bf16", n, p) for n, p in BF16_CONFIGS]
    ids = [f"{d}-{n}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for d, n, p in out]
    return pytest.mark.parametrize("dtype,name,params", out, ids=ids)


@pytest.fixture(scope="session")
def noise(models, prompts):
    """noise(kind) -> the bf16 shape noise of that model on this device (knife_edge.shape_noise)."""
    seen = {}

    def get(kind: str) -> float:
        if kind not in seen:
            seen[kind] = shape_noise(models(kind, "bf16"), prompts)
        return seen[kind]

    return get


def check_equal(model, prompts, got, want, dtype, config, noise, what, accepted=True):
    if dtype == "fp32":
        assert_same(tokens(got), tokens(want), what)
        if accepted:
            assert [r.accepted for r in got] == [r.accepted for r in want], f"{what}: accepted differ"
    else:
        assert_agree(model, prompts, tokens(got), tokens(want), canonical(*config), noise, what)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@cases(CONFIGS)
def test_cache_equals_no_cache(models, noise, prompts, kind, dtype, name, params):
    model = models(kind, dtype)
    cached = run(model, name, prompts, use_cache=True, **params)
    uncached = run(model, name, prompts, use_cache=False, **params)
    check_equal(model, prompts, cached, uncached, dtype, (name, params), dtype == "bf16" and noise(kind),
                f"{name} cached vs uncached ({kind}, {dtype})")


@pytest.mark.parametrize("kind", ["qwen2", "llama", "binary"])
@cases(STATIC_CONFIGS)
def test_static_equals_dynamic(models, noise, prompts, kind, dtype, name, params):
    model = models(kind, dtype)
    dynamic = run(model, name, prompts, **params)
    static = run(model, name, prompts, engine="static", **params)
    check_equal(model, prompts, static, dynamic, dtype, (name, params), dtype == "bf16" and noise(kind),
                f"{name} static vs dynamic engine ({kind}, {dtype})")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["qwen2", "binary"])
@pytest.mark.parametrize("D", [2, 4, 8])
def test_ssd_equals_first_token_only(models, noise, prompts, dtype, kind, D):
    model = models(kind, dtype)
    ssd = run(model, "sdlm-ssd", prompts, block_size=D)
    first_only = run(model, "sdlm-conf", prompts, block_size=D, threshold=1.0)
    assert all(a == 1 for r in first_only for a in r.accepted)
    check_equal(model, prompts, ssd, first_only, dtype, ("sdlm-ssd", {"block_size": D}),
                dtype == "bf16" and noise(kind), f"sdlm-ssd D={D} vs sdlm-conf threshold=1 ({kind}, {dtype})",
                accepted=False)
    if kind == "binary":  # the accept path ran: more than one token per forward
        assert max(r.tpf for r in ssd) > 1.3


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_ar_equals_generate(models, noise, prompts, dtype, kind):
    model = models(kind, dtype)
    results = run(model, "ar", prompts)  # one batch of prompts of different lengths
    hf = []
    for p in prompts:  # generate() one prompt at a time: no padding on its side
        ids = torch.tensor([p], device=model.device)
        out = model.hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW,
                                      eos_token_id=list(model.eos_ids), pad_token_id=model.pad_id)
        hf.append(out[0, len(p):].tolist())
    assert all(r.tpf == 1.0 for r in results)
    if dtype == "fp32":
        assert_same(tokens(results), hf, f"ar vs generate ({kind}, fp32)")
    else:
        assert_agree(model, prompts, tokens(results), hf, (1, False), noise(kind), f"ar vs generate ({kind}, bf16)")


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@pytest.mark.parametrize("name,params", CONFIGS)
def test_batched_equals_one_by_one_fp32(models, prompts, kind, name, params):
    model = models(kind, "fp32")
    batched = run(model, name, prompts, **params)
    single = [run(model, name, [p], **params)[0] for p in prompts]
    assert_same(tokens(batched), tokens(single), f"{name} batch of 3 vs one by one ({kind}, fp32)")
    assert [r.accepted for r in batched] == [r.accepted for r in single]


@pytest.mark.parametrize("engine", ["dynamic", "static"])
@pytest.mark.parametrize("name,params", CONFIGS)
def test_bf16_repeat_is_identical(models, prompts, engine, name, params):
    """Same kernels, same inputs: bit for bit the same logits, so exact in bf16 too."""
    model = models("qwen2", "bf16")
    first = run(model, name, prompts, engine=engine, **params)
    again = run(model, name, prompts, engine=engine, **params)
    assert tokens(again) == tokens(first) and [r.accepted for r in again] == [r.accepted for r in first]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("engine", ["dynamic", "static"])
@pytest.mark.parametrize("D", [2, 4])
def test_block_diffusion_equals_sdlm_conf_at_threshold_0(models, prompts, dtype, engine, D):
    """Both run one window [head, mask...] per block over the same committed prefix: the same tensors
    go through the same kernels, so this is exact in bf16 as well."""
    model = models("qwen2", dtype)
    bd = run(model, "block-diffusion", prompts, block_size=D, threshold=0.0, engine=engine)
    conf = run(model, "sdlm-conf", prompts, block_size=D, threshold=0.0, engine=engine)
    assert tokens(bd) == tokens(conf) and [r.accepted for r in bd] == [r.accepted for r in conf]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("engine", ["dynamic", "static"])
@pytest.mark.parametrize("name,params", BF16_CONFIGS[:2] + BF16_CONFIGS[4:5])
def test_forward_counts_and_device_times(models, prompts, dtype, engine, name, params):
    """The adapter counts every forward, and times each on the device (CUDA events): every step time is
    positive, and a row's forwards, run one after another, fit inside its wall time."""
    model = models("qwen2", dtype)
    for batch in (prompts[:1], prompts):
        before = model.n_forward
        results = run(model, name, batch, engine=engine, **params)
        assert max(r.n_forward for r in results) == model.n_forward - before
        for r in results:
            assert all(math.isfinite(s) and s > 0 for s in r.step_s), r.step_s
            assert sum(r.step_s) <= r.e2e_s * 1.01 + 1e-3, (sum(r.step_s), r.e2e_s)


@pytest.fixture(scope="session")
def block_models(device):
    """block_models(family) -> a tiny fp32 model on the device: causal (None) or run as LLaDA / Dream."""
    from harness.adapter import HFModelAdapter
    from harness.tiny import tiny_model, tiny_tokenizer

    built = {}

    def get(family):
        if family not in built:
            arch, seed = {None: ("qwen2", 0), "llada": ("llama", 2), "dream": ("qwen2", 2)}[family]
            built[family] = HFModelAdapter(tiny_model(arch, seed=seed).to(device), tiny_tokenizer(), family=family)
        return built[family]

    return get


@pytest.mark.parametrize("family", [None, "llada", "dream"])
@pytest.mark.parametrize("name,params", POLICIES, ids=POLICY_IDS)
def test_block_policies_fp32(block_models, prompts, family, name, params):
    """The unmasking policies with their tensors on the device, on both block engines: batched equals one
    by one (fp32), the bookkeeping holds, and on the causal engine cached = uncached = static."""
    model = block_models(family)
    batched = run(model, name, prompts, **params)
    alone = [run(model, name, [p], **params)[0] for p in prompts]
    assert [(r.tokens, r.accepted) for r in batched] == [(r.tokens, r.accepted) for r in alone]
    if family is None:
        for other in (dict(use_cache=False), dict(engine="static")):
            again = run(model, name, prompts, **params, **other)
            assert [(r.tokens, r.accepted) for r in again] == [(r.tokens, r.accepted) for r in batched], other
