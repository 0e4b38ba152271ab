"""The pieces of distributed runs that need no Ray: the event stream's fixed slots (what lets Ray
replay a retried task by position), the one writer's de-duplication, task grouping and resources,
the [run] keys and flags, the install hint without Ray, and timing pairs kept within one device.
The runs on a real local Ray are in test_ray.py (`-m ray`)."""

import json

import pytest

from harness import cli, distributed, report, runner, store
from harness.cells import Cell
from harness.group import BatchDone, CellFailed, CellReady, Progress, Sink, decode_group
from harness.sweep import SweepError, parse_sweep
from tests.fakes import sweep_text, tiny_loader
from tests.test_report import build_run, cell_rows

pytestmark = pytest.mark.usefixtures("fake_suites")
OPTS = runner.RunOptions(progress=False)


def prepared_group(limit=4, batch_size=1):
    cells = parse_sweep(sweep_text(limit=limit, batch_size=batch_size), "t.toml").cells
    prepared = runner.prepare(cells, OPTS)
    return prepared, tiny_loader(cells[0])


def test_stream_has_one_event_per_slot_whatever_fails_or_is_skipped():
    """A retried Ray task replays its stream and Ray matches items by position: so a failing cell, and
    jobs a retry skips, must still yield exactly one event each, in the same order."""
    prepared, adapter = prepared_group()
    n_jobs = sum(len(p.samples) for p in prepared)  # batch size 1: one job per sample
    first = list(decode_group(prepared, adapter, "r", 0, set(), OPTS))
    assert [type(e) for e in first[:3]] == [CellReady] * 3
    assert len(first) == 3 + n_jobs and all(isinstance(e, BatchDone) for e in first[3:])

    broken = prepared[1].decoder
    calls = {"n": 0}
    real = type(broken).generate

    def fail_on_second_batch(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # warm-up, first timed batch, then the second timed batch raises
            raise RuntimeError("boom")
        return real(self, *a, **kw)

    broken.generate = fail_on_second_batch.__get__(broken)
    done_keys = {(e.hash, r, 0) for e in first[3:6] for r in e.table["sample_id"].to_pylist()}
    replay = list(decode_group(prepared, adapter, "r", 0, set(), OPTS, already=lambda hashes: (done_keys, set())))
    assert len(replay) == len(first)
    kinds = [(type(e).__name__, e.cell) for e in replay[3:]]
    assert kinds[:3] == [("JobSkipped", 0), ("JobSkipped", 1), ("JobSkipped", 2)]  # job 0 of each cell: stored
    assert ("CellFailed", 1) in kinds
    after = kinds[kinds.index(("CellFailed", 1)) + 1:]
    assert ("BatchDone", 1) not in after and ("JobSkipped", 1) in after  # the failed cell's later jobs
    assert [e.reason for e in replay[3:6]] == ["stored"] * 3


def test_sink_stores_a_batch_once_even_when_it_arrives_twice(tmp_path):
    prepared, adapter = prepared_group(limit=2, batch_size=2)
    events = list(decode_group(prepared[:1], adapter, "r", 0, set(), OPTS))
    ready, batch = events
    result = runner.RunResult(tmp_path)
    sink = Sink(tmp_path, "r", prepared, set(), result, Progress("t", False))
    sink.take_all([ready, batch, batch])  # a re-run task re-sent its first batch
    df = store.read_samples(tmp_path)
    assert len(df) == 2 and df.groupby(list(store.KEY)).size().max() == 1
    assert (result.rows_written, sink.duplicates) == (2, 2)
    assert set(df["node"]) == {batch.node} and set(df["accelerator"]) == {"cpu"}
    sink.flush_cells()
    cells = store.read_table(tmp_path, "cells")
    assert cells["n_rows"].tolist() == [2] and cells["accelerator"].tolist() == ["cpu"]


def test_a_failure_event_from_a_worker_lands_in_failures_parquet(tmp_path):
    prepared, _ = prepared_group(limit=2)
    result = runner.RunResult(tmp_path)
    sink = Sink(tmp_path, "r", prepared, set(), result, Progress("t", False))
    sink.take(CellFailed(1, "h1", "run", "RuntimeError", "boom", "Traceback ...", repeat=0))
    f = store.read_table(tmp_path, "failures")
    assert f[["cell_name", "stage", "error_type", "repeat"]].values.tolist() == [[prepared[1].cell.name, "run",
                                                                                 "RuntimeError", 0]]
    assert result.failures and sink.tallies[("h1", 0)].status == "failed"


def test_tasks_are_the_rotation_groups_and_ask_for_a_gpu_only_for_cuda_cells():
    def p(i, **kw):
        return runner.Prepared(Cell(**{"model": "m", "decoder": "ar", "suite": "arith", **kw}), None, None, [], index=i)

    cells = [p(0), p(1, batch_size=2), p(2), p(3, suite="gsm8k"), p(4, model="m2"), p(5, device="cuda")]
    assert [[x.index for x in g] for g in distributed.task_groups(cells)] == [[0, 2], [1], [3], [4], [5]]
    opts = runner.RunOptions()
    assert distributed.gpus_for([p(0, device="cuda:1")], opts, 0) == 1
    assert distributed.gpus_for([p(0, device="cpu")], opts, 8) == 0
    assert distributed.gpus_for([p(0, device="auto")], opts, 8) == 1
    assert distributed.gpus_for([p(0, device="auto")], opts, 0) == 0
    assert distributed.gpus_for([p(0, device="cuda")], runner.RunOptions(num_gpus=0.5), 8) == 0.5


def test_run_table_accepts_the_executor_keys_and_names_bad_values():
    sweep = parse_sweep('[run]\nexecutor = "ray"\nray_address = "auto"\nnum_gpus = 0.5\nmax_retries = 0\n'
                        + sweep_text(), "s.toml")
    assert sweep.run == {"executor": "ray", "ray_address": "auto", "num_gpus": 0.5, "max_retries": 0}
    with pytest.raises(SweepError) as e:
        parse_sweep('[run]\nexecutor = "slurm"\nnum_gpus = true\nmax_retries = -1\n' + sweep_text(), "s.toml")
    text = str(e.value)
    assert "[run] executor" in text and "[run] num_gpus" in text and "[run] max_retries" in text


def test_flags_beat_the_run_table():
    parser = cli.build_parser()
    settings = {"executor": "ray", "ray_address": "ray://head:10001", "num_gpus": 2}

    def opts(*flags):
        return cli.run_options(parser.parse_args(["run", *flags]), settings)

    o = opts()
    assert (o.executor, o.ray_address, o.num_gpus, o.max_retries) == ("ray", "ray://head:10001", 2, 2)
    assert opts("--local").executor == "local"
    assert opts("--ray").ray_address == "ray://head:10001"  # bare --ray keeps the sweep's cluster
    assert opts("--ray", "auto", "--num-gpus", "1", "--max-retries", "5").ray_address == "auto"
    assert cli.run_options(parser.parse_args(["run", "--ray"]), {}).ray_address == ""  # a local Ray
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--ray", "--local"])


def test_dry_run_on_ray_says_how_many_tasks(tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "run"
    assert cli.main(["run", "--preset", "smoke", "--ray", "auto", "--dry-run", "--out", str(out)]) == 0
    assert "6 cells as 1 Ray task (auto)" in capsys.readouterr().out and not out.exists()


def test_without_ray_the_flag_says_how_to_install_it_and_creates_nothing(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "run"
    assert cli.main(["run", "--preset", "smoke", "--ray", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[ray]"' in err and not out.exists()
    with pytest.raises(runner.RunConfigError, match="needs Ray"):
        runner.run(parse_sweep(sweep_text(), "t.toml").cells, out, runner.RunOptions(executor="ray"))
    assert not out.exists()


def test_speedup_pairs_only_batches_timed_on_the_same_node_and_device(tmp_path):
    build_run(tmp_path)
    assert report.summarize(tmp_path).set_index("cell_name").loc["conf", "paired_batches"] == 4
    # the same store, but two of conf's batches were timed on another node (a retry, a resume elsewhere)
    other = tmp_path / "spread"
    ar = cell_rows("h_ar", "ar", "ar", {}, [1.0] * 4, [True] * 8, 10, 10)
    conf = cell_rows("h_conf", "conf", "sdlm-conf", {}, [0.5] * 4, [True] * 8, 10, 4)
    for r in ar + conf:
        r.update(node="a", accelerator="cpu")
    for r in conf[4:]:
        r.update(node="b")
    store.append_samples(other, ar + conf)
    (other / "manifest.json").write_text(json.dumps({"sessions": [{"status": "done", "cpu_count": 2}]}))
    s = report.summarize(other).set_index("cell_name")
    assert s.loc["conf", "paired_batches"] == 2 and s.loc["conf", "speedup"] == pytest.approx(2.0)
    assert s.loc["conf", "ran_on"] == "a cpu, b cpu"
    notes = " ".join(report.run_state(other, s.reset_index()))
    assert "2 nodes/devices" in notes and "conf" in notes and "mixes machines" in notes
