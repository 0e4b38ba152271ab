"""hf-generate beyond the shared tables: a checkpoint's generation defaults cannot turn it away from
plain AR decoding, and it counts the forwards transformers runs, not what it is told."""

import decoders
from tests.conftest import make_adapter
from tests.test_invariants import assert_same, run, tokens


def test_checkpoint_generation_defaults_do_not_change_greedy_output(prompts):
    adapter = make_adapter("qwen2")
    ar = run(adapter, "ar", prompts, 24)
    cfg = adapter.hf_model.generation_config
    cfg.repetition_penalty, cfg.no_repeat_ngram_size, cfg.min_new_tokens = 1.8, 2, 24
    hf = run(adapter, "hf-generate", prompts, 24)
    assert_same(tokens(hf), tokens(ar), "hf-generate with checkpoint defaults vs ar")


def test_rows_that_end_early_stop_counting(prompts):
    adapter = make_adapter("qwen2", seed=1)
    first = decoders.get("ar").generate(adapter, prompts, 24)
    adapter.eos_ids = (first[1].tokens[3],)  # the second prompt ends after 4 tokens, the others later
    before = adapter.n_forward
    res = run(adapter, "hf-generate", prompts, 24)
    assert res[1].finish == "eos" and res[1].n_forward == len(res[1].tokens) <= 4
    assert max(r.n_forward for r in res) == adapter.n_forward - before  # generate() ran on for the others
    assert [r.accepted for r in res] == [r.accepted for r in run(adapter, "ar", prompts, 24)]
