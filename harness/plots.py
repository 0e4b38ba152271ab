"""`pdbench plot RUN_DIR`: the figures an ablation needs, as PNG and SVG under RUN_DIR/plots/.

Each builder returns a matplotlib Figure, or None when the run has nothing to show for it (e.g. no
threshold sweep -> no τ curve), so callers and tests can inspect the axes before saving.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from harness import aup, store  # noqa: E402
from harness.report import summarize  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not beaten on both x and y (higher is better for both), sorted by x."""
    pts = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[False, False])
    front, best = [], float("-inf")
    for _, p in pts.iterrows():
        if p[y] > best:
            front.append(p)
            best = p[y]
    return pd.DataFrame(front).sort_values(x) if front else pts.iloc[:0]


def _suites(summary: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(summary["suite"]))


def accuracy_vs_tpf(summary: pd.DataFrame):
    if summary.empty:
        return None
    suites = _suites(summary)
    fig, axes = plt.subplots(1, len(suites), figsize=(5.5 * len(suites), 4.5), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        s = summary[summary["suite"] == suite]
        yerr = [(s["accuracy"] - s["acc_ci_low"]).clip(lower=0), (s["acc_ci_high"] - s["accuracy"]).clip(lower=0)]
        ax.errorbar(s["tpf_mean"], s["accuracy"], yerr=yerr, fmt="none", ecolor="0.7", elinewidth=1, zorder=1)
        sns.scatterplot(data=s, x="tpf_mean", y="accuracy", hue="decoder", style="batch_size", s=70, ax=ax, zorder=2)
        front = pareto_front(s, "tpf_mean", "accuracy")
        ax.plot(front["tpf_mean"], front["accuracy"], "--", marker="o", mfc="none", ms=12, color="0.3", lw=1.2,
                label="Pareto front", zorder=3)
        ax.set(title=suite, xlabel="tokens per forward (TPF, tokens/forward)", ylabel="accuracy (fraction correct)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def speedup_bars(summary: pd.DataFrame):
    s = summary.dropna(subset=["speedup"]) if not summary.empty else summary
    if s.empty:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(s) + 3), 4.5))
    sns.barplot(data=s, x="cell_name", y="speedup", hue="suite", ax=ax)
    ax.axhline(1.0, color="0.3", lw=1, ls="--")
    ax.set(xlabel="cell", ylabel="speedup vs AR (× tokens/s)", title="throughput speedup over the AR cell")
    ax.tick_params(axis="x", rotation=75, labelsize=7)
    fig.tight_layout()
    return fig


def _with_params(summary: pd.DataFrame) -> pd.DataFrame:
    params = summary["decoder_params"].map(json.loads)
    out = summary.copy()
    out["threshold"] = params.map(lambda p: p.get("threshold"))
    out["block_size"] = params.map(lambda p: p.get("block_size"))
    return out


def tau_ablation(summary: pd.DataFrame):
    """TPF and accuracy against the confidence threshold τ, one line per block size and decoder."""
    if summary.empty:
        return None
    s = _with_params(summary).dropna(subset=["threshold"])
    s = s.groupby(["suite", "decoder", "block_size"]).filter(lambda g: g["threshold"].nunique() >= 2)
    if s.empty:
        return None
    s = s.assign(block=s["decoder"] + " D=" + s["block_size"].astype(int).astype(str)).sort_values("threshold")
    suites = _suites(s)
    fig, axes = plt.subplots(2, len(suites), figsize=(5.5 * len(suites), 7), squeeze=False, sharex="col")
    for col, suite in enumerate(suites):
        g = s[s["suite"] == suite]
        sns.lineplot(data=g, x="threshold", y="tpf_mean", hue="block", style="batch_size", marker="o", ax=axes[0][col])
        sns.lineplot(data=g, x="threshold", y="accuracy", hue="block", style="batch_size", marker="o", ax=axes[1][col])
        axes[0][col].set(title=suite, ylabel="tokens per forward (tokens/forward)", xlabel="threshold τ (probability)")
        axes[1][col].set(ylabel="accuracy (fraction correct)", xlabel="threshold τ (probability)")
    fig.tight_layout()
    return fig


def accepted_hist(samples: pd.DataFrame):
    """How many tokens each forward committed (prefill included), per decoder configuration."""
    if samples.empty:
        return None
    acc = samples[["cell_name", "decoder", "accepted"]].explode("accepted").dropna(subset=["accepted"])
    if acc.empty:
        return None
    acc["accepted"] = acc["accepted"].astype(int)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.histplot(data=acc, x="accepted", hue="cell_name", discrete=True, stat="probability", common_norm=False,
                 multiple="dodge", shrink=0.8, ax=ax)
    ax.set(xlabel="tokens accepted per forward (tokens)", ylabel="fraction of forwards", title="accepted lengths")
    fig.tight_layout()
    return fig


def latency_cdf(samples: pd.DataFrame):
    if samples.empty or samples["e2e_s"].dropna().empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.ecdfplot(data=samples, x="e2e_s", hue="cell_name", ax=ax)
    ax.set(xlabel="end-to-end latency per sample (s)", ylabel="fraction of samples (CDF)", title="latency CDF")
    fig.tight_layout()
    return fig


def build_figures(run_dir: Path) -> dict[str, object]:
    summary = summarize(run_dir)
    samples = store.read_samples(run_dir, columns=["cell_name", "decoder", "accepted", "e2e_s"])
    figs = {
        "accuracy_vs_tpf": accuracy_vs_tpf(summary),
        "speedup": speedup_bars(summary),
        "tau_ablation": tau_ablation(summary),
        "accepted_lengths": accepted_hist(samples),
        "latency_cdf": latency_cdf(samples),
        "aup_curves": aup.aup_curves(summary),
    }
    return {k: v for k, v in figs.items() if v is not None}


def write_plots(run_dir: Path) -> list[Path]:
    out = Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in build_figures(run_dir).items():
        for ext in ("png", "svg"):
            path = out / f"{name}.{ext}"
            fig.savefig(path, dpi=120 if ext == "png" else None)
            written.append(path)
        plt.close(fig)
    return written
