"""What `--ray` costs: wall time of one `pdbench run` of a preset (the smoke preset by default), run
as a user runs it (a fresh CLI process, report and plots skipped), three ways, alternating:

  local       no Ray
  ray-start   --ray: a local Ray started for the run (and stopped after it)
  ray-join    --ray ADDRESS: joins a Ray that is already up (started here, once, outside the timing)

Prints a table: median and min of the wall times, and the difference to local.

    python tests/bench/ray_overhead.py [--preset smoke] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def one_run(preset: str, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "harness", "run", "--preset", preset, "--out", str(Path(tmp) / "run"),
               "--no-progress", "--no-report", *extra]
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return wall


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import ray

    from harness import distributed, runner

    distributed.connect(runner.RunOptions(executor="ray"), [])  # the cluster ray-join joins
    address = ray.get_runtime_context().gcs_address
    ways = {"local": [], "ray-start": ["--ray"], "ray-join": ["--ray", address]}
    walls: dict[str, list[float]] = {w: [] for w in ways}
    try:
        for i in range(args.repeats):
            for way, extra in ways.items():
                walls[way].append(one_run(args.preset, extra))
                print(f"  run {i + 1} {way:9} {walls[way][-1]:6.1f} s", file=sys.stderr)
    finally:
        ray.shutdown()
    base = statistics.median(walls["local"])
    load = os.getloadavg()[0]
    print(f"\npreset {args.preset}, {args.repeats} runs each, {os.cpu_count()} CPUs, load average {load:.1f}\n")
    print("| way | median s | min s | median − local |")
    print("|---|---|---|---|")
    for way, w in walls.items():
        print(f"| {way} | {statistics.median(w):.1f} | {min(w):.1f} | {statistics.median(w) - base:+.1f} s |")


if __name__ == "__main__":
    main()
