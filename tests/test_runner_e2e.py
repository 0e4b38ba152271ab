"""End to end through the real CLI in a subprocess: a tiny random Qwen2 on real GSM8K samples,
SIGKILLed mid-sweep, resumed, and the store holds exactly one row per (cell, sample)."""

import json
import os
import signal
import subprocess
import sys
import time


from harness import runner, store
from harness.sweep import parse_sweep
from tests.conftest import SAMPLE_DATA as DATA
from tests.fakes import REPO, tiny_loader

SWEEP = """
description = "e2e: every decoder on 3 GSM8K problems"
[defaults]
model = "tiny-random-qwen2"
dtype = "float32"
device = "cpu"
suite = "gsm8k"
limit = 3
batch_size = 2
max_new_tokens = 8

[[sweep]]
decoder = "ar"
name = "ar"
[[sweep]]
decoder = "sdlm-conf"
name = "conf-t{threshold}"
params = { block_size = 4, threshold = [0.0, 1.0] }
[[sweep]]
decoder = "block-diffusion"
name = "bd"
params = { block_size = 4, threshold = 0.9 }
"""
N_CELLS, N_SAMPLES = 4, 3

def cli_process(out, sweep):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PDBENCH_DATA": str(DATA)}
    cmd = [sys.executable, "-m", "harness", "run", "--sweep", str(sweep), "--out", str(out)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_mid_sweep_then_resume_gives_one_row_per_cell_and_sample(tmp_path, capsys):
    from harness import cli

    sweep, out = tmp_path / "e2e.toml", tmp_path / "run"
    sweep.write_text(SWEEP)
    t0 = time.perf_counter()
    proc = cli_process(out, sweep)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill once a few batches are stored
        if len(list((out / "samples").glob("part-*.parquet"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.stdout.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = store.read_samples(out)
    assert 0 < len(killed) < N_CELLS * N_SAMPLES
    assert killed["cell_name"].nunique() >= 2  # killed mid-rotation: several cells had batches stored
    assert killed.groupby(list(store.KEY)).size().max() == 1

    # the resume runs in this process: it saves a second cold start, and `pdbench run` is the same code
    assert cli.main(["run", "--resume", str(out), "--data-dir", str(DATA), "--no-progress"]) == 0
    wall = time.perf_counter() - t0
    log = capsys.readouterr()
    df = store.read_samples(out)
    per_key = df.groupby(["cell_hash", "sample_id", "repeat"]).size()
    assert len(per_key) == N_CELLS * N_SAMPLES and per_key.max() == 1, per_key
    assert df.groupby("cell_name").size().to_dict() == {n: N_SAMPLES for n in ("ar", "conf-t0.0", "conf-t1.0", "bd")}
    assert f"{len(df) - len(killed)} rows written, {len(killed)} already stored" in log.err, log.err
    report = (out / "report.md").read_text()
    assert "## gsm8k" in report and "| conf-t0.0 |" in report
    assert "conf-t0.0" in log.out  # the summary table is printed at the end
    assert len(list((out / "plots").glob("*.png"))) >= 4
    sessions = json.loads((out / "manifest.json").read_text())["sessions"]
    assert sessions[0]["status"] == "running" and sessions[1]["status"] == "done"  # the killed one never ended
    with capsys.disabled():
        print(f"\ne2e (kill + resume) wall time: {wall:.1f}s; rows before kill: {len(killed)}, after: {len(df)}")


def test_same_sweep_twice_gives_identical_non_timing_columns(tmp_path):
    cells = parse_sweep(SWEEP.replace("limit = 3", "limit = 2"), "e2e.toml").cells[:3]
    opts = runner.RunOptions(progress=False, data_dir=str(DATA))
    for name in ("a", "b"):
        runner.run(cells, tmp_path / name, opts, argv=["test"], loader=tiny_loader)
    a, b = (store.read_samples(tmp_path / n).sort_values(list(store.KEY)).reset_index(drop=True) for n in "ab")
    keep = [c for c in store.SAMPLE_SCHEMA.names if c not in store.TIMING_COLUMNS + store.RUN_COLUMNS]
    assert len(a) == 6
    for col in keep:
        assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col
