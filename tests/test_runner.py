"""The runner in-process on a tiny random Qwen2: rows, bookkeeping, resume, stale reuse, failures,
the code-exec gate, the grading pool and Ctrl-C."""

import json
import os
import signal

import pytest

from harness import runner, store
from harness.measure import FEW_CORES
from harness.sweep import parse_sweep
from tests.fakes import SlowCodeSuite, sweep_text, tiny_loader

OPTS = runner.RunOptions(progress=False)
pytestmark = pytest.mark.usefixtures("fake_suites")


def run(text, out, loader=tiny_loader, opts=OPTS):
    return runner.run(parse_sweep(text, "t.toml").cells, out, opts, argv=["test"], loader=loader)


def test_run_resume_and_stale_reuse(tmp_path):
    res = run(sweep_text(), tmp_path)
    assert (res.rows_written, res.failures) == (12, [])
    df = store.read_samples(tmp_path)
    for row in df.to_dict("records"):  # the stored rows keep the bookkeeping identities
        assert sum(row["accepted"]) == row["n_tokens"] == len(row["output_ids"])
        assert len(row["accepted"]) == len(row["step_s"]) == row["n_forward"]
        assert row["tpf"] == row["n_tokens"] / row["n_forward"]
    assert df.groupby("cell_hash").size().tolist() == [4, 4, 4]
    assert set(df["tpf"][df["decoder"] == "ar"]) == {1.0}
    assert (df["n_tokens"] - df["n_tokens_excl_eos"]).isin([0, 1]).all()
    assert set(df["batch_size"]) == {2} and set(df["pos_in_batch"]) == {0, 1}
    cells = store.read_table(tmp_path, "cells")
    assert len(cells) == 3 and cells["warmup_s"].notna().all() and cells["gpu_util_mean"].isna().all()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["sessions"][0]["status"] == "done" and "torch" in manifest["sessions"][0]
    # threads "auto": a tiny model on a CPU of <= 4 cores runs with one intra-op thread, recorded where it ran
    if len(os.sched_getaffinity(0)) <= FEW_CORES:
        assert manifest["sessions"][0]["threads"] == {"tiny-random-qwen2": 1} and set(cells["threads"]) == {1}

    again = run(sweep_text(), tmp_path)  # same sweep, same dir: nothing to do
    assert (again.rows_written, again.rows_skipped) == (0, 12)

    changed = sweep_text().replace("threshold = [0.0, 1.0]", "threshold = [0.0, 0.5]")
    third = run(changed, tmp_path)  # τ=0.5 is a new hash: its rows are computed, never reused
    assert (third.rows_written, third.rows_skipped) == (4, 8)
    df = store.read_samples(tmp_path)
    assert len(df) == 16 and df.groupby(list(store.KEY)).size().max() == 1
    assert len(json.loads((tmp_path / "manifest.json").read_text())["sessions"]) == 3


def test_failing_cells_are_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from decoders.base import DecodeResult
    from decoders.sdlm import SDLMConfidence

    real = SDLMConfidence.generate

    def flaky(self, model, prompts, max_new_tokens):
        if self.threshold == 0.0:
            raise RuntimeError("CUDA out of memory (simulated)")
        out = real(self, model, prompts, max_new_tokens)
        return [DecodeResult(r.tokens, r.accepted + [0], r.finish, r.step_s, r.ttft_s, r.e2e_s) for r in out]

    monkeypatch.setattr(SDLMConfidence, "generate", flaky)
    res = run(sweep_text(), tmp_path)
    assert res.rows_written == 4 and len(res.failures) == 2  # AR ran; both conf cells failed
    fails = store.read_table(tmp_path, "failures")
    assert set(fails["cell_name"]) == {"conf-t0.0", "conf-t1.0"}
    oom = fails[fails["cell_name"] == "conf-t0.0"].iloc[0]
    assert "out of memory" in oom["message"] and "Traceback" in oom["traceback"] and oom["cell_hash"]
    assert "len(accepted)" in fails[fails["cell_name"] == "conf-t1.0"].iloc[0]["message"]  # bookkeeping
    assert set(fails["error_type"]) == {"RuntimeError", "BookkeepingError"}


