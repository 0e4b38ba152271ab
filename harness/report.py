"""`pdbench report RUN_DIR`: summary.parquet and report.md, one row per cell.

Definitions (docs/design.md holds the full list; harness/stats.py the statistics):
  tpf       Σ tokens / Σ forwards over the cell's rows (a ratio of sums, like throughput); the mean of
            per-sample ratios is kept as `tpf_sample_mean`
  tok/s     Σ tokens / Σ batch wall time (a batch's samples share its wall time, so summing per-sample
            e2e would count it B times), with a 95% bootstrap interval over batches
  speedup   tok/s ÷ the AR cell's tok/s (same model, dtype, device, suite, batch size), computed over the
            batches that hold the same samples in both cells and ran on the same node and device (a
            distributed run, or a resume on another machine, can spread a cell), with a paired 95%
            bootstrap interval
  accuracy  Wilson 95% over distinct samples: greedy repeats are not independent trials
A cell is `unstable` when its interval is wider than ±10% of its estimate, it has too few batches for
an interval, or it ran under contention (rules in `instability`); the report says why and what to do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness import aup, store
from harness.stats import half_width, mcnemar_p, paired_speedup, throughput_interval, wilson

AR = "ar"
MAX_HALF_WIDTH = 0.10  # an interval wider than ±10% of its estimate is not a number to quote
MAX_STEAL = 0.05  # hypervisor steal above 5% of the CPU over the timed wall (wall-weighted mean)
MAX_FORWARD_SPREAD = 5.0  # p99 / p50 of decode-forward times
ADVICE = ("To steady it: run on a quieter machine (or at least nothing else heavy beside it), keep "
          "`--threads 1` for small models on few cores, and use `--timing-repeats 3` (each batch timed "
          "three times, the median kept); more samples (--limit) narrow the interval.")


def _q(s: pd.Series, q: float) -> float:
    s = s.dropna()
    return float(np.quantile(s, q)) if len(s) else float("nan")


def place_of(samples: pd.DataFrame) -> pd.Series:
    """"node accelerator" of each row: where it was timed ("" for rows stored before pdbench kept it)."""
    cols = [samples[c].fillna("").astype(str) if c in samples else pd.Series("", index=samples.index)
            for c in ("node", "accelerator")]
    return (cols[0] + " " + cols[1]).str.strip()


def batch_table(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per timed batch: its cell, repeat, the samples it held, tokens, wall time and where it ran."""
    g = samples.assign(place=place_of(samples)).groupby("batch_id", sort=False)
    return pd.DataFrame({
        "cell_hash": g["cell_hash"].first(), "repeat": g["repeat"].first(), "session": g["session"].first(),
        "samples": g["sample_id"].agg(lambda ids: tuple(sorted(ids))), "tokens": g["n_tokens"].sum(),
        "wall_s": g["batch_wall_s"].first(), "place": g["place"].first(),
    }).reset_index()


def paired_batches(cell: pd.DataFrame, ar: pd.DataFrame) -> list[tuple[float, float, float, float]]:
    """(tokens, wall, ar tokens, ar wall) for each batch of `cell` whose samples an AR batch held too
    (the same repeat when there is one, else any), timed on the same node and device: a ratio of
    times from two machines would measure the machines."""
    by_key = {(r.samples, r.repeat, r.place): r for r in ar.itertuples()}
    by_samples = {(r.samples, r.place): r for r in ar.itertuples()}
    pairs = []
    for r in cell.itertuples():
        a = by_key.get((r.samples, r.repeat, r.place)) or by_samples.get((r.samples, r.place))
        if a is not None:
            pairs.append((r.tokens, r.wall_s, a.tokens, a.wall_s))
    return pairs


