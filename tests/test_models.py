"""Model loading: aliases, device/dtype choice, tokenizer path, save/load round trip, the real GGUF."""

from __future__ import annotations

import json

import pytest
import torch

import decoders
from harness.models import load_model, pick_device_dtype, resolve_model
from harness.tiny import tiny_model, tiny_tokenizer


def test_cpu_defaults_to_fp32_and_dtype_is_overridable():
    if not torch.cuda.is_available():
        assert pick_device_dtype(None, None) == (torch.device("cpu"), torch.float32)
    assert pick_device_dtype("cpu", "bf16")[1] == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'float8'.*accepted"):
        pick_device_dtype("cpu", "float8")


def test_gguf_path_resolves_to_directory_and_file(tmp_path):
    assert resolve_model(str(tmp_path / "m.gguf")) == (str(tmp_path), "m.gguf")
    assert resolve_model("Qwen/Qwen2.5-0.5B") == ("Qwen/Qwen2.5-0.5B", None)


def test_bad_attention_implementation_rejected_before_loading():
    with pytest.raises(ValueError, match="flash.*accepted: sdpa, eager"):
        load_model("no/such-model", attn_implementation="flash")


def test_local_directory_round_trip(tmp_path, prompts):
    """save_pretrained + load_model(dir) gives the same model: same tokens, same special ids."""
    model, tok = tiny_model(seed=3), tiny_tokenizer()
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.pad_token_id]
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    saved_class = json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"]
    assert saved_class in ("PreTrainedTokenizerFast", "TokenizersBackend")
    adapter = load_model(str(tmp_path), device="cpu")
    text = "déf f(x):\n\treturn x * 3 + 2  # ✓"
    assert adapter.tokenizer.decode(adapter.tokenizer.encode(text)) == text
    assert adapter.eos_ids == (tok.eos_token_id, tok.pad_token_id)  # several EOS ids, config order
    assert adapter.mask_id == tok.mask_token_id
    from harness.adapter import HFModelAdapter
    direct = HFModelAdapter(model.eval(), tok)
    a = decoders.get("sdlm-conf", threshold=0.0).generate(adapter, prompts, 12)
    b = decoders.get("sdlm-conf", threshold=0.0).generate(direct, prompts, 12)
    assert [r.tokens for r in a] == [r.tokens for r in b]


def test_tiny_alias_loads():
    adapter = load_model("tiny-random-llama")
    assert adapter.describe()["architecture"] == "LlamaForCausalLM"
    assert adapter.describe()["n_params"] > 0


@pytest.mark.slow
def test_smollm2_gguf_end_to_end():
    """The real SmolLM2-135M-Instruct GGUF: AR equals generate, a mask token can be added, and
    self-speculative decoding equals first-token-only decoding on it."""
    pytest.importorskip("gguf")
    try:
        adapter = load_model("smollm2", add_mask_token=True)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    assert adapter.describe()["architecture"] == "LlamaForCausalLM"
    assert adapter.mask_added and adapter.mask_id == len(adapter.tokenizer) - 1
    tok = adapter.tokenizer
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 12 + 30?"}],
        add_generation_prompt=True, tokenize=False)
    ids = tok.encode(prompt, add_special_tokens=False)
    ar = decoders.get("ar").generate(adapter, [ids], 16)[0]
    out = adapter.hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    do_sample=False, max_new_tokens=16, eos_token_id=list(adapter.eos_ids))
    assert ar.tokens == out[0, len(ids):].tolist()
    ssd = decoders.get("sdlm-ssd", block_size=4).generate(adapter, [ids], 16)[0]
    first = decoders.get("sdlm-conf", block_size=4, threshold=1.0).generate(adapter, [ids], 16)[0]
    assert ssd.tokens == first.tokens
