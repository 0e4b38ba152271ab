"""The toy tokenizer round-trips exactly through the harness's loader, and is reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import suites
from harness.models import TOY_CHECKPOINT, load_tokenizer
from toy.tokenizer import CHAT_TEMPLATE, IM_END, IM_START, MASK, PAD, build_backend, build_tokenizer, save_tokenizer
from suites.prompts import SYSTEM_PROMPT

ODD_TEXTS = [
    "Weird  spacing\n\n\tand tabs   ",
    " leading space, ünïcödé, emoji \U0001F600, CJK 数学",
    "1234567890 -42 3.14159 1,000 \\boxed{12}",
    "```python\ndef f(x):\n    return [x * 2 for x in xs if x % 3 == 0]\n```",
    "a<|im_end|>b",  # special token text inside ordinary text
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A freshly built tokenizer saved like the checkpoint's, then loaded the harness's way."""
    out = tmp_path_factory.mktemp("toy_tok")
    save_tokenizer(build_tokenizer(), out)
    return out


def sample_texts():
    texts = list(ODD_TEXTS)
    for name in ("arith", "toy-code"):
        for sample in suites.get(name, limit=30).samples():
            texts += [sample.messages[-1]["content"], sample.meta["solution"]]
    return texts


def test_loader_takes_the_generic_fast_class(saved):
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["clean_up_tokenization_spaces"] is False
    tok = load_tokenizer(str(saved))
    assert "Qwen2" not in type(tok).__name__


def test_round_trip_is_exact_through_the_loader(saved):
    tok = load_tokenizer(str(saved))
    for text in sample_texts():
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text, text
    # digits are always single tokens (what makes arithmetic learnable)
    digit_ids = tok.encode("9081726354", add_special_tokens=False)
    assert len(digit_ids) == 10


def test_special_tokens_and_chat_template(saved):
    tok = load_tokenizer(str(saved))
    assert tok.convert_tokens_to_ids([PAD, IM_START, IM_END, MASK]) == [0, 1, 2, 3]
    assert (tok.pad_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 2, 3)
    assert tok.decode([tok.mask_token_id]) == MASK
    assert tok.encode(MASK + IM_END, add_special_tokens=False) == [3, 2]
    messages = [{"role": "user", "content": "Hi 12"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (f"{IM_START}system\n{SYSTEM_PROMPT}{IM_END}\n{IM_START}user\nHi 12{IM_END}\n"
                    f"{IM_START}assistant\n")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert tok.decode(ids) == text and ids[0] == tok.convert_tokens_to_ids(IM_START)
    assert tok.chat_template == CHAT_TEMPLATE


def test_merges_are_reproducible():
    a, b = build_backend(), build_backend()
    assert a.to_str() == b.to_str()


@pytest.mark.skipif(not (TOY_CHECKPOINT / "tokenizer.json").exists(), reason="no shipped checkpoint")
def test_shipped_tokenizer_matches_a_fresh_build_and_round_trips():
    shipped = json.loads((TOY_CHECKPOINT / "tokenizer.json").read_text())
    fresh = json.loads(build_backend().to_str())
    assert shipped["model"] == fresh["model"]
    tok = load_tokenizer(str(TOY_CHECKPOINT))
    for text in sample_texts():
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    config = json.loads((Path(TOY_CHECKPOINT) / "config.json").read_text())
    assert config["text_mask_token_id"] == tok.mask_token_id and config["vocab_size"] == len(tok)
