"""Step 3 of the GPU check: NVML readings are real. harness.telemetry.GpuSampler reads the GPU for a
second at rest, then for a few seconds of bf16 matmuls on a few GiB of freshly allocated memory, and
each reading has to move the way the load moves it: utilisation near 100 %, memory used up by what
was allocated, power above rest, the energy counter advancing by about power x time, a real SM clock,
at 10 Hz or more. A constant, zero or missing reading fails. No GPU: nothing to check (exit 77).

    python -m tests.gpu.nvml_check --out DIR [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SKIPPED = 77  # exit status for "nothing to check here" (no GPU), as automake's test drivers use it


@dataclass
class Verdict:
    reading: str
    ok: bool
    detail: str


def judge(idle: dict, load: dict, load_s: float, allocated_mib: float) -> list[Verdict]:
    """Verdicts on GpuSampler results at rest (`idle`) and under load (`load`, `load_s` seconds long,
    `allocated_mib` allocated in between). NaN (a reading NVML did not give) fails like a wrong one:
    every comparison with NaN is False."""
    v = Verdict
    expected_j = load["power_w_mean"] * load_s
    ratio = load["energy_j"] / expected_j if expected_j > 0 else float("nan")
    mem_delta = load["mem_used_max_mib"] - idle["mem_used_max_mib"]
    return [
        v("sampling rate", load["telemetry_hz"] >= 10, f"{load['telemetry_hz']:.1f} Hz (>= 10)"),
        v("utilisation", load["gpu_util_p50"] >= 80,
          f"median {load['gpu_util_p50']:.0f} % under load (>= 80), {idle['gpu_util_mean']:.0f} % at rest"),
        v("memory", mem_delta >= 0.9 * allocated_mib,
          f"used {mem_delta:+.0f} MiB under load for {allocated_mib:.0f} MiB allocated (>= 90 %)"),
        v("power", load["power_w_mean"] >= 1.2 * idle["power_w_mean"] and load["power_w_mean"] > 0,
          f"{load['power_w_mean']:.0f} W under load, {idle['power_w_mean']:.0f} W at rest (>= 1.2x)"),
        v("energy counter", load["energy_j"] > 0 and 0.5 <= ratio <= 2.0,
          f"+{load['energy_j']:.1f} J in {load_s:.1f} s = {ratio:.2f} x mean power x time (0.5-2)"),
        v("SM clock", load["sm_clock_mhz_mean"] >= 300,
          f"mean {load['sm_clock_mhz_mean']:.0f} MHz, min {load['sm_clock_mhz_min']:.0f} MHz under load (>= 300)"),
        v("torch peak memory", load["torch_peak_mem_mib"] >= allocated_mib,
          f"{load['torch_peak_mem_mib']:.0f} MiB (>= {allocated_mib:.0f})"),
    ]


def matmul_load(seconds: float, device) -> int:
    """bf16 8192^3 matmuls (about 1 TFLOP each) until `seconds` have passed; returns how many ran."""
    import torch

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    c = torch.empty_like(a)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(8):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize(device)  # keep the queue short: the load ends when the window does
        n += 8
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of the load window")
    args = ap.parse_args(argv)
    import torch

    from harness.telemetry import GpuSampler

    if not torch.cuda.is_available():
        print("nvml: no GPU (torch.cuda.is_available() is False): NVML readings not checked")
        return SKIPPED
    try:
        import pynvml  # noqa: F401  (nvidia-ml-py)
    except ImportError:
        print("nvml: FAIL: pynvml is not importable: install nvidia-ml-py (on a machine without a package "
              "registry, carry its pynvml.py and put its folder on PYTHONPATH)")
        return 1
    device = torch.device("cuda", torch.cuda.current_device())
    torch.zeros(1, device=device)  # CUDA context up before the rest reading
    time.sleep(1.0)  # let the clocks settle back after the context's start
    with GpuSampler(cuda_device=device) as rest:
        time.sleep(1.0)
    before = torch.cuda.memory_allocated(device)
    block = torch.ones(4 * 2**30, dtype=torch.uint8, device=device)  # 4 GiB that NVML must see
    with GpuSampler(cuda_device=device) as busy:
        t0 = time.perf_counter()
        n = matmul_load(args.seconds, device)
        load_s = time.perf_counter() - t0
    allocated_mib = (torch.cuda.memory_allocated(device) - before) / 2**20  # the block (the operands are freed)
    del block
    idle, load = rest.result(), busy.result()
    verdicts = judge(idle, load, load_s, allocated_mib)
    print(f"nvml: {torch.cuda.get_device_name(device)}; {n} matmuls of 8192^3 bf16 in {load_s:.1f} s "
          f"({2 * 8192**3 * n / load_s / 1e12:.0f} TFLOP/s); {len(busy.samples)} samples under load")
    for v in verdicts:
        print(f"  {'PASS' if v.ok else 'FAIL'}  {v.reading:17} {v.detail}")
    print(f"  info  throttle reasons seen 0x{int(load['throttle_reasons']):x}, other processes on the GPU: "
          f"{int(load['gpu_other_procs'])}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nvml.json").write_text(json.dumps({"rest": idle, "load": load, "load_s": load_s,
                                                    "allocated_mib": allocated_mib,
                                                    "verdicts": [asdict(v) for v in verdicts]}, indent=2) + "\n")
    return 0 if all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