def test_code_exec_gate_before_any_model_loads(tmp_path):
    def loader(cell):
        raise AssertionError("a model was loaded before the gate")

    with pytest.raises(runner.RunConfigError, match="allow-code-exec"):
        run(sweep_text(suite="test-code"), tmp_path, loader=loader)
    assert not (tmp_path / "samples").exists()


@pytest.mark.parametrize("overlap", [True, None])
def test_code_grading_runs_on_the_pool_unless_decoding_on_cpu(tmp_path, overlap):
    """Overlapping grading with decoding is opt-in on CPU (default None = only on an accelerator):
    the sandboxed programs would take the decoder's cores and skew its timings."""
    SlowCodeSuite.graded_in.clear()
    opts = runner.RunOptions(progress=False, allow_code_exec=True, warmup=False, overlap_grading=overlap)
    res = run(sweep_text(suite="test-code").split("[[sweep]]\ndecoder = \"sdlm")[0], tmp_path, opts=opts)
    assert res.rows_written == 4 and store.read_samples(tmp_path)["correct"].all()
    assert len(SlowCodeSuite.graded_in) == 4
    on_pool = [n.startswith("pdbench-grade") for n in SlowCodeSuite.graded_in]
    assert all(on_pool) if overlap else not any(on_pool)  # the tiny model runs on cpu


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_after_the_batch_in_flight(tmp_path, monkeypatch, sig):
    """Ctrl-C, or the SIGTERM a batch scheduler sends before it kills a job."""
    from decoders.ar import AR

    real, calls = AR.generate, []

    def interrupted(self, model, prompts, max_new_tokens):
        calls.append(len(prompts))
        if len(calls) == 2:  # call 1 is the warm-up; during the first timed batch, the signal arrives
            os.kill(os.getpid(), sig)
        return real(self, model, prompts, max_new_tokens)

    monkeypatch.setattr(AR, "generate", interrupted)
    res = run(sweep_text(), tmp_path)
    assert res.interrupted and res.rows_written == 2  # the batch in flight was finished and stored
    assert json.loads((tmp_path / "manifest.json").read_text())["sessions"][0]["status"] == "interrupted"
    assert store.read_table(tmp_path, "cells")["status"].tolist() == ["interrupted"]
    monkeypatch.setattr(AR, "generate", real)
    res = run(sweep_text(), tmp_path)
    assert (res.rows_written, res.rows_skipped) == (10, 2)
    assert store.read_samples(tmp_path).groupby(list(store.KEY)).size().max() == 1


def test_a_crash_outside_any_cell_is_recorded_as_such_and_keeps_what_was_stored(tmp_path, monkeypatch):
    """Not a decoder failure (those are rows in failures.parquet) but the harness itself failing, e.g. the
    disk filling up on the second batch: the session ends "crashed", its cells "interrupted", the first
    batch stays stored, the report says the run is incomplete, and a resume finishes it."""
    from harness import report

    real, calls = store.append_sample_table, []

    def disk_full(run_dir, table):
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(run_dir, table)

    monkeypatch.setattr(store, "append_sample_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run(sweep_text(), tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["sessions"][0]["status"] == "crashed"
    assert set(store.read_table(tmp_path, "cells")["status"]) == {"interrupted"}
    assert len(store.read_samples(tmp_path)) == calls[0]
    assert any("ended 'crashed'" in n for n in report.run_state(tmp_path, report.summarize(tmp_path)))
    monkeypatch.setattr(store, "append_sample_table", real)
    res = run(sweep_text(), tmp_path)
    assert (res.rows_written, res.rows_skipped) == (12 - calls[0], calls[0])


def test_rotation_interleaves_cells_that_share_suite_and_batch_size():
    from harness.cells import Cell

    def jobs(name, suite, n, bs=2):
        p = runner.Prepared(Cell("m", "ar", suite, batch_size=bs, name=name), None, None, [])
        return [runner.Job(p, 0, i, []) for i in range(n)]

    per_cell = [jobs("a", "x", 3), jobs("b", "x", 2), jobs("c", "y", 2), jobs("d", "x", 2, bs=4)]
    order = [(j.p.cell.name, j.index) for j in runner.rotation(per_cell, interleave=True)]
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("c", 0), ("c", 1), ("d", 0), ("d", 1)]
    sequential = [(j.p.cell.name, j.index) for j in runner.rotation(per_cell, interleave=False)]
    assert sequential == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("c", 0), ("c", 1), ("d", 0), ("d", 1)]