def _cell_stats(df: pd.DataFrame, batches: pd.DataFrame) -> dict:
    last = df.iloc[-1]
    per_sample = df.groupby("sample_id")["correct"].mean()
    acc = float(df["correct"].mean()) if len(df) else float("nan")
    lo, hi = wilson(acc, len(per_sample))
    tokens, forwards = int(df["n_tokens"].sum()), int(df["n_forward"].sum())
    tok_s, tok_lo, tok_hi = throughput_interval(batches["tokens"], batches["wall_s"])
    return {
        "cell_hash": last["cell_hash"], "cell_name": last["cell_name"], "model": last["model"],
        "dtype": last["dtype"], "device": last["device"], "decoder": last["decoder"],
        "decoder_params": last["decoder_params"], "suite": last["suite"],
        "batch_size": int(last["batch_size"]), "max_new_tokens": int(last["max_new_tokens"]),
        "n_rows": len(df), "n_samples": len(per_sample), "repeats": int(df["repeat"].nunique()),
        "n_batches": len(batches), "sessions": int(df["session"].nunique()),
        "accuracy": acc, "acc_ci_low": lo, "acc_ci_high": hi,
        "tpf": tokens / forwards if forwards else float("nan"), "tpf_sample_mean": float(df["tpf"].mean()),
        "n_tokens_mean": float(df["n_tokens"].mean()), "n_forward_mean": float(df["n_forward"].mean()),
        "tokens": tokens, "forwards": forwards, "wall_s": float(batches["wall_s"].sum()),
        "tok_s": tok_s, "tok_s_low": tok_lo, "tok_s_high": tok_hi,
        "ttft_p50_s": _q(df["ttft_s"], .5), "ttft_p90_s": _q(df["ttft_s"], .9), "ttft_p99_s": _q(df["ttft_s"], .99),
        "latency_p50_s": _q(df["e2e_s"], .5), "latency_p90_s": _q(df["e2e_s"], .9),
        "latency_p99_s": _q(df["e2e_s"], .99),
        "eos_rate": float((df["finish"] == "eos").mean()),
        "ran_on": ", ".join(sorted(p for p in batches["place"].unique() if p)),
    }


def _weighted(values: pd.Series, wall: pd.Series) -> float:
    """Mean of a per-session reading, weighted by the sessions' wall time (plain mean where no wall is known,
    nan when no session has the reading)."""
    ok = values.notna() & (wall > 0)
    if ok.any():
        return float((values[ok] * wall[ok]).sum() / wall[ok].sum())
    return float(values.mean()) if values.notna().any() else float("nan")


