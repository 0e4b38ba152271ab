"""Reference-format diffusion checkpoints on stock transformers classes, without remote code.

    LLaDA (model_type "llada", OLMo-style names `model.transformer.*`)  -> LlamaForCausalLM
    Dream (model_type "Dream", Qwen2 names)                              -> Qwen2ForCausalLM

Both are plain pre-norm transformers (RMSNorm, RoPE, GQA, SwiGLU); what makes them diffusion LMs is
the attention (bidirectional: the adapter passes an all-visible 4D mask) and how decoders read the
logits (the model family, harness/families.py). A conversion is a config translation plus a weight
renaming that transformers applies while loading (`key_mapping`). Everything is checked before a
weight is read: a config field the translation does not know, a value it cannot express on the stock
class, or a checkpoint key the renaming does not cover fails with the full list, never silently
(an unknown field could change the network, e.g. qk-norm or ALiBi).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

REMOTE_FORMATS = {"llada": "llada", "dream": "dream"}  # lower-cased model_type -> format
ARCHITECTURES = {"LLaDAModelLM": "llada", "DreamModel": "dream"}

# Config fields that configure training or the reference code's runtime, never the network's function.
IGNORED = {
    "architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version", "_name_or_path",
    "use_cache", "attention_dropout", "embedding_dropout", "residual_dropout", "init_device", "init_fn",
    "init_std", "init_cutoff_factor", "initializer_range", "precision", "flash_attention", "alibi_bias_max",
    "train_max_sequence_length", "rope_full_precision", "attention_layer_norm_with_affine", "mlp_ratio",
    "bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id", "max_window_layers", "tie_word_embeddings",
}

# LLaDA fields whose value the stock Llama network can only express at this value.
LLADA_REQUIRED = {
    "activation_type": "silu", "alibi": False, "attention_layer_norm": False, "block_type": "llama",
    "layer_norm_type": "rms", "rope": True, "scale_logits": False, "input_emb_norm": False,
    "layer_norm_with_affine": True, "bias_for_layer_norm": (False, None), "block_group_size": 1,
    "include_bias": False, "include_qkv_bias": (False, None), "clip_qkv": None, "multi_query_attention": (None, False),
}
LLADA_TRANSLATED = {"d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "rms_norm_eps", "rope_theta",
                    "vocab_size", "embedding_size", "max_sequence_length", "weight_tying"}

# Dream: Qwen2 names and values, plus the mask id. Fields Qwen2 has and Dream may carry.
DREAM_REQUIRED = {"hidden_act": "silu", "use_sliding_window": False}
DREAM_TRANSLATED = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "rms_norm_eps", "rope_theta", "rope_scaling", "max_position_embeddings",
                    "sliding_window", "layer_types", "rope_parameters"}

# LLaDA weight names -> Llama names (the block index, where there is one, is group 1: transformers' key_mapping substitutes \1).
LLADA_KEYS = [
    (r"^model\.transformer\.wte\.", r"model.embed_tokens."),
    (r"^model\.transformer\.blocks\.(\d+)\.attn_norm\.", r"model.layers.\1.input_layernorm."),
    (r"^model\.transformer\.blocks\.(\d+)\.q_proj\.", r"model.layers.\1.self_attn.q_proj."),
    (r"^model\.transformer\.blocks\.(\d+)\.k_proj\.", r"model.layers.\1.self_attn.k_proj."),
    (r"^model\.transformer\.blocks\.(\d+)\.v_proj\.", r"model.layers.\1.self_attn.v_proj."),
    (r"^model\.transformer\.blocks\.(\d+)\.attn_out\.", r"model.layers.\1.self_attn.o_proj."),
    (r"^model\.transformer\.blocks\.(\d+)\.ff_norm\.", r"model.layers.\1.post_attention_layernorm."),
    (r"^model\.transformer\.blocks\.(\d+)\.ff_proj\.", r"model.layers.\1.mlp.gate_proj."),
    (r"^model\.transformer\.blocks\.(\d+)\.up_proj\.", r"model.layers.\1.mlp.up_proj."),
    (r"^model\.transformer\.blocks\.(\d+)\.ff_out\.", r"model.layers.\1.mlp.down_proj."),
    (r"^model\.transformer\.ln_f\.", r"model.norm."),
    (r"^model\.transformer\.ff_out\.", r"lm_head."),
]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ConversionError(ValueError):
    """The checkpoint's config or weights are outside what the conversion knows (listed)."""