def stored_order(out):
    df = store.read_samples(out).sort_values("finished_at")
    return list(dict.fromkeys(zip(df["batch_index"], df["cell_name"])))


def test_interleaved_run_times_batch_k_of_every_cell_together_and_can_be_turned_off(tmp_path):
    text = sweep_text(limit=4, batch_size=2)
    run(text, tmp_path / "on")
    order = stored_order(tmp_path / "on")
    assert [b for b, _ in order] == [0, 0, 0, 1, 1, 1]  # batch 0 of all three cells, then batch 1
    run(text, tmp_path / "off", opts=runner.RunOptions(progress=False, interleave=False))
    assert [b for b, _ in stored_order(tmp_path / "off")] == [0, 1, 0, 1, 0, 1]
    on, off = (store.read_samples(tmp_path / d).sort_values(list(store.KEY)) for d in ("on", "off"))
    assert on["output_ids"].map(list).tolist() == off["output_ids"].map(list).tolist()  # same outputs


def test_timing_repeats_keep_the_median_and_check_outputs_repeat(tmp_path, monkeypatch):
    opts = runner.RunOptions(progress=False, timing_repeats=3)
    run(sweep_text(limit=2), tmp_path / "ok", opts=opts)
    df = store.read_samples(tmp_path / "ok")
    assert df["batch_walls_s"].map(len).eq(3).all()
    assert (df["batch_wall_s"] == df["batch_walls_s"].map(lambda w: sorted(w)[1])).all()

    from decoders.ar import AR

    real, calls = AR.generate, []

    def drifting(self, model, prompts, max_new_tokens):  # a decoder whose output changes between calls
        calls.append(1)
        out = real(self, model, prompts, max_new_tokens)
        if len(calls) % 2 == 0:
            out[0].tokens[-1] += 1
        return out

    monkeypatch.setattr(AR, "generate", drifting)
    res = run(sweep_text(limit=2), tmp_path / "bad", opts=opts)
    fails = store.read_table(tmp_path / "bad", "failures")
    assert fails["cell_name"].tolist() == ["tiny-random-qwen2/test-echo/ar/bs2"] and len(res.failures) == 1
    assert "--timing-repeats" in fails.iloc[0]["message"]


def test_a_slow_batch_marks_its_cell_unstable(tmp_path, monkeypatch):
    from decoders.sdlm import SDLMConfidence
    from harness import report

    real, calls = SDLMConfidence.generate, []

    def hiccup(self, model, prompts, max_new_tokens):
        calls.append(self.threshold)
        if self.threshold == 0.0 and len(calls) == 5:  # one timed batch of one cell meets a busy machine
            import time

            time.sleep(1.0)
        return real(self, model, prompts, max_new_tokens)

    monkeypatch.setattr(SDLMConfidence, "generate", hiccup)
    run(sweep_text(limit=8), tmp_path)
    s = report.summarize(tmp_path).set_index("cell_name")
    assert s.loc["conf-t0.0", "unstable"] and "speedup interval" in s.loc["conf-t0.0", "unstable_reason"]
    assert s.loc["conf-t0.0", "paired_batches"] == 3  # the echo suite holds 6 samples
