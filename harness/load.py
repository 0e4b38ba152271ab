"""How busy the machine was while a batch was timed: CPU steal and other processes' CPU (from
/proc/stat deltas against this process's own CPU time) and the load average.

A timed batch on a shared machine measures the machine as much as the decoder. These numbers let
the report say so: a cell that ran while other processes wanted more cores than were free, or
while the hypervisor stole time, is marked unstable (harness/report.py). Linux only; elsewhere every
field is NaN and nothing is flagged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

NAN = float("nan")
HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class CpuSnapshot:
    jiffies: list[int] | None  # /proc/stat "cpu": user nice system idle iowait irq softirq steal ...
    own_cpu_s: float  # this process's CPU time, all its threads
    wall: float


def snapshot() -> CpuSnapshot:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        jiffies = [int(x) for x in fields[1:9]] if fields and fields[0] == "cpu" else None
    except OSError:
        jiffies = None
    return CpuSnapshot(jiffies, time.process_time(), time.perf_counter())


def cpu_load(start: CpuSnapshot, end: CpuSnapshot) -> dict[str, float]:
    """Between two snapshots, as fractions of all cores' capacity: `steal_frac` (time the hypervisor
    gave to other guests), `other_cpu_frac` (busy time that was not this process: other programs),
    and `loadavg` (1-minute load average at the end; runnable processes)."""
    out = {"steal_frac": NAN, "other_cpu_frac": NAN, "loadavg": NAN}
    try:
        out["loadavg"] = os.getloadavg()[0]
    except OSError:
        pass
    if start.jiffies is None or end.jiffies is None:
        return out
    delta = [b - a for a, b in zip(start.jiffies, end.jiffies)]
    total = sum(delta)
    if total <= 0:
        return out
    user, nice, system, idle, iowait, irq, softirq, steal = delta
    busy_s = (user + nice + system + irq + softirq) / HZ
    own_s = end.own_cpu_s - start.own_cpu_s
    out["steal_frac"] = steal / total
    out["other_cpu_frac"] = max(0.0, busy_s - own_s) / (total / HZ)
    return out
