"""Do two runs of the same command report the same speedups? The default preset, run twice back to back
on a quiet machine and twice with one core kept busy by a background process, interleaved and paired
(pdbench's default) and, for contrast, cell after cell with unpaired speedups (how pdbench measured
before the interleaved schedule). Writes timing_stability.md (and .parquet) under --out.

    python tests/bench/timing_stability.py --limit 40 --out results/timing-stability

Per parallel cell and scenario: each run's speedup [95% CI], how far apart the two estimates are
(|a - b| / mean), and whether each run's interval covers the other's estimate. Targets (issue 19):
quiet, every cell within 10%; busy core, within 15% and each interval covering the other estimate.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
# stops after {seconds} s, or as soon as this script is gone (its parent changes), whichever comes first
SPIN = ("import os, time\nparent, end = os.getppid(), time.time() + {seconds}\n"
        "while time.time() < end and os.getppid() == parent:\n    pass\n")


def run_preset(out: Path, preset: str, limit: int, interleave: bool) -> pd.DataFrame:
    cmd = [sys.executable, "-m", "harness", "run", "--preset", preset, "--limit", str(limit), "--out", str(out),
           "--no-progress"]
    if not interleave:
        cmd.append("--no-interleave")
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    summary = pd.read_parquet(out / "summary.parquet")
    summary["run_wall_s"] = time.perf_counter() - t0
    return summary


def unpaired_speedup(summary: pd.DataFrame) -> pd.Series:
    """The old estimate: a cell's tok/s over the AR cell's, each over its own batches, no pairing."""
    ar = summary[summary["decoder"] == "ar"].set_index(["suite", "batch_size"])["tok_s"]
    return summary.apply(lambda r: r["tok_s"] / ar.get((r["suite"], r["batch_size"]), math.nan), axis=1)


def compare(a: pd.DataFrame, b: pd.DataFrame, paired: bool) -> pd.DataFrame:
    rows = []
    b = b.set_index("cell_name")
    for _, ra in a.iterrows():
        if ra["decoder"] == "ar" or ra["cell_name"] not in b.index:
            continue
        rb = b.loc[ra["cell_name"]]
        ea, eb = (ra["speedup"], rb["speedup"]) if paired else (ra["unpaired"], rb["unpaired"])
        row = {"cell": ra["cell_name"], "a": ea, "b": eb, "apart": abs(ea - eb) / ((ea + eb) / 2)}
        if paired:
            row.update(a_low=ra["speedup_low"], a_high=ra["speedup_high"], b_low=rb["speedup_low"],
                       b_high=rb["speedup_high"], covered=bool(ra["speedup_low"] <= eb <= ra["speedup_high"]
                                                               and rb["speedup_low"] <= ea <= rb["speedup_high"]),
                       unstable=f"{int(ra['unstable'])}/{int(rb['unstable'])}")
        rows.append(row)
    return pd.DataFrame(rows)


def scenario(name: str, out: Path, args, busy: bool) -> list[tuple[str, pd.DataFrame]]:
    spinner = None
    if busy:  # bounded: it stops by itself after --busy-limit seconds, or when this script dies
        spinner = subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=args.busy_limit)])
    try:
        runs = {}
        for mode, interleave in (("paired", True), ("unpaired", False)):
            for k in "ab":
                s = run_preset(out / f"{name}-{mode}-{k}", args.preset, args.limit, interleave)
                s["unpaired"] = unpaired_speedup(s)
                runs[mode, k] = s
                print(f"{name} {mode} {k}: {s['run_wall_s'].iloc[0]:.0f} s", file=sys.stderr)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return [(f"{name}, {mode}", compare(runs[mode, "a"], runs[mode, "b"], mode == "paired"))
            for mode in ("paired", "unpaired")]


def fmt(r) -> str:
    if "a_low" in r and not math.isnan(r["a_low"]):
        return (f"{r['a']:.2f}× [{r['a_low']:.2f}, {r['a_high']:.2f}] | {r['b']:.2f}× [{r['b_low']:.2f}, "
                f"{r['b_high']:.2f}] | {100 * r['apart']:.1f}% | {'yes' if r['covered'] else 'no'} | {r['unstable']}")
    return f"{r['a']:.2f}× | {r['b']:.2f}× | {100 * r['apart']:.1f}% | – | –"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="toy")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--out", default="results/timing-stability")
    ap.add_argument("--busy-limit", type=int, default=1800, help="the busy process stops after this many seconds")
    ap.add_argument("--scenarios", default="quiet,busy")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = []
    for name in args.scenarios.split(","):
        tables += scenario(name, out, args, busy=name == "busy")
    lines = [f"# Timing stability: `--preset {args.preset} --limit {args.limit}`, two runs per row", ""]
    for title, t in tables:
        lines += [f"## {title}", "", "| cell | run a | run b | apart | intervals cover | unstable a/b |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['cell']} | {fmt(r)} |" for _, r in t.iterrows()]
        lines += ["", f"median apart {100 * t['apart'].median():.1f}%, max {100 * t['apart'].max():.1f}%"
                  + (f", covered {int(t['covered'].sum())}/{len(t)}" if "covered" in t else ""), ""]
    (out / "timing_stability.md").write_text("\n".join(lines))
    pd.concat([t.assign(scenario=title) for title, t in tables]).to_parquet(out / "timing_stability.parquet")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
