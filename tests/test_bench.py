"""The benchmark's table: one row per method x batch x repeat, metrics derived from measured events
(no timing thresholds here: speed targets live in the benchmark output, not in unit tests)."""

from __future__ import annotations

import pandas as pd
import pytest

from harness import bench


def test_bench_writes_consistent_tables(tmp_path):
    df = bench.main(["--batch-sizes", "1,2", "--new-tokens", "6", "--prompt-len", "5", "--repeats", "1",
                     "--bandwidth-mib", "8", "--engine", "static", "--out", str(tmp_path)])
    stored = pd.read_parquet(tmp_path / "bench.parquet")
    assert len(stored) == len(df) == 2 * len(bench.METHODS)
    assert set(stored.method) == set(bench.METHODS)
    assert set(stored.engine) == {"hf", "static"}
    assert (stored.tokens == stored.batch_size * 6).all()  # EOS ignored: fixed length
    assert (stored.loc[stored.method.isin(["ar", "generate"]), "tpf"] == 1.0).all()
    assert ((stored.tok_s - stored.tokens / stored.seconds).abs() < 1e-9).all()
    assert ((stored.roofline_fraction - stored.floor_ms / stored.ms_per_forward).abs() < 1e-9).all()
    assert (stored.bandwidth_gb_s > 0).all() and (stored.ms_per_forward > 0).all()
    md = (tmp_path / "bench.md").read_text()
    assert md.count("\n| tiny-random-qwen2 |") == 2 * len(bench.METHODS)


def test_unknown_method_and_arch_rejected():
    with pytest.raises(SystemExit):
        bench.main(["--methods", "ar,medusa"])
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
