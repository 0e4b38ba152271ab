"""Runs on a real local Ray (two CPU slots): the same rows as a local run, a worker SIGKILLed mid-task,
a task that keeps dying, and a driver interrupted and resumed. `-m ray`; slow on a loaded 2-core box,
so one Ray is started per module and the sweeps are tiny."""

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from harness import cli, distributed, runner, store  # noqa: E402
from harness.sweep import load_sweep, parse_sweep, preset_path  # noqa: E402
from tests.conftest import SAMPLE_DATA  # noqa: E402
from tests.fakes import REPO, crashing_loader, loads_only_once, tiny_loader  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
LOCAL = runner.RunOptions(progress=False)
ON_RAY = runner.RunOptions(progress=False, executor="ray")

SWEEP = """
[defaults]
model = "tiny-random-qwen2"
dtype = "float32"
device = "cpu"
suite = "arith"
limit = {limit}
batch_size = {batch_size}
max_new_tokens = {max_new_tokens}
[[sweep]]
decoder = "ar"
name = "ar-bs{{batch_size}}"
[[sweep]]
decoder = "sdlm-conf"
name = "conf-bs{{batch_size}}"
params = {{ block_size = 4, threshold = 0.5 }}
"""


def cells(limit=3, batch_size="[1, 2]", max_new_tokens=12):
    return parse_sweep(SWEEP.format(limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens), "t.toml").cells


@pytest.fixture(scope="module")
def cluster():
    """A local Ray for the module, started the way `pdbench run --ray` starts one (the code shipped as
    the working_dir); runs in this process reuse it, CLI subprocesses join it by address."""
    if ray.is_initialized():
        ray.shutdown()
    distributed.connect(ON_RAY, [])
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def comparable(run_dir):
    """The stored rows without what legitimately differs between two runs (timings, run ids, host)."""
    df = store.read_samples(run_dir)
    keep = [c for c in store.SAMPLE_SCHEMA.names if c not in store.TIMING_COLUMNS + store.RUN_COLUMNS]
    return df[keep].sort_values(list(store.KEY)).reset_index(drop=True)


def one_row_per_key(run_dir, expected):
    df = store.read_samples(run_dir)
    per_key = df.groupby(list(store.KEY)).size()
    assert per_key.max() == 1, per_key[per_key > 1]
    assert len(per_key) == expected
    return df


def session(run_dir, i=-1):
    return json.loads((Path(run_dir) / "manifest.json").read_text())["sessions"][i]


def cli_env():
    return {**os.environ, "PYTHONPATH": str(REPO), "PDBENCH_DATA": str(SAMPLE_DATA)}


def test_smoke_preset_with_ray_stores_exactly_the_rows_of_a_local_run(cluster, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    runner.run(load_sweep(preset_path("smoke")).cells, local, LOCAL, argv=["test"])
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--preset", "smoke", "--ray", cluster,
                           "--out", str(remote), "--no-progress"], cwd=REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"on Ray ({cluster})" in proc.stderr
    a, b = comparable(local), comparable(remote)
    assert len(a) == 24 and a.equals(b)  # same keys, same outputs token for token, same grades
    s = session(remote)
    assert s["executor"] == "ray" and [t["status"] for t in s["ray_tasks"]] == ["done"]
    assert set(s["placement"]) == set(a["cell_name"])
    assert "Ray tasks" in (remote / "report.md").read_text()


def test_two_tasks_on_two_workers_give_the_rows_of_a_local_run(cluster, tmp_path):
    local = runner.run(cells(), tmp_path / "local", LOCAL, argv=["test"], loader=tiny_loader)
    remote = runner.run(cells(), tmp_path / "ray", ON_RAY, argv=["test"], loader=tiny_loader)
    assert (local.rows_written, remote.rows_written, remote.failures) == (12, 12, [])
    assert comparable(tmp_path / "local").equals(comparable(tmp_path / "ray"))
    s = session(tmp_path / "ray")
    assert [sorted(t["cells"]) for t in s["ray_tasks"]] == [["ar-bs1", "conf-bs1"], ["ar-bs2", "conf-bs2"]]
    assert all(len(t["attempts"]) == 1 and t["status"] == "done" for t in s["ray_tasks"])
    rec = store.read_table(tmp_path / "ray", "cells")
    assert len(rec) == 4 and set(rec["status"]) == {"done"} and rec["node"].notna().all()
    again = runner.run(cells(), tmp_path / "ray", ON_RAY, argv=["test"], loader=tiny_loader)
    assert (again.rows_written, again.rows_skipped) == (0, 12)  # the same skip on resume as locally


