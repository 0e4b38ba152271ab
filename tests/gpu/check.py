"""The prepared GPU check (docs/gpu-check.md): one command that says whether pdbench's CUDA path works
on this machine and what it measures there.

    bash tests/gpu/check.sh [--out DIR] [--budget SECONDS] [--dry-run] [--require-gpu] [--skip STEP]

Steps, each a child process with its own time limit and log in --out:
  env    the environment (GPU, driver, CUDA, torch, transformers, packages, git sha)  -> env.txt, env.json
  tests  the cuda-marked tests of tests/gpu (invariants in fp32 and bf16)            -> tests.log, tests.xml
  nvml   NVML readings move with a real load (tests/gpu/nvml_check.py)                -> nvml.log, nvml.json
  bench  `pdbench bench`: Qwen2.5-3B architecture, random weights, bf16, batch 1/32/8,
         generate + four decoders on the dynamic and static engines                   -> bench.log, bench.parquet, bench.md
Without CUDA (or with --dry-run) the same steps run as a CPU dry run: the cuda tests are skipped
with their reason, nvml says "no GPU", the bench runs tiny-random-qwen2 at tiny sizes.

The whole check stays inside --budget (default 450 s on GPU, 150 s dry): each step gets at most its
share, a step out of time is stopped (the bench keeps the rows it measured) and the next one runs.
The driver imports no torch, so a crashing step cannot take it down. Exit status 0 when every step
passed (or, in a dry run, was skipped for want of a GPU), else 1, naming the steps that did not.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIPPED_RC = 77  # a step's "nothing to check here" (tests/gpu/nvml_check.py)
STEPS = ("env", "tests", "nvml", "bench")
# Per-step ceilings in seconds; the bench gets what is left of the budget. On an H200 the steps take
# about 15, 60-90, 15 and 200-250 s, so a stuck test run cannot eat the bench's time.
CAPS = {"gpu": {"env": 90, "tests": 200, "nvml": 60, "bench": 10**6},
        "dry": {"env": 60, "tests": 60, "nvml": 30, "bench": 10**6}}
BUDGET = {"gpu": 450, "dry": 150}
BENCH = {
    # batch 32 before 8: if time runs out, the table still has what the targets compare (1 and 32)
    "gpu": ["--model", "arch:qwen2.5-3b", "--dtype", "bf16", "--batch-sizes", "1,32,8", "--engine", "dynamic,static",
            "--prompt-len", "128", "--new-tokens", "128", "--repeats", "2"],
    "dry": ["--model", "tiny-random-qwen2", "--device", "cpu", "--dtype", "float32", "--batch-sizes", "1,4",
            "--engine", "dynamic,static", "--prompt-len", "8", "--new-tokens", "8", "--repeats", "1",
            "--bandwidth-mib", "16"],
}


@dataclass
class Outcome:
    step: str
    status: str  # PASS | FAIL | TIMEOUT | SKIP | NOT RUN
    seconds: float = 0.0
    detail: str = ""
    log: str = ""
    command: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("PASS", "SKIP")


class Console:
    """Prints and keeps a copy in check.log: the folder holds the whole transcript."""

    def __init__(self, path: Path):
        self.file = path.open("a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, line: str = "") -> None:
        with self.lock:
            print(line, flush=True)
            self.file.write(line + "\n")


def run_step(argv: list[str], log: Path, timeout: float, say: Console, env: dict) -> tuple[int | None, float]:
    """Run argv with output to `log` and the console; stop it (SIGTERM, then SIGKILL after 10 s) when
    `timeout` seconds have passed. -> (exit status, None when stopped for time; seconds)."""
    t0 = time.monotonic()
    with log.open("w", buffering=1) as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)

        def pump():
            for line in proc.stdout:
                out.write(line)
                say("  | " + line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            rc = None
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the step and whatever it started
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=10)
    return rc, time.monotonic() - t0


def judge_tests(rc: int | None, xml: Path, mode: str) -> tuple[str, str]:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    reasons = set()
    if xml.exists():
        root = ET.parse(xml).getroot()
        for suite in root.iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
        reasons = {s.get("message", "") for s in root.iter("skipped")}
    n, bad, skipped = counts["tests"], counts["failures"] + counts["errors"], counts["skipped"]
    summary = f"{n - bad - skipped} passed, {bad} failed or errors, {skipped} skipped"
    if rc is None:
        return "TIMEOUT", summary
    if rc == 5 or (rc == 0 and n == 0):
        return "FAIL", "no cuda-marked test collected"
    if rc != 0 or bad:
        return "FAIL", f"exit {rc}: {summary}"
    if skipped == n:
        # skipped for want of a GPU is the dry run's expected outcome; on a GPU it means they never ran
        why = "; ".join(sorted(reasons))
        return ("SKIP", f"{n} cuda tests skipped: {why}") if mode == "dry" else ("FAIL", f"CUDA is here, yet {summary}: {why}")
    return "PASS", summary


def bench_rows(out: Path) -> int:
    """Rows of the bench table written so far (bench.md is rewritten after every method x batch)."""
    md = out / "bench.md"
    return sum(1 for line in md.read_text().splitlines() if line.startswith("| ") and not line.startswith("| model")) \
        if md.exists() else 0


def judge(step: str, rc: int | None, out: Path, mode: str) -> tuple[str, str]:
    if step == "tests":
        return judge_tests(rc, out / "tests.xml", mode)
    if step == "bench":
        rows = bench_rows(out)
        if rc is None:
            return "TIMEOUT", f"out of time: the table keeps the {rows} method x batch rows measured"
        return ("PASS", f"{rows} method x batch rows") if rc == 0 else ("FAIL", f"exit {rc}; {rows} rows kept")
    if rc is None:
        return "TIMEOUT", ""
    if rc == SKIPPED_RC and mode == "dry":
        return "SKIP", "no GPU"
    return ("PASS", "") if rc == 0 else ("FAIL", f"exit {rc}")


def commands(mode: str, out: Path, bench_extra: list[str]) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "env": [py, "-m", "tests.gpu.env_info", "--out", str(out)],
        "tests": [py, "-m", "pytest", "-q", "-rs", "-m", "cuda", "tests/gpu", "-p", "no:cacheprovider",
                  f"--junitxml={out / 'tests.xml'}"],
        "nvml": [py, "-m", "tests.gpu.nvml_check", "--out", str(out)],
        "bench": [py, "-m", "harness", "bench", *BENCH[mode], "--out", str(out), *bench_extra],
    }


def child_env(mode: str) -> dict:
    env = dict(os.environ)
    if mode == "dry":  # tiny models on a small shared CPU: spinning OpenMP threads only slow them (DESIGN, Threads)
        env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # this checkout first
    env.setdefault("HF_HUB_OFFLINE", "1")  # random weights and tiny models need no hub; never wait on one
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tests/gpu/check.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="output folder (default results/gpu-check-<time>, or -dry-<time>)")
    ap.add_argument("--budget", type=float, help="seconds for the whole check (default 450 on GPU, 150 dry)")
    ap.add_argument("--dry-run", action="store_true", help="the CPU dry run even where CUDA is available")
    ap.add_argument("--require-gpu", action="store_true", help="fail (after a dry run) where no CUDA device is found")
    ap.add_argument("--skip", action="append", default=[], choices=STEPS, help="leave a step out (repeatable)")
    ap.add_argument("--bench-arg", action="append", default=[], metavar="ARG",
                    help="appended to the bench command, e.g. --bench-arg=--new-tokens=64 (repeatable)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = (args.out or REPO / "results" / f"gpu-check-{'dry-' if args.dry_run else ''}{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = Console(out / "check.log")
    mode = "dry" if args.dry_run else "gpu"  # until env.json says whether CUDA is here
    say(f"pdbench GPU check -> {out}")
    outcomes: list[Outcome] = []
    for i, step in enumerate(STEPS, 1):
        cmd = commands(mode, out, args.bench_arg)[step]
        budget = args.budget or BUDGET[mode]
        left = budget - (time.monotonic() - started)
        timeout = min(CAPS[mode][step], left)
        if step in args.skip:
            outcomes.append(Outcome(step, "SKIP", detail="--skip", command=cmd))
            continue
        if left < 5:
            outcomes.append(Outcome(step, "NOT RUN", detail=f"budget of {budget:.0f} s spent", command=cmd))
            continue
        log = out / ("env.txt" if step == "env" else f"{step}.log")
        say(f"\n== [{i}/{len(STEPS)}] {step} ({mode}, at most {timeout:.0f} s): {' '.join(cmd[1:])}")
        rc, seconds = run_step(cmd, log, timeout, say, child_env(mode))
        status, detail = judge(step, rc, out, mode)
        if step == "env" and rc == 0:
            cuda = json.loads((out / "env.json").read_text())["cuda_available"]
            if not cuda and mode == "gpu":
                mode = "dry"
                say("== no CUDA device: the rest is the CPU dry run (tiny model, cuda tests skipped)")
            if not cuda and args.require_gpu:
                status, detail = "FAIL", "--require-gpu, and no CUDA device is available"
        outcomes.append(Outcome(step, status, seconds, detail, log.name, cmd))
    total = time.monotonic() - started
    failed = [o.step for o in outcomes if not o.ok]
    report(out, outcomes, mode, total, failed, say)
    return 1 if failed else 0


def report(out: Path, outcomes: list[Outcome], mode: str, total: float, failed: list[str], say: Console) -> None:
    lines = [f"# pdbench GPU check ({'CPU dry run: no GPU was checked' if mode == 'dry' else 'GPU'})", "",
             "| step | status | seconds | detail | log |", "|---|---|---|---|---|"]
    lines += [f"| {o.step} | {o.status} | {o.seconds:.1f} | {o.detail} | {o.log} |" for o in outcomes]
    lines += ["", f"total {total:.1f} s; folder {out}", "", "commands:"]
    lines += [f"    {' '.join(o.command)}" for o in outcomes]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"mode": mode, "total_s": total, "failed": failed,
                                                  "steps": [asdict(o) for o in outcomes]}, indent=2) + "\n")
    say("\n" + "\n".join(lines[2:4 + len(outcomes)]))
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    say(f"\n{out}: {', '.join(files)}")
    verdict = (f"FAILED: {', '.join(failed)}" if failed else
               "all steps passed" + (" (CPU dry run: no GPU was checked)" if mode == "dry" else ""))
    say(f"gpu-check: {verdict} in {total:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
