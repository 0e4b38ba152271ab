"""What a cell measured in one session, batch by batch, and its cells.parquet row: time, tokens,
GPU telemetry (harness/telemetry.py) and noise (harness/load.py), aggregated over its batches."""

from __future__ import annotations

import functools
import math
import operator
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness import manifest
from harness.telemetry import COLUMNS as GPU_COLUMNS

if TYPE_CHECKING:
    from harness.runner import Prepared


@dataclass
class CellTally:
    """What a (cell, repeat) measured in this session, batch by batch."""
    status: str = "done"
    started_at: str = ""
    n_rows: int = 0
    n_tokens: int = 0
    walls: list[float] = field(default_factory=list)
    warmup_s: float = float("nan")
    gpu: list[dict] = field(default_factory=list)
    cpu: list[dict] = field(default_factory=list)
    forward_s: list[float] = field(default_factory=list)  # decode forwards (each batch's first left out)
    threads: int = 0
    node: str = ""
    accelerator: str = ""


def cell_records(tallies: dict[tuple, CellTally], prepared: dict[str, Prepared], run_id: str) -> list[dict]:
    """One cells.parquet row per (cell, repeat) that ran in this session."""
    out = []
    for (h, repeat), t in tallies.items():
        p = prepared[h]
        wall = sum(t.walls)
        out.append({
            "run_id": run_id, "cell_hash": h, "cell_name": p.cell.name, "model": p.cell.model,
            "decoder": p.cell.decoder, "decoder_params": p.params_json, "suite": p.cell.suite,
            "batch_size": p.cell.batch_size, "repeat": repeat, "status": t.status, "n_rows": t.n_rows,
            "n_tokens": t.n_tokens, "n_batches": len(t.walls), "threads": t.threads, "wall_s": wall,
            "warmup_s": t.warmup_s, "node": t.node or None, "accelerator": t.accelerator or None,
            "started_at": t.started_at, "ended_at": manifest.now(),
            **_gpu_totals(t.gpu, t.walls), **_noise(t),
        })
    return out


def _gpu_totals(per_batch: list[dict], walls: list[float]) -> dict:
    """Per-batch NVML readings -> the cell's: util weighted by batch time, peaks as maxima, energy summed."""
    nan = float("nan")
    out = dict.fromkeys(GPU_COLUMNS, nan)
    if not per_batch:
        return out

    def col(k):
        return [(b[k], w) for b, w in zip(per_batch, walls) if not math.isnan(b[k])]

    for k in ("gpu_util_mean", "gpu_util_p50", "power_w_mean", "sm_clock_mhz_mean", "telemetry_hz"):
        pairs = col(k)
        if pairs and sum(w for _, w in pairs) > 0:
            out[k] = sum(v * w for v, w in pairs) / sum(w for _, w in pairs)
    for k in ("gpu_util_max", "mem_used_max_mib", "torch_peak_mem_mib", "gpu_other_procs"):
        if col(k):
            out[k] = max(v for v, _ in col(k))
    if col("sm_clock_mhz_min"):
        out["sm_clock_mhz_min"] = min(v for v, _ in col("sm_clock_mhz_min"))
    energy = [b["energy_j"] for b in per_batch]
    out["energy_j"] = sum(energy) if energy and not any(math.isnan(e) for e in energy) else nan
    reasons = [int(b["throttle_reasons"]) for b in per_batch if not math.isnan(b["throttle_reasons"])]
    out["throttle_reasons"] = float(functools.reduce(operator.or_, reasons)) if reasons else nan
    return out


def _noise(t: CellTally) -> dict:
    """Spread of the decode forwards' times and the machine's load over the cell's batches."""
    nan = float("nan")
    fwd = sorted(t.forward_s)
    mean = statistics.fmean(fwd) if fwd else nan
    cv = statistics.pstdev(fwd) / mean if len(fwd) > 1 and mean > 0 else nan
    p50 = fwd[len(fwd) // 2] if fwd else nan
    p99 = fwd[min(len(fwd) - 1, int(0.99 * len(fwd)))] if fwd else nan

    def worst(k):
        vals = [c[k] for c in t.cpu if not math.isnan(c[k])]
        return max(vals) if vals else nan

    def typical(k):
        # weighted by batch wall time: a short batch spans a few dozen jiffies, so one jiffy of steal reads
        # as several percent; the weighted mean is the share over the whole timed wall
        pairs = [(c[k], w) for c, w in zip(t.cpu, t.walls) if not math.isnan(c[k]) and w > 0]
        total = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / total if total > 0 else nan

    return {"forward_cv": cv, "forward_p99_p50": p99 / p50 if p50 and p50 > 0 else nan,
            "steal_frac_mean": typical("steal_frac"), "steal_frac_max": worst("steal_frac"),
            "other_cpu_frac_mean": typical("other_cpu_frac"), "other_cpu_frac_max": worst("other_cpu_frac"),
            "loadavg_max": worst("loadavg")}
