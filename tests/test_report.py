"""report: per-cell numbers from a hand-built store where every expected value is known."""

import json
import math

import pytest

from harness import report, store
from tests.test_store import make_row


def build_run(tmp_path):
    rows = []
    ar_correct, conf_correct = [True, True, False, False], [True, False, True, False]
    for i in range(4):  # AR: two batches of 2, 1 s each, 10 tokens per sample -> 40 tok / 2 s
        rows.append(make_row("h_ar", f"s{i}", cell_name="ar", decoder="ar", decoder_params="{}", suite="arith",
                             model="m", dtype="float32", device="cpu", batch_size=2, max_new_tokens=16,
                             batch_id=f"ar-b{i // 2}", batch_wall_s=1.0, n_tokens=10, n_forward=10, tpf=1.0,
                             correct=ar_correct[i], ttft_s=0.1 * (i + 1), e2e_s=1.0, finish="eos",
                             accepted=[1] * 10, step_s=[0.1] * 10))
    for i in range(4):  # conf: one batch of 4 in 0.5 s -> 80 tok/s, speedup 4
        rows.append(make_row("h_conf", f"s{i}", cell_name="conf", decoder="sdlm-conf", suite="arith",
                             decoder_params=json.dumps({"block_size": 4, "threshold": 0.9}), model="m",
                             dtype="float32", device="cpu", batch_size=2, max_new_tokens=16, batch_id="conf-b0",
                             batch_wall_s=0.5, n_tokens=10, n_forward=4, tpf=2.5, correct=conf_correct[i],
                             ttft_s=0.05, e2e_s=0.5, finish="length", accepted=[4, 4, 1, 1], step_s=[0.1] * 4))
    store.append_samples(tmp_path, rows)
    base = {n: None for n in store.CELL_SCHEMA.names}
    store.append_cells(tmp_path, [
        {**base, "cell_hash": "h_ar", "n_tokens": 40, "wall_s": 2.0, "gpu_util_mean": 50.0, "energy_j": 40.0,
         "torch_peak_mem_mib": 100.0},
        {**base, "cell_hash": "h_conf", "n_tokens": 20, "wall_s": 0.25, "gpu_util_mean": 80.0, "energy_j": 10.0},
        {**base, "cell_hash": "h_conf", "n_tokens": 20, "wall_s": 0.25, "gpu_util_mean": 60.0, "energy_j": 10.0},
    ])


def test_summary_numbers(tmp_path):
    build_run(tmp_path)
    s = report.summarize(tmp_path).set_index("cell_name")
    assert s.loc["ar", "tok_s"] == pytest.approx(20.0) and s.loc["conf", "tok_s"] == pytest.approx(80.0)
    assert s.loc["conf", "speedup"] == pytest.approx(4.0) and s.loc["ar", "speedup"] == pytest.approx(1.0)
    assert s.loc["conf", "accuracy"] == 0.5 and s.loc["conf", "tpf_mean"] == 2.5
    lo, hi = report.wilson(0.5, 4)
    assert (s.loc["conf", "acc_ci_low"], s.loc["conf", "acc_ci_high"]) == (lo, hi)
    assert lo == pytest.approx(0.150, abs=1e-3) and hi == pytest.approx(0.850, abs=1e-3)
    assert s.loc["ar", "ttft_p50_s"] == pytest.approx(0.25)
    assert (s.loc["conf", "both_correct"], s.loc["conf", "only_this"], s.loc["conf", "only_ar"],
            s.loc["conf", "neither"], s.loc["conf", "paired_n"]) == (1, 1, 1, 1, 4)
    assert s.loc["conf", "gpu_util_mean"] == pytest.approx(70.0)  # wall-weighted over two executions
    assert s.loc["ar", "j_per_token"] == pytest.approx(1.0) and s.loc["conf", "j_per_token"] == pytest.approx(0.5)
    assert s.loc["ar", "peak_mem_mib"] == 100.0 and math.isnan(s.loc["conf", "peak_mem_mib"])


def test_report_files(tmp_path):
    build_run(tmp_path)
    summary, md = report.write_report(tmp_path)
    assert (tmp_path / "summary.parquet").exists() and len(summary) == 2
    text = md.read_text()
    assert "## arith" in text and "Paired against AR" in text and "| conf | 4 | 0.500 [0.15, 0.85] | 2.50 | 80.0 | 4.00" in text
    assert "accuracy" in report.console_table(summary)


def test_mcnemar():
    assert report.mcnemar_p(0, 0) == 1.0
    assert report.mcnemar_p(0, 6) == pytest.approx(2 / 64)


def test_report_of_a_run_where_everything_failed(tmp_path):
    row = {n: None for n in store.FAILURE_SCHEMA.names} | {"cell_name": "c1", "stage": "load_model",
                                                           "error_type": "OSError", "message": "no such model"}
    store.append_failures(tmp_path, [row])
    summary, md = report.write_report(tmp_path)
    assert summary.empty and "No samples stored yet" in md.read_text() and "OSError: no such model" in md.read_text()
