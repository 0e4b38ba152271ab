"""The GPU check's own machinery, on the CPU: the NVML verdicts, the driver's step outcomes, time
limits and exit status (the steps are stand-in commands here; CI runs the real dry run)."""

from __future__ import annotations

import json
import math
import sys

import pytest

from tests.gpu import check, nvml_check

REST = dict(gpu_util_mean=0.0, gpu_util_p50=0.0, mem_used_max_mib=600.0, power_w_mean=80.0, energy_j=80.0,
            telemetry_hz=19.0, sm_clock_mhz_mean=345.0, sm_clock_mhz_min=345.0, torch_peak_mem_mib=0.0)
LOAD = dict(gpu_util_mean=98.0, gpu_util_p50=100.0, mem_used_max_mib=5200.0, power_w_mean=600.0, energy_j=2450.0,
            telemetry_hz=19.5, sm_clock_mhz_mean=1950.0, sm_clock_mhz_min=1900.0, torch_peak_mem_mib=4500.0)


def failing(verdicts):
    return [v.reading for v in verdicts if not v.ok]


def test_nvml_verdicts_pass_readings_that_move_with_the_load():
    assert failing(nvml_check.judge(REST, LOAD, load_s=4.0, allocated_mib=4096)) == []


@pytest.mark.parametrize("change,reading", [
    (dict(energy_j=0.0), "energy counter"),  # a counter that did not advance
    (dict(energy_j=600.0 * 4 * 5), "energy counter"),  # 5x more than power x time
    (dict(power_w_mean=85.0, energy_j=340.0), "power"),  # flat: a constant, not a measurement
    (dict(gpu_util_p50=0.0), "utilisation"),
    (dict(mem_used_max_mib=600.0), "memory"),  # the allocation is not seen
    (dict(sm_clock_mhz_mean=math.nan), "SM clock"),  # NVML gave nothing
    (dict(telemetry_hz=2.0), "sampling rate"),
])
def test_nvml_verdicts_fail_a_reading_that_does_not_move(change, reading):
    assert failing(nvml_check.judge(REST, {**LOAD, **change}, load_s=4.0, allocated_mib=4096)) == [reading]


def fake_steps(monkeypatch, **code):
    """Stand-in commands for the steps (python -c CODE, with OUT the output folder)."""
    def commands(mode, out, extra):
        return {step: [sys.executable, "-c", f"OUT = {str(out)!r}\n" + code.get(step, "pass")] for step in check.STEPS}

    monkeypatch.setattr(check, "commands", commands)


NO_CUDA = "import json, pathlib; pathlib.Path(OUT, 'env.json').write_text(json.dumps({'cuda_available': False}))"


def test_failed_and_stopped_steps_are_named_and_the_exit_status_says_so(tmp_path, monkeypatch, capsys):
    fake_steps(monkeypatch, env=NO_CUDA, tests="raise SystemExit(1)", nvml="raise SystemExit(77)",
               bench="import time\nprint('measuring', flush=True)\ntime.sleep(60)")
    monkeypatch.setitem(check.CAPS["dry"], "bench", 3)
    rc = check.main(["--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {s["step"]: s["status"] for s in summary["steps"]}
    assert rc == 1 and summary["failed"] == ["tests", "bench"] and summary["mode"] == "dry"
    assert status == {"env": "PASS", "tests": "FAIL", "nvml": "SKIP", "bench": "TIMEOUT"}
    bench = summary["steps"][3]
    assert bench["seconds"] < 15  # stopped at its limit, not left to sleep
    assert "measuring" in (tmp_path / "bench.log").read_text()  # output kept up to the stop
    assert "gpu-check: FAILED: tests, bench" in capsys.readouterr().out


def test_a_spent_budget_leaves_steps_not_run_and_fails(tmp_path, monkeypatch):
    fake_steps(monkeypatch, env=NO_CUDA + "\nimport time\ntime.sleep(30)")
    assert check.main(["--out", str(tmp_path), "--budget", "6"]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["status"] for s in summary["steps"]] == ["TIMEOUT", "NOT RUN", "NOT RUN", "NOT RUN"]


def test_require_gpu_fails_where_there_is_none(tmp_path, monkeypatch):
    skipped = f"import pathlib; pathlib.Path(OUT, 'tests.xml').write_text({JUNIT.format(n=2, f=0, s=2)!r})"
    fake_steps(monkeypatch, env=NO_CUDA, tests=skipped, nvml="raise SystemExit(77)")
    assert check.main(["--out", str(tmp_path / "a")]) == 0  # a dry run by default
    assert check.main(["--out", str(tmp_path / "b"), "--require-gpu"]) == 1


JUNIT = """<testsuites><testsuite tests="{n}" failures="{f}" errors="0" skipped="{s}">
<testcase name="t"><skipped message="needs a CUDA GPU"/></testcase></testsuite></testsuites>"""


@pytest.mark.parametrize("mode,n,f,s,rc,want", [
    ("dry", 5, 0, 5, 0, "SKIP"),  # no GPU: skipped is the expected outcome
    ("gpu", 5, 0, 5, 0, "FAIL"),  # CUDA here, yet nothing ran
    ("gpu", 5, 0, 0, 0, "PASS"),
    ("gpu", 5, 1, 0, 1, "FAIL"),
    ("gpu", 0, 0, 0, 5, "FAIL"),  # nothing collected
])
def test_cuda_test_outcomes(tmp_path, mode, n, f, s, rc, want):
    xml = tmp_path / "tests.xml"
    xml.write_text(JUNIT.format(n=n, f=f, s=s))
    assert check.judge_tests(rc, xml, mode)[0] == want


def test_the_gpu_bench_command_is_one_bench_accepts(tmp_path):
    """The GPU check's bench flags, run here on the CPU with the model and sizes made tiny by flags
    appended after them (the last of a repeated flag wins, as with --bench-arg)."""
    from harness import bench

    tiny = ["--model", "tiny-random-qwen2", "--device", "cpu", "--prompt-len", "3", "--new-tokens", "3",
            "--repeats", "1", "--bandwidth-mib", "1", "--methods", "generate;ar", "--out", str(tmp_path)]
    df = bench.main(check.BENCH["gpu"] + tiny)
    assert list(dict.fromkeys(df.batch_size)) == [1, 32, 8] and set(df.engine) == {"hf", "dynamic", "static"}
    assert set(df.dtype) == {"bfloat16"}
