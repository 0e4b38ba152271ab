"""The unmasking policies on the block engines (eb-sampler, credit-threshold, sub-block, margin-threshold):
each rule on hand-built tensors with a known answer; DESIGN.md's invariants on tiny random-weight models
on both engines (causal: tiny Qwen2; canvas: tiny Llama / Qwen2 run as LLaDA- / Dream-family models),
fp32 on CPU; the degenerate settings that must equal block-diffusion exactly; parameter errors."""

from __future__ import annotations

import math

import pytest
import torch

import decoders
from decoders.base import DecoderConfigError
from decoders.credit_threshold import credit_step
from decoders.eb_sampler import entropy_bounded
from decoders.margin_threshold import top2_margin
from decoders.sub_block import current_sub_block
from decoders.unmask import Step
from harness.adapter import HFModelAdapter
from harness.rows import check_batch
from harness.tiny import tiny_model, tiny_tokenizer
from tests.conftest import decode_checked

NEW = 16
INF = float("-inf")


# ---- the rules on hand-built tensors ------------------------------------------------------------------


def make_step(probs, conf=None, open_=None, step=0, steps=8, strict=True, state=None, start=0) -> Step:
    """A Step for A rows x n slots whose distributions are `probs` [A, n, V] (logits = log probs)."""
    probs = torch.tensor(probs, dtype=torch.float32)
    A, n, _ = probs.shape
    open_ = torch.ones(A, n, dtype=torch.bool) if open_ is None else torch.tensor(open_)
    conf = probs.max(-1).values if conf is None else torch.tensor(conf, dtype=torch.float32)
    return Step(logits=probs.clamp_min(1e-12).log(), scored=torch.arange(n), tokens=probs.argmax(-1),
                conf=conf.masked_fill(~open_, INF), open=open_, step=torch.full((A,), step), start=[start] * A,
                steps=steps, state=state if state is not None else [{} for _ in range(A)], strict=strict)


def taken(decoder, s: Step) -> list[list[bool]]:
    return decoder.select(s).tolist()


def test_entropy_bounded_takes_the_longest_prefix_under_the_bound():
    # confidence order: slot 0, 2, 3, 1; entropies in that order 0.1, 0.2, 0.05, 0.3
    conf = torch.tensor([[0.9, 0.5, 0.8, 0.7]])
    H = torch.tensor([[0.1, 0.3, 0.2, 0.05]])
    open_ = torch.ones(1, 4, dtype=torch.bool)
    # sum - max along the order: 0, 0.1, 0.15, 0.35
    assert entropy_bounded(conf, H, open_, 0.0).tolist() == [[True, False, False, False]]
    assert entropy_bounded(conf, H, open_, 0.12).tolist() == [[True, False, True, False]]
    assert entropy_bounded(conf, H, open_, 0.2).tolist() == [[True, False, True, True]]
    assert entropy_bounded(conf, H, open_, 0.4).tolist() == [[True, True, True, True]]
    # the plain sum (subtract_max=False): 0.1, 0.3, 0.35, 0.65 along the order; at least one slot
    assert entropy_bounded(conf, H, open_, 0.05, subtract_max=False).tolist() == [[True, False, False, False]]
    assert entropy_bounded(conf, H, open_, 0.32, subtract_max=False).tolist() == [[True, False, True, False]]
    assert entropy_bounded(conf, H, open_, 0.5, subtract_max=False).tolist() == [[True, False, True, True]]
    # a closed slot is skipped, whatever its confidence; a row with none open decides nothing
    closed0 = torch.tensor([[False, True, True, True], [False, False, False, False]])
    assert entropy_bounded(conf.expand(2, 4), H.expand(2, 4), closed0, 0.12).tolist() == [
        [False, False, True, True], [False, False, False, False]]


