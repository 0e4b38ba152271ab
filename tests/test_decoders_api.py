"""Registry, parameter validation, EOS and length limits, bookkeeping, sampling."""

from __future__ import annotations

import pytest

import decoders
from decoders.base import DecodeResult, DecoderConfigError
from harness.adapter import HFModelAdapter
from harness.rows import BookkeepingError, check_batch
from harness.tiny import tiny_model, tiny_tokenizer
from tests.conftest import make_adapter

ALL = [
    ("ar", {}),
    ("sdlm-conf", dict(block_size=4, threshold=0.5)),
    ("sdlm-conf", dict(block_size=8, threshold=0.0)),
    ("sdlm-ssd", dict(block_size=4)),
    ("block-diffusion", dict(block_size=4, threshold=0.3)),
    ("block-diffusion", dict(block_size=8, threshold=1.0, max_steps_per_block=3)),
    ("hf-generate", {}),
    ("prompt-lookup", dict(draft_len=3)),
    ("draft-spec", dict(drafter="tiny-random-qwen2", draft_len=3)),
]


def test_registry_names():
    assert {"ar", "sdlm-conf", "sdlm-ssd", "block-diffusion", "hf-generate", "diffusion-gemma", "prompt-lookup",
            "draft-spec"} <= set(decoders.available())


def test_every_packaged_decoder_names_its_source():
    for name in decoders.available():
        cls = decoders.get_class(name)
        if cls.__module__.startswith("decoders."):
            assert cls.source and "\n" not in cls.source, name


def test_unknown_decoder_suggests_close_names():
    with pytest.raises(KeyError, match="did you mean 'sdlm-conf'"):
        decoders.get("sdlm-cof")


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match="no parameter 'treshold'.*did you mean 'threshold'"):
        decoders.get("sdlm-conf", treshold=0.5)


@pytest.mark.parametrize("name,params,bad", [
    ("sdlm-conf", dict(threshold=1.5), "threshold=1.5"),
    ("sdlm-conf", dict(threshold=-0.1), "threshold=-0.1"),
    ("sdlm-conf", dict(block_size=0), "block_size=0"),
    ("sdlm-ssd", dict(block_size=-2), "block_size=-2"),
    ("sdlm-conf", dict(confidence="margin"), "confidence='margin'"),
    ("block-diffusion", dict(threshold=2), "threshold=2"),
    ("block-diffusion", dict(max_steps_per_block=-1), "max_steps_per_block=-1"),
    ("ar", dict(temperature=-1.0), "temperature=-1.0"),
    ("ar", dict(top_p=0.0), "top_p=0.0"),
    ("ar", dict(max_nfe=-1), "max_nfe=-1"),
    ("ar", dict(trace=1), "trace=1"),
    ("prompt-lookup", dict(max_ngram=0), "max_ngram=0"),
    ("prompt-lookup", dict(draft_len=0), "draft_len=0"),
    ("draft-spec", dict(), "drafter=''"),
    ("draft-spec", dict(drafter="tiny-random-llama", draft_len=0), "draft_len=0"),
    ("diffusion-gemma", dict(t_max=0.3), "t_max=0.3"),
    ("diffusion-gemma", dict(entropy_bound=0), "entropy_bound=0"),
    ("diffusion-gemma", dict(max_denoising_steps=0), "max_denoising_steps=0"),
    ("diffusion-gemma", dict(canvas_length=-1), "canvas_length=-1"),
    ("diffusion-gemma", dict(temperature=0.7), "temperature=0.7"),
    ("diffusion-gemma", dict(use_cache=False), "use_cache=False"),
    ("diffusion-gemma", dict(engine="static"), "engine='static'"),
    ("diffusion-gemma", dict(max_nfe=1), "max_nfe=1"),
])
def test_bad_parameters_raise_naming_value_and_allowed(name, params, bad):
    with pytest.raises(DecoderConfigError, match="allowed") as info:
        decoders.get(name, **params)
    assert bad in str(info.value)


@pytest.mark.parametrize("name", ["sdlm-conf", "sdlm-ssd", "block-diffusion"])
def test_missing_mask_token_raises_before_any_forward(name):
    tok = tiny_tokenizer()
    tok.mask_token = None
    model = tiny_model()
    adapter = HFModelAdapter(model, tok)
    adapter.mask_id = None  # the tiny vocabulary still has the token text; simulate a model without one
    with pytest.raises(DecoderConfigError, match="add_mask_token"):
        decoders.get(name).generate(adapter, [[1, 2, 3]], 4)
    assert adapter.n_forward == 0