def read_json(path: str, name: str, revision: str | None = None) -> dict | None:
    """A JSON file of a local directory or hub repository, or None when it has none."""
    local = Path(path) / name
    if Path(path).is_dir():
        return json.loads(local.read_text()) if local.exists() else None
    from transformers.utils import cached_file

    found = cached_file(path, name, revision=revision, _raise_exceptions_for_missing_entries=False)
    return json.loads(Path(found).read_text()) if found else None


def remote_format(config: dict) -> str | None:
    """'llada' / 'dream' when the config names a model only remote code would load, else None."""
    fmt = REMOTE_FORMATS.get(str(config.get("model_type", "")).lower())
    for arch in config.get("architectures") or []:
        fmt = fmt or ARCHITECTURES.get(arch)
    return fmt


def _check_fields(config: dict, fmt: str, translated: set, required: dict) -> None:
    unknown = sorted(k for k in config if k not in translated | set(required) | IGNORED)
    bad = []
    for key, want in required.items():
        allowed = want if isinstance(want, tuple) else (want,)
        if key in config and config[key] not in allowed:
            bad.append(f"{key}={config[key]!r} (supported: {' or '.join(repr(a) for a in allowed)})")
    if unknown or bad:
        lines = ([f"config fields the {fmt} conversion does not know: {', '.join(unknown)}"] if unknown else []) + (
            [f"config values the stock class cannot express: {'; '.join(bad)}"] if bad else [])
        raise ConversionError(f"cannot load this {fmt}-format checkpoint on a stock class: " + " | ".join(lines))


def llada_config(c: dict):
    from transformers import LlamaConfig

    _check_fields(c, "llada", LLADA_TRANSLATED, LLADA_REQUIRED)
    vocab = max(int(c["vocab_size"]), int(c.get("embedding_size") or 0))  # the embedding may be padded
    return LlamaConfig(
        vocab_size=vocab, hidden_size=c["d_model"], num_hidden_layers=c["n_layers"], num_attention_heads=c["n_heads"],
        num_key_value_heads=c.get("n_kv_heads") or c["n_heads"],
        intermediate_size=c.get("mlp_hidden_size") or c.get("mlp_ratio", 4) * c["d_model"],
        rms_norm_eps=c.get("rms_norm_eps", 1e-5), rope_theta=c.get("rope_theta", 10000.0),
        max_position_embeddings=c.get("max_sequence_length", 4096), tie_word_embeddings=bool(c.get("weight_tying")),
        attention_bias=False, mlp_bias=False, hidden_act="silu",
        bos_token_id=c.get("bos_token_id"), eos_token_id=c.get("eos_token_id"), pad_token_id=c.get("pad_token_id"),
        mask_token_id=c.get("mask_token_id"), pdbench_family="llada",
    )


def dream_config(c: dict):
    from transformers import Qwen2Config

    _check_fields(c, "dream", DREAM_TRANSLATED, DREAM_REQUIRED)
    kept = {k: v for k, v in c.items() if k in DREAM_TRANSLATED and v is not None}
    return Qwen2Config(
        **kept, hidden_act="silu", use_sliding_window=False, tie_word_embeddings=bool(c.get("tie_word_embeddings")),
        bos_token_id=c.get("bos_token_id"), eos_token_id=c.get("eos_token_id"), pad_token_id=c.get("pad_token_id"),
        mask_token_id=c.get("mask_token_id"), pdbench_family="dream",
    )


