"""Tiny random-weight models with a byte-level tokenizer: tests, smoke presets, `pdbench verify` demos.

The tokenizer is lossless on any text (256 byte symbols, no merges) and has ChatML specials, a mask
token and a chat template, so real suites render and round-trip through it.
"""

from __future__ import annotations

import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(chat_template: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        mask_token="<|mask|>", additional_special_tokens=["<|im_start|>"],
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    if chat_template:
        tok.chat_template = CHATML
    return tok


def tiny_config(arch: str = "qwen2", vocab_size: int = 260, **overrides):
    from transformers import LlamaConfig, Qwen2Config

    kw = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, intermediate_size=128, max_position_embeddings=4096,
              tie_word_embeddings=False)
    kw.update(overrides)
    if arch == "qwen2":
        return Qwen2Config(**kw)
    if arch == "llama":
        return LlamaConfig(**kw)
    raise ValueError(f"unknown tiny architecture {arch!r}; accepted: qwen2, llama")


def tiny_model(arch: str = "qwen2", seed: int = 0, attn_implementation: str = "sdpa", **overrides):
    """Random weights; `seed` makes them reproducible. Logits are scaled up (std 0.5 init) so that
    greedy decisions are far from ties: exact-equality tests need clear argmaxes."""
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    cfg = tiny_config(arch, vocab_size=len(tok), initializer_range=0.5, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **overrides)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation).eval()