def word_tokenizer():
    """A vocabulary with no mask token at all."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<eos>": 2, "[UNK]": 3}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="[UNK]")


def test_mask_token_found_in_tokenizer():
    assert HFModelAdapter(tiny_model(), tiny_tokenizer()).mask_id == tiny_tokenizer().mask_token_id


def test_add_mask_token_initialises_mean_row():
    assert HFModelAdapter(tiny_model(), word_tokenizer()).mask_id is None
    added = HFModelAdapter(tiny_model(), word_tokenizer(), add_mask_token=True)
    assert added.mask_id == 4 and added.mask_added and added.mask_id not in added.eos_ids
    for emb in (added.hf_model.get_input_embeddings(), added.hf_model.get_output_embeddings()):
        assert emb.weight[4].allclose(emb.weight[:4].mean(0), atol=1e-6)
    res = decoders.get("sdlm-conf", block_size=4).generate(added, [[0, 1, 0]], 6)
    res[0].check_bookkeeping()
    assert res[0].n_tokens == 6 or res[0].finish == "eos"


def eos_adapter():
    """A tiny model whose EOS set is the two most frequent tokens of its own greedy output, so that
    every decoder meets EOS within a few tokens."""
    adapter = make_adapter("qwen2", seed=1)
    out = decoders.get("ar").generate(adapter, [[5, 6, 7], [9]], 30)
    counts = {}
    for r in out:
        for t in r.tokens:
            counts[t] = counts.get(t, 0) + 1
    adapter.eos_ids = tuple(sorted(counts, key=counts.get, reverse=True)[:2])
    return adapter


@pytest.mark.parametrize("name,params", ALL)
def test_output_cut_after_first_eos(name, params):
    adapter = eos_adapter()
    prompts = [[5, 6, 7], [9], [11, 12, 13, 14, 15]]
    for r in decoders.get(name, **params).generate(adapter, prompts, 40):
        r.check_bookkeeping()
        eos_at = [i for i, t in enumerate(r.tokens) if t in adapter.eos_ids]
        if r.finish == "eos":
            assert eos_at == [len(r.tokens) - 1]
        else:
            assert not eos_at and len(r.tokens) == 40
    assert any(r.finish == "eos" for r in decoders.get(name, **params).generate(adapter, prompts, 40))


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("name,params", ALL)
def test_never_past_max_new_tokens(tiny_qwen2, prompts, name, params, limit):
    params = {**params, "threshold": 0.0} if "threshold" in params else params  # accept whole blocks
    for r in decoders.get(name, **params).generate(tiny_qwen2, prompts, limit):
        r.check_bookkeeping()
        assert len(r.tokens) == limit and r.finish == "length"
        assert r.ttft_s <= r.e2e_s and all(s > 0 for s in r.step_s)


@pytest.mark.parametrize("name,params", ALL)
def test_sampling_is_seeded(tiny_qwen2, prompts, name, params):
    kw = dict(params, temperature=0.8, top_p=0.9, top_k=50)
    a = decoders.get(name, seed=1, **kw).generate(tiny_qwen2, prompts, 16)
    b = decoders.get(name, seed=1, **kw).generate(tiny_qwen2, prompts, 16)
    c = decoders.get(name, seed=2, **kw).generate(tiny_qwen2, prompts, 16)
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert [r.tokens for r in a] != [r.tokens for r in c]
    greedy = decoders.get(name, **params).generate(tiny_qwen2, prompts, 16)
    assert [r.tokens for r in a] != [r.tokens for r in greedy]


@pytest.mark.parametrize("name,params", ALL)
def test_forward_counts_agree_with_the_adapter(tiny_qwen2, prompts, name, params):
    """The adapter counts every call of the network itself; a decoder's rows must agree with it."""
    for batch in ([prompts[0]], prompts):
        before = tiny_qwen2.n_forward
        results = decoders.get(name, **params).generate(tiny_qwen2, batch, 12)
        ran = tiny_qwen2.n_forward - before
        assert max(r.n_forward for r in results) == ran  # the longest row took part in every forward
        check_batch(results, len(batch), ran)
        if name == "ar":
            assert all(set(r.accepted) == {1} for r in results)


def test_check_batch_catches_a_misreporting_decoder(tiny_qwen2, prompts):
    results = decoders.get("sdlm-conf", block_size=4, threshold=0.5).generate(tiny_qwen2, prompts, 8)
    ran = max(r.n_forward for r in results)
    check_batch(results, len(prompts), ran)
    with pytest.raises(BookkeepingError, match="2 results for 3 prompts"):
        check_batch(results[:2], len(prompts), ran)
    with pytest.raises(BookkeepingError, match="the adapter ran"):
        check_batch(results, len(prompts), ran - 1)  # a row claims a forward that never ran
    padded = DecodeResult(results[0].tokens, results[0].accepted + [0], "length", results[0].step_s, 0.0, 0.0)
    with pytest.raises(BookkeepingError, match="len\\(accepted\\)"):
        check_batch([padded, *results[1:]], len(prompts), ran + 1)


def test_registry_refuses_a_taken_name_and_unregisters():
    from decoders.ar import AR

    with pytest.raises(ValueError, match="'ar' is already registered by AR"):
        decoders.register("ar")(type("Impostor", (AR,), {}))
    decoders.register("ar-alias")(type("Alias", (AR,), {}))
    assert "ar-alias" in decoders.available()
    decoders.unregister("ar-alias")
    assert "ar-alias" not in decoders.available()


def test_empty_prompt_and_bad_length_rejected(tiny_qwen2):
    with pytest.raises(ValueError, match="at least one token"):
        decoders.get("ar").generate(tiny_qwen2, [[]], 4)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        decoders.get("ar").generate(tiny_qwen2, [[1]], 0)