def test_eb_sampler_reads_entropies_from_the_logits():
    # slots: A = uniform over 2 tokens (H = ln 2), B = uniform over 4 (ln 4), C = almost certain (H ~ 0)
    probs = [[[0.5, 0.5, 0.0, 0.0], [0.25] * 4, [1 - 3e-6, 1e-6, 1e-6, 1e-6]]]
    eb = lambda bound: decoders.get("eb-sampler", entropy_bound=bound, confidence="prob")  # noqa: E731
    # order by p: C, A, B; sum - max: 0, H_C, H_C + ln 2
    assert taken(eb(0.0), make_step(probs)) == [[False, False, True]]
    assert taken(eb(0.5), make_step(probs)) == [[True, False, True]]
    assert taken(eb(0.8), make_step(probs)) == [[True, True, True]]
    assert taken(eb(0.0), make_step(probs, step=7)) == [[True, True, True]]  # the block's last allowed forward
    plain_sum = decoders.get("eb-sampler", entropy_bound=0.5, confidence="prob", subtract_max=False)
    assert taken(plain_sum, make_step(probs)) == [[False, False, True]]  # H_C + ln 2 > 0.5


def test_margin_is_the_gap_between_the_two_best_tokens():
    probs = [[[0.50, 0.45, 0.05], [0.48, 0.26, 0.26], [0.34, 0.33, 0.33]]]
    margins = top2_margin(torch.tensor(probs))
    assert margins.tolist()[0] == pytest.approx([0.05, 0.22, 0.01], abs=1e-6)
    # slot 0 is the most probable, slot 1 the least torn: the margin rule takes slot 1
    margin = lambda tau: decoders.get("margin-threshold", threshold=tau)  # noqa: E731
    assert taken(margin(0.2), make_step(probs)) == [[False, True, False]]
    assert taken(margin(0.04), make_step(probs)) == [[True, True, False]]
    assert taken(margin(0.0), make_step(probs, strict=False)) == [[True, True, True]]
    s = make_step(probs)
    margin(0.2).select(s)
    assert s.conf.tolist()[0] == pytest.approx([0.05, 0.22, 0.01], abs=1e-6)  # what the trace records
    block = decoders.get("block-diffusion", threshold=0.49)
    assert taken(block, make_step(probs)) == [[True, False, False]]


def test_credit_accumulates_for_a_lasting_argmax_and_decays():
    log = lambda p: torch.tensor([[p]]).log()  # noqa: E731  [1 row, 1 slot, V]
    open_ = torch.ones(1, 1, dtype=torch.bool)
    credit = torch.zeros(1, 1, 3)
    kw = dict(alpha=1.0, gamma=1.0, beta=0.5)
    credit, tok, conf = credit_step(log([0.6, 0.3, 0.1]), credit, open_, **kw)
    assert credit.flatten().tolist() == pytest.approx([0.6, 0, 0]) and tok.item() == 0
    assert conf.item() == pytest.approx(0.6 * 1.6 / (0.6 * 1.6 + 0.3 + 0.1))  # 0.706 > p = 0.6
    credit, tok, conf = credit_step(log([0.6, 0.3, 0.1]), credit, open_, **kw)
    assert credit[0, 0, 0].item() == pytest.approx(0.9)  # 0.5 * 0.6 + 0.6
    assert conf.item() == pytest.approx(0.6 * 1.9 / (0.6 * 1.9 + 0.4))  # 0.740: more credit, more confidence
    credit, tok, conf = credit_step(log([0.3, 0.6, 0.1]), credit, open_, **kw)  # the argmax changes
    assert credit.flatten().tolist() == pytest.approx([0.45, 0.6, 0]) and tok.item() == 1
    assert conf.item() == pytest.approx(0.6 * 1.6 / (0.3 * 1.45 + 0.6 * 1.6 + 0.1))
    # without decay, three forwards of credit let the old token win the fused argmax against a new leader
    credit = torch.zeros(1, 1, 3)
    for _ in range(3):
        credit, _, _ = credit_step(log([0.6, 0.3, 0.1]), credit, open_, alpha=1.0, gamma=1.0, beta=1.0)
    _, tok, _ = credit_step(log([0.45, 0.5, 0.05]), credit, open_, alpha=1.0, gamma=1.0, beta=1.0)
    assert tok.item() == 0
    # a closed slot earns nothing (only decays)
    credit, _, _ = credit_step(log([0.6, 0.3, 0.1]), torch.ones(1, 1, 3), ~open_, **kw)
    assert credit.flatten().tolist() == pytest.approx([0.5, 0.5, 0.5])