def _cell_side(cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell_hash, from cells.parquet: telemetry (util weighted by wall time, peaks as maxima, energy
    per committed token), the load while timing (wall-weighted) and the worst noise readings of any session."""
    rows = []
    for h, g in cells.groupby("cell_hash"):
        w = g["wall_s"].fillna(0)
        util = g["gpu_util_mean"]
        ok = util.notna() & (w > 0)
        energy_ok = g["energy_j"].notna().all() and g["n_tokens"].sum() > 0
        throttle = [int(x) for x in g["throttle_reasons"].dropna()]
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
            "threads": float(g["threads"].max()), "forward_cv": float(g["forward_cv"].max()),
            "forward_p99_p50": float(g["forward_p99_p50"].max()), "steal_frac": _weighted(g["steal_frac_mean"], w),
            "steal_frac_max": float(g["steal_frac_max"].max()), "other_cpu_frac": _weighted(g["other_cpu_frac_mean"], w),
            "loadavg_max": float(g["loadavg_max"].max()),
            "gpu_other_procs": float(g["gpu_other_procs"].max()), "sm_clock_mhz_min": float(g["sm_clock_mhz_min"].min()),
            "throttle_reasons": float(np.bitwise_or.reduce(throttle)) if throttle else float("nan"),
        })
    return pd.DataFrame(rows, columns=["cell_hash", "gpu_util_mean", "gpu_util_max", "peak_mem_mib", "power_w_mean",
                                       "energy_j", "j_per_token", "threads", "forward_cv", "forward_p99_p50",
                                       "steal_frac", "steal_frac_max", "other_cpu_frac", "loadavg_max", "gpu_other_procs",
                                       "sm_clock_mhz_min", "throttle_reasons"])


def _baseline(summary: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    same = summary[(summary["decoder"] == AR) & (summary["model"] == row["model"]) & (summary["dtype"] == row["dtype"])
                   & (summary["device"] == row["device"]) & (summary["suite"] == row["suite"])
                   & (summary["batch_size"] == row["batch_size"])]
    if same.empty:
        return None
    exact = same[same["max_new_tokens"] == row["max_new_tokens"]]
    return (exact if not exact.empty else same).iloc[0]


def _accuracy_pairs(samples: pd.DataFrame, h: str, base_h: str | None) -> dict:
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


def instability(row: pd.Series, n_cpus: int) -> list[str]:
    """Why this cell's speed is not a number to quote (empty: it is)."""
    reasons = []
    has_base = not (isinstance(row["ar_cell"], float) or row["ar_cell"] is None) and row["ar_cell"] != row["cell_hash"]
    est, lo, hi = (row["speedup"], row["speedup_low"], row["speedup_high"]) if has_base else (
        row["tok_s"], row["tok_s_low"], row["tok_s_high"])
    what = "speedup" if has_base else "tok/s"
    width = half_width(est, lo, hi)
    if math.isnan(width):
        n = row["paired_batches"] if has_base else row["n_batches"]
        reasons.append(f"{what}: {int(n)} {'paired ' if has_base else ''}batches, too few for an interval")
    elif width > MAX_HALF_WIDTH:
        reasons.append(f"{what} interval ±{100 * width:.1f}% (> ±{100 * MAX_HALF_WIDTH:.0f}%)")
    threads = row["threads"] if not math.isnan(row["threads"]) else n_cpus
    free = max(0.0, n_cpus - threads)
    others = row["other_cpu_frac"] * n_cpus
    if not math.isnan(others) and others > free + 0.25:
        reasons.append(f"other processes used {others:.1f} of {n_cpus} cores on average while {threads:g} ran the decoder")
    if row["steal_frac"] > MAX_STEAL:
        reasons.append(f"CPU steal {100 * row['steal_frac']:.0f}% of the timed wall "
                       f"(up to {100 * row['steal_frac_max']:.0f}% in one batch)")
    if row["gpu_other_procs"] > 0:
        reasons.append(f"{int(row['gpu_other_procs'])} other process(es) on the GPU")
    if row["throttle_reasons"] > 0:
        reasons.append(f"GPU clocks throttled (NVML reasons {int(row['throttle_reasons']):#x})")
    if row["forward_p99_p50"] > MAX_FORWARD_SPREAD:
        reasons.append(f"decode-forward time p99/p50 = {row['forward_p99_p50']:.1f}")
    return reasons


def summarize(run_dir: Path) -> pd.DataFrame:
    run_dir = Path(run_dir)
    samples = store.read_samples(run_dir)
    if samples.empty:
        return pd.DataFrame()
    batches = batch_table(samples)
    order = list(dict.fromkeys(samples["cell_hash"]))
    summary = pd.DataFrame([_cell_stats(samples[samples["cell_hash"] == h], batches[batches["cell_hash"] == h])
                            for h in order])
    summary = summary.merge(_cell_side(store.read_table(run_dir, "cells")), on="cell_hash", how="left")
    extra = []
    for _, row in summary.iterrows():
        base = _baseline(summary, row)
        base_h = None if base is None else base["cell_hash"]
        pairs = [] if base_h is None else paired_batches(batches[batches["cell_hash"] == row["cell_hash"]],
                                                          batches[batches["cell_hash"] == base_h])
        speedup, lo, hi = paired_speedup(pairs) if pairs else (float("nan"),) * 3
        extra.append({"speedup": speedup, "speedup_low": lo, "speedup_high": hi, "paired_batches": len(pairs),
                      **_accuracy_pairs(samples, row["cell_hash"], base_h)})
    summary = pd.concat([summary, pd.DataFrame(extra)], axis=1)
    n_cpus = _manifest_value(run_dir, "cpu_count") or 1
    reasons = [instability(r, int(n_cpus)) for _, r in summary.iterrows()]
    summary["unstable"] = [bool(r) for r in reasons]
    summary["unstable_reason"] = ["; ".join(r) for r in reasons]
    return aup.add_aup(summary)


def _sessions(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "manifest.json"
    return json.loads(path.read_text())["sessions"] if path.exists() else []


def _manifest_value(run_dir: Path, key: str):
    sessions = _sessions(run_dir)
    return sessions[-1].get(key) if sessions else None


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def with_interval(est: float, lo: float, hi: float, digits: int, unit: str = "") -> str:
    if math.isnan(est):
        return "–"
    text = f"{est:.{digits}f}{unit}"
    return text if math.isnan(lo) else f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def summary_rows(summary: pd.DataFrame) -> tuple[list[str], list[list]]:
    headers = ["cell", "n", "accuracy [95% CI]", "TPF", "tok/s [95% CI]", "speedup [95% CI]",
               "TTFT p50/p90/p99 (ms)", "latency p50/p90/p99 (s)", "GPU util %", "peak mem MiB", "J/token"]
    rows = []
    for _, r in summary.iterrows():
        rows.append([
            r["cell_name"] + (" ⚠" if r["unstable"] else ""), r["n_rows"],
            f"{_fmt(r['accuracy'])} [{_fmt(r['acc_ci_low'], 2)}, {_fmt(r['acc_ci_high'], 2)}]",
            _fmt(r["tpf"], 2), with_interval(r["tok_s"], r["tok_s_low"], r["tok_s_high"], 0),
            with_interval(r["speedup"], r["speedup_low"], r["speedup_high"], 2, "×"),
            "/".join(_fmt(r[f"ttft_p{q}_s"] * 1e3, 1) for q in (50, 90, 99)),
            "/".join(_fmt(r[f"latency_p{q}_s"], 2) for q in (50, 90, 99)),
            _fmt(r["gpu_util_mean"], 0), _fmt(r["peak_mem_mib"], 0), _fmt(r["j_per_token"], 3),
        ])
    return headers, rows


def run_state(run_dir: Path, summary: pd.DataFrame) -> list[str]:
    """What a reader must know before quoting anything: an unfinished run, cells without rows, cells
    whose timings come from several sessions."""
    run_dir = Path(run_dir)
    notes = []
    sessions = _sessions(run_dir)
    status = sessions[-1].get("status") if sessions else None
    if status not in ("done", "done_with_failures"):
        what = {"running": "did not finish (killed, or still running)"}.get(status, f"ended {status!r}")
        notes.append(f"This run is incomplete: its last session {what}. Continue it with "
                     f"`pdbench run --resume {run_dir}`.")
    cells_json = run_dir / "cells.json"
    if cells_json.exists():
        names = [c["name"] for c in json.loads(cells_json.read_text())]
        missing = [n for n in names if summary.empty or n not in set(summary["cell_name"])]
        if missing:
            notes.append(f"{len(missing)} of {len(names)} cells have no rows yet: {', '.join(missing[:6])}"
                         + (" ..." if len(missing) > 6 else ""))
    if not summary.empty and "ran_on" in summary:
        places = sorted({p for r in summary["ran_on"] for p in r.split(", ") if p})
        spread = summary[summary["ran_on"].str.contains(", ", regex=False)]["cell_name"].tolist()
        if len(places) > 1:
            notes.append(f"Cells ran on {len(places)} nodes/devices ({'; '.join(places[:4])}"
                         f"{' ...' if len(places) > 4 else ''}). Speedups pair only batches timed on the same "
                         "node and device; compare tok/s between cells only where they ran on the same one.")
        if spread:
            notes.append(f"{len(spread)} cells were timed on more than one node/device: {', '.join(spread[:6])}; "
                         "their tok/s mixes machines.")
    if not summary.empty and (summary["sessions"] > 1).any():
        mixed = summary[summary["sessions"] > 1]["cell_name"].tolist()
        notes.append(f"Timings of {len(mixed)} cells come from more than one session (the run was resumed): "
                     f"{', '.join(mixed[:6])}. Batches are still paired by samples, but machine state may differ "
                     "between sessions.")
    return notes


def render_markdown(run_dir: Path, summary: pd.DataFrame) -> str:
    run_dir = Path(run_dir)
    out = [f"# pdbench report: {run_dir.name}", ""]
    sessions = _sessions(run_dir)
    if sessions:
        s = sessions[-1]
        gpu = ", ".join(s.get("gpu_names") or []) or "none"
        places = "; ".join(sorted({w for ws in (s.get("placement") or {}).values() for w in ws}))
        out += [f"pdbench {s.get('pdbench_version')} (git {str(s.get('git_sha'))[:10]}{'+dirty' if s.get('git_dirty') else ''}),"
                f" torch {s.get('torch')}, transformers {s.get('transformers')}, CUDA {s.get('cuda')}, GPU: {gpu},"
                f" CPU: {s.get('cpu_model')} ({s.get('cpu_count')} cores). Sessions: {len(sessions)}. Batches "
                f"{'interleaved across cells' if s.get('interleave', True) else 'cell after cell'}, "
                f"each timed {s.get('timing_repeats', 1)}×."
                + (f" Cells ran as Ray tasks on {places or 'a Ray cluster'} (the versions and hardware above are the "
                   "driver's; manifest.json: ray_tasks, placement)." if s.get("executor") == "ray" else ""), ""]
    out += [f"> **{n}**" for n in run_state(run_dir, summary)]
    if summary.empty:
        out += ["", "No samples stored yet.", ""]
    else:
        out.append("")
        for suite, g in summary.groupby("suite", sort=False):
            headers, rows = summary_rows(g)
            out += [f"## {suite}", "", markdown_table(headers, rows), ""]
        unstable = summary[summary["unstable"]]
        if not unstable.empty:
            out += ["## ⚠ Unstable timings", "", f"{len(unstable)} of {len(summary)} cells: quote their speed with "
                    "care.", "", markdown_table(["cell", "why"], [[r["cell_name"], r["unstable_reason"]]
                                                                    for _, r in unstable.iterrows()]), "", ADVICE, ""]
        low = summary[summary["tpf"] < 1]
        if not low.empty:
            out += [f"TPF below 1 ({', '.join(low['cell_name'])}): these rows took forwards whose tokens were "
                    "not kept — slots decided after the first EOS, or beyond max_new_tokens, count in n_forward "
                    "but not in n_tokens (a block decoder fills its whole block before it can stop).", ""]
        paired = summary[summary["paired_n"] > 0]
        if not paired.empty:
            out += ["## Paired against AR (same samples)", "",
                    markdown_table(["cell", "paired n", "both ✓", "only this ✓", "only AR ✓", "neither", "McNemar p"],
                                   [[r["cell_name"], r["paired_n"], r["both_correct"], r["only_this"], r["only_ar"],
                                     r["neither"], _fmt(r["mcnemar_p"], 3)] for _, r in paired.iterrows()]), ""]
    if not summary.empty:
        out += aup.markdown_section(summary)
    failures = store.read_table(run_dir, "failures")
    if not failures.empty:
        out += ["## Failed cells", "", markdown_table(
            ["cell", "stage", "error"],
            [[f["cell_name"], f["stage"], f"{f['error_type']}: {str(f['message'])[:160]}"] for _, f in failures.iterrows()]), ""]
    out += ["Definitions: tokens include the first EOS; TPF = Σ tokens / Σ target forwards (prefill included);",
            "tok/s = Σ tokens / Σ batch wall time, [95% bootstrap interval over batches]; speedup = tok/s ÷ the AR",
            "cell's (same model, suite, batch size) over batches holding the same samples and timed on the same",
            "node and device, [95% paired bootstrap interval]; ⚠ = unstable (see above); one untimed warm-up",
            "batch per cell; GPU util is NVML's busy",
            "fraction, not SM occupancy; – = not available.", ""]
    return "\n".join(out)


def write_report(run_dir: Path) -> tuple[pd.DataFrame, Path]:
    run_dir = Path(run_dir)
    summary = summarize(run_dir)
    if not summary.empty:
        summary.to_parquet(run_dir / "summary.parquet", index=False)
    path = run_dir / "report.md"
    path.write_text(render_markdown(run_dir, summary))
    return summary, path


def warnings(run_dir: Path, summary: pd.DataFrame) -> list[str]:
    """Lines for the end of a run's console output: the state of the run and every unstable cell."""
    out = run_state(run_dir, summary)
    if not summary.empty and summary["unstable"].any():
        out.append(f"{int(summary['unstable'].sum())} cells have unstable timings (⚠):")
        out += [f"  {r['cell_name']}: {r['unstable_reason']}" for _, r in summary[summary["unstable"]].iterrows()]
        out.append(ADVICE)
    return out


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
