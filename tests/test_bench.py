"""The benchmark's table: one row per method x batch x repeat, metrics derived from measured events
(no timing thresholds here: speed targets live in the benchmark output, not in unit tests)."""

from __future__ import annotations

import pandas as pd
import pytest

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