def decode_workers() -> list[int]:
    """Pids of processes running a pdbench Ray task now (Ray titles them `ray::<task name>`)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"ray::pdbench-decode" in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def kill_first_worker_after(out, n_batches: int, killed: list[int] | None = None) -> None:
    """SIGKILL the first decode worker once `n_batches` batches are stored under `out`."""
    deadline = time.time() + 600
    while time.time() < deadline:
        if len(list((out / "samples").glob("part-*.parquet"))) >= n_batches and decode_workers():
            pid = decode_workers()[0]
            os.kill(pid, signal.SIGKILL)
            if killed is not None:
                killed.append(pid)
            return
        time.sleep(0.05)


def test_worker_killed_mid_task_is_retried_and_no_row_is_lost_or_doubled(cluster, tmp_path):
    out = tmp_path / "run"
    killed: list[int] = []
    killer = threading.Thread(target=kill_first_worker_after, args=(out, 2, killed), daemon=True)
    killer.start()
    res = runner.run(cells(limit=8, batch_size=1, max_new_tokens=24), out, ON_RAY, argv=["test"], loader=tiny_loader)
    killer.join(5)
    assert killed, "no worker was running a task to kill"
    assert res.failures == [] and not res.interrupted
    one_row_per_key(out, 16)
    (task,) = session(out)["ray_tasks"]
    assert task["status"] == "done" and len(task["attempts"]) == 2  # the failure, visible in the manifest
    assert task["attempts"][0]["pid"] == killed[0] != task["attempts"][1]["pid"]
    # the re-run learnt what the driver had stored and did not decode it again (Ray would drop it anyway)
    assert task["attempts"][0]["rows_already_stored"] == 0 and task["attempts"][1]["rows_already_stored"] >= 2


def test_a_retry_that_cannot_load_its_model_fails_the_cells_still_owed(cluster, tmp_path):
    """The retried attempt's stream ends at once (its model does not load): the cells that still owed rows
    fail with a failures.parquet row each; they are not reported done."""
    out = tmp_path / "run"
    threading.Thread(target=kill_first_worker_after, args=(out, 2), daemon=True).start()
    loader = functools.partial(loads_only_once, str(tmp_path / "loaded-once"))
    res = runner.run(cells(limit=8, batch_size=1, max_new_tokens=24), out, ON_RAY, argv=["test"], loader=loader)
    stored = store.read_samples(out)
    assert 2 <= len(stored) < 16
    f = store.read_table(out, "failures")
    complete = {n for n, g in stored.groupby("cell_name") if len(g) == 8}
    assert set(f["cell_name"]) == {"ar-bs1", "conf-bs1"} - complete and len(res.failures) == len(f)
    (task,) = session(out)["ray_tasks"]
    assert task["status"].startswith("failed") and session(out)["status"] == "done_with_failures"


def test_a_task_that_keeps_dying_fails_its_cells_and_the_sweep_goes_on(cluster, tmp_path):
    opts = runner.RunOptions(progress=False, executor="ray", max_retries=1)
    res = runner.run(cells(), tmp_path, opts, argv=["test"], loader=crashing_loader)
    df = one_row_per_key(tmp_path, 6)  # the batch-size-1 cells, complete
    assert set(df["cell_name"]) == {"ar-bs1", "conf-bs1"}
    f = store.read_table(tmp_path, "failures")
    assert sorted(f["cell_name"]) == ["ar-bs2", "conf-bs2"] and set(f["stage"]) == {"ray"}
    assert len(res.failures) == 2
    s = session(tmp_path)
    dead = [t for t in s["ray_tasks"] if "ar-bs2" in t["cells"]][0]
    assert dead["status"].startswith("failed") and len(dead["attempts"]) == 2
    assert s["status"] == "done_with_failures"


def test_driver_interrupted_then_resumed_stores_one_row_per_key(cluster, tmp_path):
    sweep, out = tmp_path / "s.toml", tmp_path / "run"
    sweep.write_text(SWEEP.format(limit=6, batch_size=1, max_new_tokens=24))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--sweep", str(sweep), "--ray", cluster,
                             "--out", str(out), "--no-progress", "--no-report"], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "samples").glob("part-*.parquet"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted:\n" + proc.stdout.read()
    proc.send_signal(signal.SIGINT)  # Ctrl-C on the driver
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, log[-3000:]
    assert "cancelling" in log and "--resume" in log
    stopped = store.read_samples(out)
    assert 0 < len(stopped) < 12 and stopped.groupby(list(store.KEY)).size().max() == 1
    assert session(out)["status"] == "interrupted"

    assert cli.main(["run", "--resume", str(out), "--no-progress", "--no-report"]) == 0  # on Ray again (saved)
    one_row_per_key(out, 12)
    assert [s["executor"] for s in json.loads((out / "manifest.json").read_text())["sessions"]] == ["ray", "ray"]
