"""`pdbench report RUN_DIR`: summary.parquet and report.md, one row per cell.

Throughput is Σ tokens / Σ batch wall time (a batch's samples share its wall time, so summing
per-sample e2e would count it B times); speedup divides that by the AR cell of the same model, dtype,
device, suite and batch size. Accuracy intervals are Wilson 95% over distinct samples: greedy
repeats are not independent trials, so they do not narrow the interval.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness import aup, store

Z95 = 1.959963984540054
AR = "ar"


def wilson(p: float, n: int) -> tuple[float, float]:
    if n == 0 or math.isnan(p):
        return float("nan"), float("nan")
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return min(lo, p), max(hi, p)  # rounding must not put p outside its own interval


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar (binomial on the discordant pairs)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _q(s: pd.Series, q: float) -> float:
    s = s.dropna()
    return float(np.quantile(s, q)) if len(s) else float("nan")


def _cell_stats(df: pd.DataFrame) -> dict:
    first = df.iloc[-1]
    per_sample = df.groupby("sample_id")["correct"].mean()
    acc = float(df["correct"].mean()) if len(df) else float("nan")
    lo, hi = wilson(acc, len(per_sample))
    batches = df.drop_duplicates("batch_id")
    wall = float(batches["batch_wall_s"].sum())
    tokens = int(df["n_tokens"].sum())
    return {
        "cell_hash": first["cell_hash"], "cell_name": first["cell_name"], "model": first["model"],
        "dtype": first["dtype"], "device": first["device"], "decoder": first["decoder"],
        "decoder_params": first["decoder_params"], "suite": first["suite"],
        "batch_size": int(first["batch_size"]), "max_new_tokens": int(first["max_new_tokens"]),
        "n_rows": len(df), "n_samples": len(per_sample), "repeats": int(df["repeat"].nunique()),
        "accuracy": acc, "acc_ci_low": lo, "acc_ci_high": hi,
        "tpf_mean": float(df["tpf"].mean()), "n_tokens_mean": float(df["n_tokens"].mean()),
        "n_forward_mean": float(df["n_forward"].mean()), "tokens": tokens, "wall_s": wall,
        "tok_s": tokens / wall if wall > 0 else float("nan"),
        "ttft_p50_s": _q(df["ttft_s"], .5), "ttft_p90_s": _q(df["ttft_s"], .9), "ttft_p99_s": _q(df["ttft_s"], .99),
        "latency_p50_s": _q(df["e2e_s"], .5), "latency_p90_s": _q(df["e2e_s"], .9),
        "latency_p99_s": _q(df["e2e_s"], .99),
        "eos_rate": float((df["finish"] == "eos").mean()),
    }


def _telemetry(cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell_hash: util mean weighted by wall time, peaks as maxima, energy per committed token."""
    rows = []
    for h, g in cells.groupby("cell_hash"):
        w = g["wall_s"].fillna(0)
        util = g["gpu_util_mean"]
        ok = util.notna() & (w > 0)
        energy_ok = g["energy_j"].notna().all() and g["n_tokens"].sum() > 0
        rows.append({
            "cell_hash": h,
            "gpu_util_mean": float((util[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else float("nan"),
            "gpu_util_max": float(g["gpu_util_max"].max()),
            # torch's allocator peak when known (this process only), else NVML's device-wide maximum
            "peak_mem_mib": float(g["torch_peak_mem_mib"].max()) if g["torch_peak_mem_mib"].notna().any()
            else float(g["mem_used_max_mib"].max()),
            "power_w_mean": float(g["power_w_mean"].mean()),
            "energy_j": float(g["energy_j"].sum()) if energy_ok else float("nan"),
            "j_per_token": float(g["energy_j"].sum() / g["n_tokens"].sum()) if energy_ok else float("nan"),
        })
    cols = ["cell_hash", "gpu_util_mean", "gpu_util_max", "peak_mem_mib", "power_w_mean", "energy_j", "j_per_token"]
    return pd.DataFrame(rows, columns=cols)


def _baseline(summary: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    same = summary[(summary["decoder"] == AR) & (summary["model"] == row["model"]) & (summary["dtype"] == row["dtype"])
                   & (summary["device"] == row["device"]) & (summary["suite"] == row["suite"])
                   & (summary["batch_size"] == row["batch_size"])]
    if same.empty:
        return None
    exact = same[same["max_new_tokens"] == row["max_new_tokens"]]
    return (exact if not exact.empty else same).iloc[0]


def summarize(run_dir: Path) -> pd.DataFrame:
    samples = store.read_samples(run_dir)
    if samples.empty:
        return pd.DataFrame()
    order = list(dict.fromkeys(samples["cell_hash"]))
    summary = pd.DataFrame([_cell_stats(samples[samples["cell_hash"] == h]) for h in order])
    summary = summary.merge(_telemetry(store.read_table(run_dir, "cells")), on="cell_hash", how="left")
    speedup, paired = [], []
    for _, row in summary.iterrows():
        base = _baseline(summary, row)
        speedup.append(row["tok_s"] / base["tok_s"] if base is not None and base["tok_s"] > 0 else float("nan"))
        paired.append(_paired(samples, row["cell_hash"], None if base is None else base["cell_hash"]))
    summary["speedup"] = speedup
    return aup.add_aup(pd.concat([summary, pd.DataFrame(paired)], axis=1))


def _paired(samples: pd.DataFrame, h: str, base_h: str | None) -> dict:
    """Both / only this / only AR / neither correct, over (sample_id, repeat) present in both cells."""
    empty = {"paired_n": 0, "both_correct": 0, "only_this": 0, "only_ar": 0, "neither": 0,
             "mcnemar_p": float("nan"), "ar_cell": base_h}
    if base_h is None or base_h == h:
        return empty
    a = samples[samples["cell_hash"] == h].set_index(["sample_id", "repeat"])["correct"]
    b = samples[samples["cell_hash"] == base_h].set_index(["sample_id", "repeat"])["correct"]
    j = pd.concat([a.rename("this"), b.rename("ar")], axis=1, join="inner").astype(bool)
    only_this, only_ar = int((j["this"] & ~j["ar"]).sum()), int((~j["this"] & j["ar"]).sum())
    return {"paired_n": len(j), "both_correct": int((j["this"] & j["ar"]).sum()), "only_this": only_this,
            "only_ar": only_ar, "neither": int((~j["this"] & ~j["ar"]).sum()),
            "mcnemar_p": mcnemar_p(only_this, only_ar), "ar_cell": base_h}


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def summary_rows(summary: pd.DataFrame) -> tuple[list[str], list[list]]:
    headers = ["cell", "n", "accuracy [95% CI]", "TPF", "tok/s", "speedup", "TTFT p50/p90/p99 (ms)",
               "latency p50/p90/p99 (s)", "GPU util %", "peak mem MiB", "J/token"]
    rows = []
    for _, r in summary.iterrows():
        rows.append([
            r["cell_name"], r["n_rows"], f"{_fmt(r['accuracy'])} [{_fmt(r['acc_ci_low'], 2)}, {_fmt(r['acc_ci_high'], 2)}]",
            _fmt(r["tpf_mean"], 2), _fmt(r["tok_s"], 1), _fmt(r["speedup"], 2),
            "/".join(_fmt(r[f"ttft_p{q}_s"] * 1e3, 1) for q in (50, 90, 99)),
            "/".join(_fmt(r[f"latency_p{q}_s"], 2) for q in (50, 90, 99)),
            _fmt(r["gpu_util_mean"], 0), _fmt(r["peak_mem_mib"], 0), _fmt(r["j_per_token"], 3),
        ])
    return headers, rows


def render_markdown(run_dir: Path, summary: pd.DataFrame) -> str:
    run_dir = Path(run_dir)
    out = [f"# pdbench report: {run_dir.name}", ""]
    man_path = run_dir / "manifest.json"
    if man_path.exists():
        sessions = json.loads(man_path.read_text())["sessions"]
        s = sessions[-1]
        gpu = ", ".join(s.get("gpu_names") or []) or "none"
        out += [f"pdbench {s.get('pdbench_version')} (git {str(s.get('git_sha'))[:10]}{'+dirty' if s.get('git_dirty') else ''}),"
                f" torch {s.get('torch')}, transformers {s.get('transformers')}, CUDA {s.get('cuda')}, GPU: {gpu},"
                f" CPU: {s.get('cpu_model')}. Sessions: {len(sessions)}.", ""]
    if summary.empty:
        out += ["No samples stored yet.", ""]
        paired = summary
    else:
        for suite, g in summary.groupby("suite", sort=False):
            headers, rows = summary_rows(g)
            out += [f"## {suite}", "", markdown_table(headers, rows), ""]
        paired = summary[summary["paired_n"] > 0]
    if not paired.empty:
        out += ["## Paired against AR (same samples)", "",
                markdown_table(["cell", "paired n", "both ✓", "only this ✓", "only AR ✓", "neither", "McNemar p"],
                               [[r["cell_name"], r["paired_n"], r["both_correct"], r["only_this"], r["only_ar"],
                                 r["neither"], _fmt(r["mcnemar_p"], 3)] for _, r in paired.iterrows()]), ""]
    out += aup.markdown_section(summary)
    failures = store.read_table(run_dir, "failures")
    if not failures.empty:
        out += ["## Failed cells", "", markdown_table(
            ["cell", "stage", "error"],
            [[f["cell_name"], f["stage"], f"{f['error_type']}: {str(f['message'])[:160]}"] for _, f in failures.iterrows()]), ""]
    out += ["Definitions: tokens include the first EOS; TPF = tokens / target forwards (prefill included);",
            "tok/s = Σ tokens / Σ batch wall time; speedup = tok/s ÷ the AR cell's (same model, suite, batch size);",
            "one untimed warm-up batch per cell; GPU util is NVML's busy fraction, not SM occupancy; – = not available.", ""]
    return "\n".join(out)


def write_report(run_dir: Path) -> tuple[pd.DataFrame, Path]:
    run_dir = Path(run_dir)
    summary = summarize(run_dir)
    if not summary.empty:
        summary.to_parquet(run_dir / "summary.parquet", index=False)
    path = run_dir / "report.md"
    path.write_text(render_markdown(run_dir, summary))
    return summary, path


def console_table(summary: pd.DataFrame) -> str:
    """Fixed-width text version of the summary for the terminal."""
    if summary.empty:
        return "(no samples stored)"
    headers, rows = summary_rows(summary)
    cols = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cols]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
