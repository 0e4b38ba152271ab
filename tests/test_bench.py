"""The benchmark's table: one row per method x batch x repeat, metrics derived from measured events
(no timing thresholds here: speed targets live in the benchmark output, not in unit tests)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from harness import bench


def test_bench_runs_fixed_length_without_touching_the_model(tmp_path, monkeypatch):
    from harness.models import load_model

    adapter = load_model("tiny-random-qwen2", device="cpu", dtype="float32")
    eos = adapter.eos_ids
    monkeypatch.setattr(bench, "load_model", lambda *a, **k: adapter)
    methods = "generate;ar;sdlm-conf:block_size=2,threshold=0.0"
    df = bench.main(["--batch-sizes", "1,2", "--new-tokens", "6", "--prompt-len", "5", "--repeats", "1",
                     "--bandwidth-mib", "8", "--engine", "static", "--methods", methods, "--out", str(tmp_path)])
    assert adapter.eos_ids == eos  # the caller's adapter keeps its EOS ids
    stored = pd.read_parquet(tmp_path / "bench.parquet")
    assert len(stored) == len(df) == 2 * 3 and set(stored.engine) == {"hf", "static"}
    assert (stored.tokens == stored.batch_size * 6).all()  # EOS ignored: every row ran to the length
    assert (stored.loc[stored.method.isin(["ar", "generate"]), "tpf"] == 1.0).all()
    conf = stored[stored.method.str.startswith("sdlm-conf")]
    assert (conf.tpf == 2.0).all()  # τ = 0 with D = 2: every forward commits both slots
    assert stored.gpu_util_mean.isna().all()  # a CPU run: no NVML
    md = (tmp_path / "bench.md").read_text()
    assert md.count("\n| tiny-random-qwen2 |") == 2 * 3


def test_unknown_method_and_arch_rejected(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--methods", "ar;medusa"])
    assert "unknown decoder 'medusa'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--methods", "sdlm-conf:treshold=0.5"])
    assert "did you mean 'threshold'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown architecture 'qwen9'.*accepted"):
        bench.random_arch_model("qwen9", "cpu", None)


@pytest.mark.parametrize("argv,needle", [
    (["--batch-sizes", "0"], "--batch-sizes '0': accepted: ints >= 1"),
    (["--batch-sizes", "1,x"], "--batch-sizes '1,x'"),
    (["--repeats", "0"], "--repeats 0"),
    (["--methods", "diffusion-gemma", "--engine", "static"], "with --engine static"),
    (["--methods", "ar:engine=static"], "the engine is chosen by --engine"),
])
def test_bad_arguments_stop_before_the_model_loads_and_leave_no_directory(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit):
        bench.main(["--model", "tiny-random-qwen2", "--out", str(tmp_path / "b"), *argv])
    assert needle in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_arch_configs_match_published_sizes():
    # parameter counts of the public Qwen2.5 checkpoints, from their configs: 0.49B, 3.09B, 7.62B
    from transformers import Qwen2Config

    def n_params(a):
        h, i, L, v = a["hidden_size"], a["intermediate_size"], a["num_hidden_layers"], a["vocab_size"]
        kv = h // a["num_attention_heads"] * a["num_key_value_heads"]
        layer = h * h + h + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
        return L * layer + v * h * (1 if a["tie_word_embeddings"] else 2) + h

    assert round(n_params(bench.ARCHS["qwen2.5-0.5b"]) / 1e9, 2) == 0.49
    assert round(n_params(bench.ARCHS["qwen2.5-3b"]) / 1e9, 2) == 3.09
    assert round(n_params(bench.ARCHS["qwen2.5-7b"]) / 1e9, 2) == 7.62
    Qwen2Config(**bench.ARCHS["qwen2.5-3b"])  # valid config keys


@pytest.fixture
def tiny(monkeypatch):
    from harness.models import load_model

    adapter = load_model("tiny-random-qwen2", device="cpu", dtype="float32")
    monkeypatch.setattr(bench, "load_model", lambda *a, **k: adapter)
    return adapter


def test_each_decoder_runs_on_each_engine_and_generate_once(tmp_path, tiny):
    df = bench.main(["--batch-sizes", "2", "--new-tokens", "4", "--prompt-len", "3", "--repeats", "1",
                     "--bandwidth-mib", "1", "--engine", "dynamic,static", "--methods", "generate;ar",
                     "--out", str(tmp_path)])
    assert sorted(zip(df.method, df.engine)) == [("ar", "dynamic"), ("ar", "static"), ("generate", "hf")]
    # generate's forwards are seen by the adapter's hooks like any decoder's: one per new token
    gen = df[df.method == "generate"].iloc[0]
    assert gen.forwards == 4 and gen.tpf == 1.0 and gen.ms_per_forward > 0
    # the decode forwards run one after another inside the run's wall time
    assert (1000 * df.seconds >= df.ms_per_forward * (df.forwards - 1)).all()
    with pytest.raises(SystemExit):
        bench.main(["--engine", "dynamic,paged"])


def test_a_stopped_run_keeps_the_rows_it_measured(tmp_path, tiny, monkeypatch):
    real = bench.run_decoder

    def failing(adapter, name, *a, **k):
        if name == "sdlm-ssd":
            raise RuntimeError("out of time")
        return real(adapter, name, *a, **k)

    monkeypatch.setattr(bench, "run_decoder", failing)
    with pytest.raises(RuntimeError, match="out of time"):
        bench.main(["--batch-sizes", "1", "--new-tokens", "4", "--prompt-len", "3", "--repeats", "1",
                    "--bandwidth-mib", "1", "--methods", "generate;ar;sdlm-ssd", "--out", str(tmp_path)])
    stored = pd.read_parquet(tmp_path / "bench.parquet")
    assert list(stored.method) == ["generate", "ar"]
    assert (tmp_path / "bench.md").read_text().count("\n| tiny-random-qwen2 |") == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_run_without_decode_forwards_has_no_forward_time(tmp_path, tiny):
    # τ = 0 with D = 4 and 4 new tokens: the prefill forward commits everything
    df = bench.main(["--batch-sizes", "1", "--new-tokens", "4", "--prompt-len", "3", "--repeats", "1",
                     "--bandwidth-mib", "1", "--methods", "sdlm-conf:block_size=4,threshold=0.0",
                     "--out", str(tmp_path)])
    assert df.forwards.tolist() == [1] and df.ms_per_forward.isna().all() and df.roofline_fraction.isna().all()


def test_weight_bytes_leave_out_an_untied_input_embedding(tiny):
    from harness.adapter import HFModelAdapter
    from harness.tiny import tiny_model

    every = sum(p.numel() * 4 for p in tiny.hf_model.parameters())
    table = tiny.hf_model.get_input_embeddings().weight.numel() * 4
    assert bench.weight_bytes(tiny) == every - table  # a forward looks up a few rows of it, no more
    tied = HFModelAdapter(tiny_model("qwen2", tie_word_embeddings=True), tiny.tokenizer)
    assert bench.weight_bytes(tied) == sum(p.numel() * 4 for p in tied.hf_model.parameters())  # read by lm_head


def test_random_arch_model_builds_on_the_requested_device(monkeypatch):
    small = dict(bench.ARCHS["qwen2.5-3b"], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)
    monkeypatch.setitem(bench.ARCHS, "test-small", small)
    adapter = bench.random_arch_model("test-small", "cpu", "bfloat16")
    assert adapter.dtype == torch.bfloat16 and adapter.device.type == "cpu"
    assert adapter.mask_id == 151665 and adapter.pad_id == 151645  # no tokenizer: pad falls back to EOS
    df = bench.bench(adapter, [1], ["ar", "sdlm-ssd:block_size=2"], prompt_len=3, new=3, repeats=1,
                     bandwidth_bytes=2**20, engines=["static"])
    assert (df.tokens == 3).all()


def test_bandwidth_probe_measures_a_copy():
    bw = bench.measure_bandwidth(torch.device("cpu"), 8 * 2**20)
    assert 1e8 < bw < 1e13  # bytes/s of a memcpy: far from 0 and from infinity