def test_credit_threshold_keeps_credit_per_row_and_block():
    probs = [[[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]]
    dec = decoders.get("credit-threshold", threshold=0.72, credit_alpha=1.0, boost_gamma=1.0, decay_beta=0.5)
    state = [{}]
    first = make_step(probs, open_=[[True, False]], state=state)
    dec.select(first)
    assert first.conf[0, 0].item() == pytest.approx(0.96 / 1.36)
    again = make_step(probs, open_=[[True, False]], state=state, step=1)
    assert taken(dec, again) == [[True, False]]
    assert again.conf[0, 0].item() == pytest.approx(1.14 / 1.54)  # credit from the first forward
    fresh = make_step(probs, open_=[[True, False]], state=state, start=4)  # the next block starts from zero
    dec.select(fresh)
    assert fresh.conf[0, 0].item() == pytest.approx(0.96 / 1.36)
    plain = make_step(probs)
    decoders.get("credit-threshold", credit_alpha=0.0).select(plain)
    assert plain.conf.flatten().tolist() == pytest.approx([0.6, 0.7])  # alpha 0: the plain confidence


def test_sub_block_candidates_are_the_leftmost_unfinished_sub_block():
    open_ = torch.tensor([[False, False, True, True, True, True, True, True],
                          [False, False, False, True, True, True, True, True],
                          [False] * 8])
    assert current_sub_block(open_, 3).int().tolist() == [[0, 0, 1, 0, 0, 0, 0, 0],
                                                          [0, 0, 0, 1, 1, 1, 0, 0],
                                                          [0] * 8]
    conf = [[0.1, 0.2, 0.3, 0.95, 0.4, 0.99, 0.5, 0.6]]
    probs = [[[c, 1 - c] for c in conf[0]]]
    sub = lambda b: decoders.get("sub-block", block_size=8, sub_block_size=b, threshold=0.9)  # noqa: E731
    # slots 0-3: the best of the first sub-block only, although slot 5 is the most confident
    assert taken(sub(4), make_step(probs, conf=conf)) == [[False, False, False, True] + [False] * 4]
    assert taken(sub(2), make_step(probs, conf=conf)) == [[False, True] + [False] * 6]
    assert taken(sub(8), make_step(probs, conf=conf)) == [[False] * 3 + [True, False, True, False, False]]
    assert taken(sub(2), make_step(probs, conf=conf, step=7)) == [[True] * 8]  # the last allowed forward


# ---- invariants on tiny models, both engines -------------------------------------------------------------


@pytest.fixture(scope="module", params=["causal", "llada-like", "dream-like"])
def model(request):
    arch, family, seed = {"causal": ("qwen2", None, 0), "llada-like": ("llama", "llada", 2),
                          "dream-like": ("qwen2", "dream", 2)}[request.param]
    return HFModelAdapter(tiny_model(arch, seed=seed), tiny_tokenizer(), name=f"tiny-{request.param}", family=family)


POLICIES = [
    ("eb-sampler", dict(block_size=4, entropy_bound=1.0)),
    ("eb-sampler", dict(block_size=8, entropy_bound=3.0, confidence="prob")),
    ("eb-sampler", dict(block_size=4, entropy_bound=4.0, subtract_max=False)),
    ("credit-threshold", dict(block_size=4, threshold=0.5)),
    ("credit-threshold", dict(block_size=8, threshold=0.4, boost_gamma=1.0, decay_beta=1.0)),
    ("sub-block", dict(block_size=8, sub_block_size=3, threshold=0.3)),
    ("margin-threshold", dict(block_size=4, threshold=0.2)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for n, p in POLICIES]


def run(model, name, prompts, new=NEW, **params):
    return decode_checked(model, name, prompts, new, **params)


def outputs(results):
    return [(r.tokens, r.accepted) for r in results]


@pytest.mark.parametrize("name,params", POLICIES, ids=IDS)
def test_batched_equals_one_by_one(model, prompts, name, params):
    batched = run(model, name, prompts, **params)
    assert outputs(batched) == [outputs(run(model, name, [p], **params))[0] for p in prompts]
    assert any(a > 1 for r in batched for a in r.accepted)  # the policy decides several slots at once


@pytest.mark.parametrize("name,params", POLICIES, ids=IDS)
def test_forward_counts_agree_with_the_adapter(model, prompts, name, params):
    for batch in (prompts[:1], prompts):
        before = model.n_forward
        results = run(model, name, batch, **params)
        ran = model.n_forward - before
        check_batch(results, len(batch), ran)  # max(n_forward) <= forwards run <= sum(n_forward)
        if len(batch) == 1:
            assert results[0].n_forward == ran


@pytest.mark.parametrize("engine", ["dynamic-uncached", "static"])
@pytest.mark.parametrize("name,params", POLICIES, ids=IDS)
def test_causal_engine_cache_equals_no_cache(tiny_qwen2, prompts, name, params, engine):
    kw = dict(use_cache=False) if engine == "dynamic-uncached" else dict(engine="static")
    assert outputs(run(tiny_qwen2, name, prompts, **params, **kw)) == outputs(run(tiny_qwen2, name, prompts, **params))


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_canvas_caches_run_every_policy(prompts, cache):
    """The canvas caches are approximate (test_canvas_invariants); here: every policy runs on them, batched
    equal to one by one, with the bookkeeping intact."""
    m = HFModelAdapter(tiny_model("llama", seed=2), tiny_tokenizer(), family="llada")
    for name, params in POLICIES[::2] + POLICIES[-1:]:
        batched = run(m, name, prompts, cache=cache, **params)
        assert outputs(batched) == [outputs(run(m, name, [p], cache=cache, **params))[0] for p in prompts]


# the degenerate settings: (policy, its parameters) == (block-diffusion, its parameters), token for token
DEGENERATE = [
    # entropy bound 0: one slot per forward, the most confident first = threshold 1
    (("eb-sampler", dict(entropy_bound=0.0, confidence="prob")), dict(threshold=1.0)),
    (("eb-sampler", dict(entropy_bound=0.0, confidence="entropy")), dict(threshold=1.0, confidence="entropy")),
    (("eb-sampler", dict(entropy_bound=0.0, subtract_max=False)), dict(threshold=1.0, confidence="entropy")),
    # no credit: the plain threshold rule; threshold 0: the whole block at the first forward
    (("credit-threshold", dict(credit_alpha=0.0, threshold=0.3)), dict(threshold=0.3)),
    (("credit-threshold", dict(threshold=0.0)), dict(threshold=0.0)),
    # one sub-block (b = B or more): the plain threshold rule
    (("sub-block", dict(sub_block_size=8, threshold=0.3)), dict(threshold=0.3)),
    (("sub-block", dict(sub_block_size=20, threshold=0.5, confidence="entropy")),
     dict(threshold=0.5, confidence="entropy")),
    # margin threshold 0: every slot passes, the whole block at once = threshold 0
    (("margin-threshold", dict(threshold=0.0)), dict(threshold=0.0)),
]


@pytest.mark.parametrize("policy,block", DEGENERATE, ids=[f"{p[0]}-{i}" for i, (p, _) in enumerate(DEGENERATE)])
def test_degenerate_settings_equal_block_diffusion(model, prompts, policy, block):
    name, params = policy
    got = run(model, name, prompts, block_size=8, **params)
    want = run(model, "block-diffusion", prompts, block_size=8, **block)
    assert outputs(got) == outputs(want)


def test_eb_sampler_bound_zero_is_one_token_per_forward(model, prompts):
    for r in run(model, "eb-sampler", prompts, block_size=4, entropy_bound=0.0):
        assert set(r.accepted) <= {0, 1}


def test_sub_block_forwards_stay_inside_one_sub_block(model, prompts):
    """Every forward decides slots of one sub-block only, and a block's sub-blocks finish left to right."""
    B, b = 8, 3
    for r in run(model, "sub-block", prompts, block_size=B, sub_block_size=b, threshold=0.2, trace=True):
        done = []
        for step in r.trace:
            subs = {(p // B, (p % B) // b) for p in step["pos"]}
            assert len(subs) <= 1
            done += sorted(subs)
        assert done == sorted(done)  # (block, sub-block) pairs never go back
        assert r.n_forward >= math.ceil(len(r.tokens) / b)  # at most one sub-block per forward


def test_margin_trace_records_margins_over_the_threshold(model, prompts):
    for r in run(model, "margin-threshold", prompts, block_size=4, threshold=0.3, trace=True):
        for step in r.trace:
            confs = sorted(step["conf"], reverse=True)
            assert all(c > 0.3 - 1e-6 for c in confs[1:])  # all but the forward's best passed the threshold


@pytest.mark.parametrize("name,params", [p for p in POLICIES if p[0] != "credit-threshold"][::2])
def test_sampling_is_seeded(tiny_qwen2, prompts, name, params):
    kw = dict(params, temperature=0.8, top_p=0.9, top_k=50)
    a, b, c = (run(tiny_qwen2, name, prompts, seed=s, **kw) for s in (1, 1, 2))
    assert outputs(a) == outputs(b) and outputs(a) != outputs(c)


# ---- parameters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,params,bad,allowed", [
    ("eb-sampler", dict(entropy_bound=-0.1), "entropy_bound=-0.1", "a number >= 0"),
    ("eb-sampler", dict(entropy_bound=True), "entropy_bound=True", "a number >= 0"),
    ("eb-sampler", dict(confidence="random"), "confidence='random'", "'entropy' | 'prob'"),
    ("eb-sampler", dict(subtract_max="yes"), "subtract_max='yes'", "true or false"),
    ("credit-threshold", dict(threshold=1.5), "threshold=1.5", "in [0, 1]"),
    ("credit-threshold", dict(credit_alpha=-1), "credit_alpha=-1", "a number >= 0"),
    ("credit-threshold", dict(boost_gamma=-0.5), "boost_gamma=-0.5", "a number >= 0"),
    ("credit-threshold", dict(decay_beta=1.2), "decay_beta=1.2", "in [0, 1]"),
    ("credit-threshold", dict(temperature=0.7), "temperature=0.7", "greedy"),
    ("credit-threshold", dict(confidence="entropy"), "confidence='entropy'", "'prob'"),
    ("sub-block", dict(sub_block_size=0), "sub_block_size=0", "an int >= 1"),
    ("sub-block", dict(sub_block_size=2.5), "sub_block_size=2.5", "an int >= 1"),
    ("sub-block", dict(threshold=-0.1), "threshold=-0.1", "in [0, 1]"),
    ("sub-block", dict(confidence="random"), "confidence='random'", "'prob' | 'entropy'"),
    ("margin-threshold", dict(threshold=2), "threshold=2", "in [0, 1]"),
    ("margin-threshold", dict(confidence="entropy"), "confidence='entropy'", "'prob'"),
    ("margin-threshold", dict(block_size=0), "block_size=0", "an int >= 1"),
    ("eb-sampler", dict(cache="full"), "cache='full'", "'none' | 'prefix' | 'dual'"),
])
def test_bad_parameters_name_the_parameter_and_the_accepted_values(name, params, bad, allowed):
    with pytest.raises(DecoderConfigError, match="allowed") as info:
        decoders.get(name, **params)
    assert bad in str(info.value) and allowed in str(info.value)
    assert info.value.param == bad.split("=")[0]


@pytest.mark.parametrize("name", ["eb-sampler", "credit-threshold", "sub-block", "margin-threshold"])
def test_canvas_parameters_are_refused_on_causal_models(tiny_qwen2, prompts, name):
    before = tiny_qwen2.n_forward
    with pytest.raises(DecoderConfigError, match=r"cache='dual' applies to bidirectional models only"):
        decoders.get(name, cache="dual").generate(tiny_qwen2, prompts, 4)
    assert tiny_qwen2.n_forward == before


def test_pdbench_list_shows_twelve_decoders_with_sources():
    shipped = [n for n in decoders.available() if decoders.get_class(n).__module__.startswith("decoders.")]
    assert len(shipped) >= 12
    for name in ("eb-sampler", "credit-threshold", "sub-block", "margin-threshold"):
        cls = decoders.get_class(name)
        assert cls.source and "\n" not in cls.source
        assert all(cls.allowed_values().values()), name  # every parameter says what it accepts