def rename(fmt: str, key: str) -> str | None:
    """The stock name of a checkpoint key, or None when the mapping does not know it."""
    if fmt == "dream":
        return key
    for pattern, repl in LLADA_KEYS:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def checkpoint_keys(path: str, revision: str | None = None) -> list[str]:
    """Weight names from the safetensors index or file header (no tensor is read)."""
    index = read_json(path, "model.safetensors.index.json", revision)
    if index is not None:
        return sorted(index["weight_map"])
    from safetensors import safe_open
    from transformers.utils import cached_file

    file = Path(path) / "model.safetensors" if Path(path).is_dir() else Path(cached_file(path, "model.safetensors",
                                                                                          revision=revision))
    if not file.exists():
        raise ConversionError(f"{path}: no model.safetensors(.index.json); only safetensors checkpoints convert")
    with safe_open(str(file), "pt") as f:
        return sorted(f.keys())


def expected_keys(model_cls, config) -> set[str]:
    with torch.device("meta"):
        model = model_cls(config)
    keys = set(model.state_dict())
    if config.tie_word_embeddings:
        keys.discard("lm_head.weight")
    return keys


def check_keys(fmt: str, keys: list[str], expected: set[str]) -> None:
    unknown = [k for k in keys if rename(fmt, k) is None or rename(fmt, k) not in expected]
    missing = sorted(expected - {rename(fmt, k) for k in keys})
    if unknown or missing:
        parts = ([f"checkpoint keys the {fmt} mapping does not know: {', '.join(unknown)}"] if unknown else []) + (
            [f"stock weights the checkpoint does not provide: {', '.join(missing)}"] if missing else [])
        raise ConversionError("cannot load this checkpoint on a stock class: " + " | ".join(parts))


def load_converted(path: str, fmt: str, config: dict, *, dtype: torch.dtype, attn_implementation: str,
                   revision: str | None = None):
    """Translate, check everything, then load through transformers with the renaming applied."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    model_cls, stock = (LlamaForCausalLM, llada_config(config)) if fmt == "llada" else (Qwen2ForCausalLM,
                                                                                          dream_config(config))
    check_keys(fmt, checkpoint_keys(path, revision), expected_keys(model_cls, stock))
    key_mapping = dict(LLADA_KEYS) if fmt == "llada" else None
    model, info = model_cls.from_pretrained(path, config=stock, key_mapping=key_mapping, dtype=dtype,
                                            attn_implementation=attn_implementation, revision=revision,
                                            output_loading_info=True)
    left = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if left:  # the pre-check makes this unreachable unless transformers renames differently
        raise ConversionError(f"{path}: loading left {left}")
    return model


def has_tokenizer(path: str) -> bool:
    """False for a local folder with no tokenizer files (hub ids are assumed to have one)."""
    return not Path(path).is_dir() or any((Path(path) / f).exists() for f in TOKENIZER_FILES)


def stock_tokenizer(path: str, revision: str | None = None):
    """A tokenizer whose class only remote code defines (Dream's DreamTokenizer is a Qwen2 byte-level
    BPE), loaded from its files with a stock class, as the weights are."""
    from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

    try:
        return PreTrainedTokenizerFast.from_pretrained(path, revision=revision)  # when it ships a tokenizer.json
    except (OSError, ValueError):
        return Qwen2Tokenizer.from_pretrained(path, revision=revision)  # vocab.json + merges.txt


class MissingTokenizer:
    """Stands in for the tokenizer of a checkpoint that ships none (the reference fixtures): decoders
    work on ids and never touch it; anything that needs text (a suite rendering prompts) gets this
    error instead of an obscure one. getattr(x, name, default) still returns the default."""

    def __init__(self, model: str):
        self._model = model

    def __getattr__(self, name):
        raise AttributeError(f"model {self._model!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): "
                             "decoders run on token ids, but running a suite needs a tokenizer; copy the "
                             "original model's tokenizer files into the checkpoint folder")

    def __call__(self, *args, **kwargs):
        return self.__getattr__("__call__")

    def __bool__(self) -> bool:
        return False
