"""The toy model's tokenizer: byte-level BPE learned on the synthetic suites, digits always single tokens.

Byte-level (every byte has a token, decoder concatenates bytes) makes text -> ids -> text exact for any
string; splitting digits before BPE means a number is spelled digit by digit, which is what makes
arithmetic learnable by a small model. Merges are learned on generated training problems only, so
frequent words and code boilerplate (`return`, ` for x in`, the chat framing) become single tokens
and sequences stay short.

Saved as a plain `PreTrainedTokenizerFast` (tokenizer_config.json says so): transformers 5's
AutoTokenizer would otherwise substitute `Qwen2Tokenizer` for model_type qwen2 and rebuild the
pre-tokenizer, which changes the ids. `harness.models.load_tokenizer` honours that class name.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from suites.prompts import SYSTEM_PROMPT
from toy.data import train_stream

PAD, IM_START, IM_END, MASK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<text_mask>"
SPECIALS = [PAD, IM_START, IM_END, MASK]  # ids 0..3
VOCAB_SIZE = 1024

# ChatML with Qwen's default system prompt swapped for SDLM's evaluation one (sdlm.md §1).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def corpus(n: int = 6000, seed: int = 12345):
    """Rendered training conversations (train split only) for learning the merges."""
    for p in itertools.islice(train_stream(seed, {"arith": 1.0, "code": 1.0}), n):
        yield (f"{IM_START}system\n{SYSTEM_PROMPT}{IM_END}\n{IM_START}user\n{p.prompt}{IM_END}\n"
               f"{IM_START}assistant\n{p.solution}{IM_END}\n")


def build_backend(vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def build_tokenizer(vocab_size: int = VOCAB_SIZE):
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_backend(vocab_size), bos_token=None, eos_token=IM_END, pad_token=PAD,
        mask_token=MASK, additional_special_tokens=[IM_START], clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(tokenizer, out_dir: str | Path) -> None:
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    # Pin the class the harness loader keys on (transformers 5 writes its backend's name instead).
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["clean_up_tokenization_spaces"] = False
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
