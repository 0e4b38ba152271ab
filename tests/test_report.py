"""report: per-cell numbers from hand-built stores where every expected value is known, the paired
bootstrap interval on timings of known spread, and the `unstable` flag."""

import json
import math

import numpy as np
import pytest

from harness import report, stats, store
from tests.test_store import make_row

CPU_CELL = {"threads": 1, "forward_cv": 0.1, "forward_p99_p50": 1.5, "steal_frac_mean": 0.0, "steal_frac_max": 0.0,
            "other_cpu_frac_mean": 0.0, "other_cpu_frac_max": 0.0,
            "loadavg_max": 1.0, "gpu_other_procs": float("nan"), "throttle_reasons": float("nan")}


def cell_rows(h, name, decoder, params, walls, correct, n_tokens, n_forward, batch_size=2, session=0):
    """One row per sample; batch b holds samples s{2b}, s{2b+1} (the same in every cell) and took walls[b] s."""
    rows = []
    for b, wall in enumerate(walls):
        for k in range(batch_size):
            i = b * batch_size + k
            rows.append(make_row(h, f"s{i}", cell_name=name, decoder=decoder, decoder_params=json.dumps(params),
                                 suite="arith", model="m", dtype="float32", device="cpu", batch_size=batch_size,
                                 max_new_tokens=16, batch_id=f"{h}-b{b}", batch_index=b, batch_wall_s=wall,
                                 n_tokens=n_tokens, n_forward=n_forward, tpf=n_tokens / n_forward,
                                 correct=correct[i], ttft_s=0.1 * (i + 1), e2e_s=wall, finish="eos",
                                 accepted=[n_tokens // n_forward] * n_forward, step_s=[0.1] * n_forward,
                                 session=session))
    return rows


def cell_record(h, **kw):
    return {**{n: None for n in store.CELL_SCHEMA.names}, "cell_hash": h, **CPU_CELL, **kw}


def build_run(tmp_path, conf_walls=(0.5, 0.5, 0.5, 0.5)):
    """AR: 4 batches of 2 samples, 1 s each, 10 tokens per sample -> 20 tok/s. conf: the same batches in
    0.5 s each -> 40 tok/s, speedup 2.0, with no spread at all."""
    ar = cell_rows("h_ar", "ar", "ar", {}, [1.0] * 4, [True, True, False, False] * 2, 10, 10)
    conf = cell_rows("h_conf", "conf", "sdlm-conf", {"block_size": 4, "threshold": 0.9}, list(conf_walls),
                     [True, False, True, False] * 2, 10, 4)
    store.append_samples(tmp_path, ar + conf)
    store.append_cells(tmp_path, [
        cell_record("h_ar", n_tokens=80, wall_s=4.0, gpu_util_mean=50.0, energy_j=80.0, torch_peak_mem_mib=100.0),
        cell_record("h_conf", n_tokens=40, wall_s=1.0, gpu_util_mean=80.0, energy_j=20.0),
        cell_record("h_conf", n_tokens=40, wall_s=1.0, gpu_util_mean=60.0, energy_j=20.0),
    ])
    (tmp_path / "manifest.json").write_text(json.dumps({"sessions": [{"status": "done", "cpu_count": 2}]}))


def test_summary_numbers(tmp_path):
    build_run(tmp_path)
    s = report.summarize(tmp_path).set_index("cell_name")
    assert s.loc["ar", "tok_s"] == pytest.approx(20.0) and s.loc["conf", "tok_s"] == pytest.approx(40.0)
    assert s.loc["conf", "speedup"] == pytest.approx(2.0) and s.loc["ar", "speedup"] == pytest.approx(1.0)
    # no spread in the timings: the intervals collapse onto the estimate
    assert (s.loc["conf", "speedup_low"], s.loc["conf", "speedup_high"]) == pytest.approx((2.0, 2.0))
    assert s.loc["conf", "paired_batches"] == 4 and not s.loc["conf", "unstable"]
    assert s.loc["conf", "accuracy"] == 0.5 and s.loc["conf", "tpf"] == 2.5
    lo, hi = stats.wilson(0.5, 8)
    assert (s.loc["conf", "acc_ci_low"], s.loc["conf", "acc_ci_high"]) == (lo, hi)
    assert s.loc["ar", "ttft_p50_s"] == pytest.approx(0.45)
    assert (s.loc["conf", "both_correct"], s.loc["conf", "only_this"], s.loc["conf", "only_ar"],
            s.loc["conf", "neither"], s.loc["conf", "paired_n"]) == (2, 2, 2, 2, 8)
    assert s.loc["conf", "gpu_util_mean"] == pytest.approx(70.0)  # wall-weighted over two executions
    assert s.loc["ar", "j_per_token"] == pytest.approx(1.0) and s.loc["conf", "j_per_token"] == pytest.approx(0.5)
    assert s.loc["ar", "peak_mem_mib"] == 100.0 and math.isnan(s.loc["conf", "peak_mem_mib"])


def test_tpf_is_a_ratio_of_sums_not_a_mean_of_ratios(tmp_path):
    rows = cell_rows("h", "c", "sdlm-conf", {}, [1.0], [True, True], 10, 2)
    rows[1].update(n_tokens=2, n_forward=2, tpf=1.0, accepted=[1, 1], step_s=[0.1, 0.1])
    store.append_samples(tmp_path, rows)
    s = report.summarize(tmp_path).iloc[0]
    assert s["tpf"] == pytest.approx(12 / 4) and s["tpf_sample_mean"] == pytest.approx((5.0 + 1.0) / 2)


def test_paired_bootstrap_covers_a_known_ratio_and_widens_with_spread():
    rng = np.random.default_rng(1)
    ar_walls = rng.uniform(0.8, 1.2, size=40)  # the machine's load drifts batch to batch ...
    pairs_tight = [(100, w / 2 * (1 + 0.01 * rng.standard_normal()), 100, w) for w in ar_walls]  # ... hitting both
    est, lo, hi = stats.paired_speedup(pairs_tight)
    assert lo < 2.0 < hi and est == pytest.approx(2.0, rel=0.01) and stats.half_width(est, lo, hi) < 0.01
    pairs_loose = [(100, w / 2 * (1 + 0.3 * rng.standard_normal()), 100, w) for w in ar_walls]
    est2, lo2, hi2 = stats.paired_speedup(pairs_loose)
    assert hi2 - lo2 > 5 * (hi - lo)
    assert stats.paired_speedup(pairs_tight) == (est, lo, hi)  # seeded: the same rows, the same interval
    assert math.isnan(stats.paired_speedup(pairs_tight[:2])[1])  # two batches: no interval


def test_injected_slow_batch_marks_the_cell_unstable(tmp_path):
    build_run(tmp_path, conf_walls=(0.5, 0.5, 0.5, 3.0))  # one batch hit by something else
    summary, md = report.write_report(tmp_path)
    conf = summary.set_index("cell_name").loc["conf"]
    assert conf["unstable"] and "speedup interval" in conf["unstable_reason"]
    text = md.read_text()
    assert "Unstable timings" in text and "conf ⚠" in text and "--timing-repeats" in text


def test_contention_marks_the_cell_unstable(tmp_path):
    build_run(tmp_path)
    store.append_cells(tmp_path, [cell_record("h_conf", wall_s=8.0, other_cpu_frac_mean=0.9, other_cpu_frac_max=0.95,
                                                     steal_frac_mean=0.1, steal_frac_max=0.2)])
    conf = report.summarize(tmp_path).set_index("cell_name").loc["conf"]
    # this session: 8 of the cell's 10 s (the two quiet ones took 1 s each) -> 0.72 of the CPU, 8% steal
    assert conf["unstable"] and "other processes used 1.4 of 2 cores on average" in conf["unstable_reason"]
    assert "CPU steal 8% of the timed wall (up to 20% in one batch)" in conf["unstable_reason"]


def test_one_batch_of_steal_is_not_a_verdict(tmp_path):
    """A short batch spans few jiffies, so one jiffy of steal reads as several percent: the flag goes by the
    wall-weighted share, not by the worst batch."""
    build_run(tmp_path)
    store.append_cells(tmp_path, [cell_record("h_conf", wall_s=8.0, steal_frac_mean=0.01, steal_frac_max=0.16,
                                              other_cpu_frac_mean=0.05, other_cpu_frac_max=0.6)])
    conf = report.summarize(tmp_path).set_index("cell_name").loc["conf"]
    assert "steal" not in str(conf["unstable_reason"]) and "other processes" not in str(conf["unstable_reason"])


def test_report_files(tmp_path):
    build_run(tmp_path)
    summary, md = report.write_report(tmp_path)
    assert (tmp_path / "summary.parquet").exists() and len(summary) == 2
    text = md.read_text()
    assert "## arith" in text and "Paired against AR" in text
    assert "| conf | 8 | 0.500 [0.22, 0.78] | 2.50 | 40 [40, 40] | 2.00× [2.00, 2.00] |" in text
    assert "2.00× [2.00, 2.00]" in report.console_table(summary)
    assert "incomplete" not in text


def test_interrupted_and_resumed_runs_say_so(tmp_path):
    build_run(tmp_path)
    store.append_samples(tmp_path, cell_rows("h_late", "late", "ar", {"x": 1}, [1.0], [True, True], 4, 4, session=1))
    (tmp_path / "manifest.json").write_text(json.dumps({"sessions": [{"status": "done"}, {"status": "interrupted"}]}))
    (tmp_path / "cells.json").write_text(json.dumps([{"name": n} for n in ("ar", "conf", "late", "never")]))
    text = report.write_report(tmp_path)[1].read_text()
    assert f"pdbench run --resume {tmp_path}" in text and "1 of 4 cells have no rows yet: never" in text


def test_mcnemar():
    assert stats.mcnemar_p(0, 0) == 1.0
    assert stats.mcnemar_p(0, 6) == pytest.approx(2 / 64)


def test_report_of_a_run_where_everything_failed(tmp_path):
    row = {n: None for n in store.FAILURE_SCHEMA.names} | {"cell_name": "c1", "stage": "load_model",
                                                           "error_type": "OSError", "message": "no such model"}
    store.append_failures(tmp_path, [row])
    summary, md = report.write_report(tmp_path)
    assert summary.empty and "No samples stored yet" in md.read_text() and "OSError: no such model" in md.read_text()
