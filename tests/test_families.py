"""Model families (decoders/family.py): detected from the checkpoint's config, overridable by name or
fact, carried by the adapter into describe() (so the cell hash), and accepted as a sweep key / flag."""

from __future__ import annotations

import pytest
from transformers import PretrainedConfig

from decoders.family import FamilyError, apply_override, known_family
from harness import cli, sweep
from harness.families import detect_family
from harness.adapter import HFModelAdapter
from harness.models import load_model
from harness.tiny import tiny_model, tiny_tokenizer
from harness.verify import family_line


@pytest.mark.parametrize("fields,name,facts", [
    (dict(model_type="llada", architectures=["LLaDAModelLM"]), "llada", ("bidirectional", "in-place", "after-prompt")),
    (dict(model_type="Dream"), "dream", ("bidirectional", "shifted", "after-prompt")),
    (dict(model_type="Fast_dLLM_Qwen", bd_size=32), "fast-dllm-v2", ("block-causal", "shifted", "absolute")),
    (dict(model_type="sdar", block_size=4), "sdar", ("block-causal", "in-place", "absolute")),
    (dict(model_type="qwen2", text_mask_token_id=151665, block_size=4), "sdlm", ("causal", "shifted", "sliding")),
    (dict(model_type="qwen2"), "ar", ("causal", "shifted", "after-prompt")),
    (dict(model_type="llama", pdbench_family="llada"), "llada", ("bidirectional", "in-place", "after-prompt")),
])
def test_detected_from_the_config(fields, name, facts):
    family = detect_family(PretrainedConfig(**fields), mask_id=7)
    assert (family.name, (family.attention, family.logits, family.block_alignment)) == (name, facts)
    assert family.mask_id == 7
    if "bd_size" in fields or "block_size" in fields:
        assert family.block_size == fields.get("bd_size", fields.get("block_size"))


def test_overrides_by_name_and_by_fact():
    base = known_family("ar", mask_id=3)
    assert apply_override(base, "llada").attention == "bidirectional"
    assert apply_override(base, "llada").mask_id == 3  # the detected mask id is kept
    f = apply_override(base, "attention=bidirectional,logits=in-place,mask_id=9")
    assert (f.name, f.attention, f.logits, f.mask_id) == ("ar", "bidirectional", "in-place", 9)
    with pytest.raises(FamilyError, match="unknown model family 'lada'; known: ar, sdlm"):
        apply_override(base, "lada")
    with pytest.raises(FamilyError, match="attention='full'; accepted: causal, block-causal, bidirectional"):
        apply_override(base, "attention=full")
    with pytest.raises(FamilyError, match="unknown model family fact 'mask'"):
        apply_override(base, "mask=3")


def test_the_adapter_carries_the_family_into_its_description():
    plain = HFModelAdapter(tiny_model("llama"), tiny_tokenizer())
    as_llada = HFModelAdapter(tiny_model("llama"), tiny_tokenizer(), family="llada")
    assert plain.family.name == "ar" and as_llada.family.attention == "bidirectional"
    assert plain.describe()["family"] != as_llada.describe()["family"]  # describe() feeds the cell hash
    assert "family llada: attention bidirectional, logits in-place" in family_line(as_llada)


def test_shipped_toy_is_an_sdlm_family_model():
    adapter = load_model("pdbench-toy", device="cpu")
    assert (adapter.family.name, adapter.family.block_size, adapter.family.mask_id) == ("sdlm", 4, adapter.mask_id)


def test_family_is_a_sweep_key_and_a_flag_checked_before_loading(tmp_path):
    text = '[[sweep]]\nmodel = "tiny-random-llama"\ndecoder = "block-diffusion"\nsuite = "arith"\nfamily = "llada"\n'
    (cell,) = sweep.parse_sweep(text).cells
    assert cell.family == "llada" and cell.model_key()[-1] == "llada"
    with pytest.raises(sweep.SweepError, match=r"\[\[sweep\]\] #1 family: .*'family' must be a model family name"):
        sweep.parse_sweep(text.replace('"llada"', '"lada"'), "s.toml")
    args = cli.build_parser().parse_args(["run", "--model", "m", "--decoder", "ar", "--suite", "arith", "--family", "dream"])
    swept, *_ = cli._sweep_from_args(args)
    assert swept.cells[0].family == "dream"


def test_the_run_manifest_records_the_models_family(tmp_path, fake_suites):
    import json

    from harness import runner
    from tests.fakes import sweep_text

    def llada_like(cell):  # the tiny Llama declared bidirectional through the cell's family key
        return load_model("tiny-random-llama", device="cpu", dtype="float32", family=cell.family or None)

    text = sweep_text(limit=2, max_new_tokens=4).split("[[sweep]]")[0] + (
        '[[sweep]]\ndecoder = "block-diffusion"\nfamily = "llada"\n')
    res = runner.run(sweep.parse_sweep(text, "t.toml").cells, tmp_path, runner.RunOptions(progress=False), argv=["t"],
                     loader=llada_like)
    assert (res.rows_written, res.failures) == (2, [])
    (model,) = json.loads((tmp_path / "manifest.json").read_text())["sessions"][0]["models"]
    assert (model["family"]["name"], model["family"]["attention"]) == ("llada", "bidirectional")


def test_verify_shows_the_family_and_runs_a_tokenizerless_bidirectional_checkpoint():
    from harness.verify import verify
    from tests.conftest import refmodel_dir

    lines: list[str] = []
    assert verify(str(refmodel_dir("llada-tiny")), max_new_tokens=6, echo=lines.append)
    text = "\n".join(lines)
    assert "family llada: attention bidirectional, logits in-place, mask id 126336" in text
    assert "no tokenizer: seeded random id prompts" in text
    assert "PASS  batch        block-diffusion" in text and "SKIP  all          ar" in text


@pytest.mark.parametrize("decoder", ["ar", "sdlm-conf", "block-diffusion", "prompt-lookup"])
def test_causal_engines_refuse_in_place_logits(decoder):
    """Only the canvas engine reads the logit at position i for token i; the others would read every
    logit one position off, so they refuse such a model instead of decoding garbage."""
    import decoders
    from decoders.base import DecoderConfigError

    adapter = load_model("tiny-random-qwen2", device="cpu", dtype="float32", add_mask_token=True, family="sdar")
    with pytest.raises(DecoderConfigError, match="logits='in-place'"):
        decoders.get(decoder).generate(adapter, [[5, 6, 7]], 4)


def test_a_mask_id_set_by_override_is_neither_eos_nor_padding():
    """The override comes first: EOS ids and the pad id are chosen around the mask id it sets (the toy
    declares EOS 2 and 0, pads with 0)."""
    plain = load_model("pdbench-toy", device="cpu")
    assert (plain.eos_ids, plain.pad_id) == ((2, 0), 0)
    adapter = load_model("pdbench-toy", device="cpu", family="mask_id=0")
    assert (adapter.mask_id, adapter.eos_ids, adapter.pad_id) == (0, (2,), 2)
