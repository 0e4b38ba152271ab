"""LLaDA- and Dream-format checkpoints on stock transformers classes (harness/convert.py), checked
against a plain-torch forward written here from the architecture's definition (specs/block_diffusion.md
§3.1, §3.4; the fixtures' README): RMSNorm, RoPE at absolute positions, GQA, SwiGLU, bidirectional
attention, weights read straight from the reference-format safetensors. Plus the conversion's refusals:
unknown config fields, values the stock class cannot express, unknown or missing weight names, all
listed, and raised before a weight is read."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.convert import ConversionError, MissingTokenizer
from harness.models import load_model
from tests.conftest import refmodel_dir

PROMPT = [17239, 64575, 82527, 18615, 36088]


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):  # x [H, L, hd]; the rotate-half convention, absolute positions
    hd = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = pos[:, None].float() * inv_freq[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def reference_forward(w: dict, cfg: dict, ids: list[int], pos: list[int]) -> torch.Tensor:
    """Plain torch: `w` maps role names to tensors, `cfg` has d, heads, kv_heads, layers, eps, theta."""
    H, KV, d = cfg["heads"], cfg["kv_heads"], cfg["d"]
    hd, p = d // H, torch.tensor(pos)
    x = w["embed"][torch.tensor(ids)]
    for i in range(cfg["layers"]):
        h = rms_norm(x, w[f"{i}.attn_norm"], cfg["eps"])
        q, k, v = (h @ w[f"{i}.{n}"].T + w.get(f"{i}.{n}.bias", 0) for n in ("q", "k", "v"))
        q = rope(q.view(-1, H, hd).transpose(0, 1), p, cfg["theta"])
        k = rope(k.view(-1, KV, hd).transpose(0, 1), p, cfg["theta"]).repeat_interleave(H // KV, 0)
        v = v.view(-1, KV, hd).transpose(0, 1).repeat_interleave(H // KV, 0)
        att = (q @ k.transpose(1, 2) / hd ** 0.5).softmax(-1)  # every query sees every key
        x = x + (att @ v).transpose(0, 1).reshape(-1, d) @ w[f"{i}.o"].T
        h = rms_norm(x, w[f"{i}.ff_norm"], cfg["eps"])
        x = x + (torch.nn.functional.silu(h @ w[f"{i}.gate"].T) * (h @ w[f"{i}.up"].T)) @ w[f"{i}.down"].T
    return rms_norm(x, w["norm"], cfg["eps"]) @ w["head"].T


def llada_weights(path):
    raw, c = load_file(str(path / "model.safetensors")), json.loads((path / "config.json").read_text())
    t = "model.transformer."
    w = {"embed": raw[t + "wte.weight"], "norm": raw[t + "ln_f.weight"], "head": raw[t + "ff_out.weight"]}
    for i in range(c["n_layers"]):
        b = f"{t}blocks.{i}."
        for role, name in (("attn_norm", "attn_norm"), ("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"),
                           ("o", "attn_out"), ("ff_norm", "ff_norm"), ("gate", "ff_proj"), ("up", "up_proj"),
                           ("down", "ff_out")):
            w[f"{i}.{role}"] = raw[b + name + ".weight"]
    return w, dict(d=c["d_model"], heads=c["n_heads"], kv_heads=c["n_kv_heads"], layers=c["n_layers"],
                   eps=c["rms_norm_eps"], theta=c["rope_theta"])


def dream_weights(path):
    raw, c = load_file(str(path / "model.safetensors")), json.loads((path / "config.json").read_text())
    w = {"embed": raw["model.embed_tokens.weight"], "norm": raw["model.norm.weight"], "head": raw["lm_head.weight"]}
    for i in range(c["num_hidden_layers"]):
        b = f"model.layers.{i}."
        for role, name in (("attn_norm", "input_layernorm"), ("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"),
                           ("v", "self_attn.v_proj"), ("o", "self_attn.o_proj"), ("ff_norm", "post_attention_layernorm"),
                           ("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"), ("down", "mlp.down_proj")):
            w[f"{i}.{role}"] = raw[b + name + ".weight"]
            if role in ("q", "k", "v"):
                w[f"{i}.{role}.bias"] = raw[b + name + ".bias"]
    return w, dict(d=c["hidden_size"], heads=c["num_attention_heads"], kv_heads=c["num_key_value_heads"],
                   layers=c["num_hidden_layers"], eps=c["rms_norm_eps"], theta=c["rope_theta"])


@pytest.mark.parametrize("name,weights", [("llada-tiny", llada_weights), ("dream-tiny", dream_weights)])
def test_stock_logits_equal_plain_torch_reference(name, weights, request):
    adapter = request.getfixturevalue(name.replace("-", "_"))
    w, cfg = weights(refmodel_dir(name))
    canvas = PROMPT + [adapter.mask_id] * 11
    want = reference_forward(w, cfg, canvas, list(range(len(canvas))))
    # the decoders' own call: explicit positions and an all-visible mask, one row left-padded by 3
    ids = torch.tensor([canvas, [adapter.pad_id] * 3 + canvas[3:]])
    pos = torch.tensor([list(range(16)), [0, 0, 0] + list(range(13))])
    vis = torch.ones(2, 16, 16, dtype=torch.bool)
    vis[1, :, :3] = False
    got = adapter.forward(ids, pos, vis, None, 16)
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-4)
    want_short = reference_forward(w, cfg, canvas[3:], list(range(13)))
    torch.testing.assert_close(got[1, 3:], want_short, rtol=1e-5, atol=1e-4)
    assert (want[5:].argmax(-1) != want_short[2:].argmax(-1)).any()  # bidirectional: the prompt start matters


def test_loaded_as_stock_classes_with_family(llada_tiny, dream_tiny):
    assert type(llada_tiny.hf_model).__name__ == "LlamaForCausalLM"
    assert type(dream_tiny.hf_model).__name__ == "Qwen2ForCausalLM"
    assert (llada_tiny.mask_id, llada_tiny.eos_ids) == (126336, (126081,))
    assert (dream_tiny.mask_id, dream_tiny.eos_ids) == (151666, (151643,))
    assert llada_tiny.describe()["family"]["logits"] == "in-place"
    assert dream_tiny.describe()["family"]["logits"] == "shifted"


def test_no_tokenizer_is_a_clear_error_only_when_text_is_needed(llada_tiny):
    assert isinstance(llada_tiny.tokenizer, MissingTokenizer)
    assert getattr(llada_tiny.tokenizer, "chat_template", None) is None  # hashing and probing still work
    with pytest.raises(AttributeError, match="no tokenizer files.*running a suite needs a tokenizer"):
        llada_tiny.tokenizer.apply_chat_template([])


def _config_only(tmp_path, name, **changes):
    """A folder with the fixture's config (edited) and no weights at all: whatever fails here failed
    before reading a weight."""
    config = json.loads((refmodel_dir(name) / "config.json").read_text())
    config.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_unknown_config_fields_are_listed_before_loading(tmp_path):
    path = _config_only(tmp_path, "llada-tiny", qk_layer_norm=True, sliding_window=64)
    with pytest.raises(ConversionError, match="does not know: qk_layer_norm, sliding_window"):
        load_model(str(path), device="cpu")


def test_values_the_stock_class_cannot_express_are_listed(tmp_path):
    path = _config_only(tmp_path, "llada-tiny", alibi=True, activation_type="gelu")
    with pytest.raises(ConversionError, match=r"activation_type='gelu' \(supported: 'silu'\).*alibi=True"):
        load_model(str(path), device="cpu")
    path = _config_only(tmp_path, "dream-tiny", hidden_act="relu", rope_cosine_scale=2.0)
    with pytest.raises(ConversionError, match="does not know: rope_cosine_scale.*hidden_act='relu'"):
        load_model(str(path), device="cpu")


def test_unknown_and_missing_weights_are_listed_from_the_header(tmp_path):
    src = refmodel_dir("llada-tiny")
    shutil.copy(src / "config.json", tmp_path / "config.json")
    names = list(load_file(str(src / "model.safetensors")))
    names.remove("model.transformer.blocks.1.up_proj.weight")
    names.append("model.transformer.blocks.0.q_norm.weight")
    # wrong shapes everywhere: the check reads names only, so loading never starts
    save_file({n: torch.zeros(1) for n in names}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConversionError, match=r"does not know: model\.transformer\.blocks\.0\.q_norm\.weight.*"
                                              r"does not provide: model\.layers\.1\.mlp\.up_proj\.weight"):
        load_model(str(tmp_path), device="cpu")
