"""AUP, accuracy under parallelism (d3LLM: Qian et al. 2026, arXiv 2601.07568; the definition below is
the paper's, as computed by the d3LLM leaderboard's aup_utils.py): one hardware-independent number for
a decoder family's accuracy-vs-TPF curve across its threshold (or other parallelism-knob) sweep.

For the cells of one family, as points (rho_i, y_i) with rho = TPF and y = accuracy in percent,
sorted by rho, and y_max the best accuracy of any cell in the comparison group (same model, suite
and batch size, every decoder):

    W(y)  = min(1, exp(-alpha * (1 - y / y_max)))          alpha = 3: accuracy lost is penalised
    keep only the points with y >= y_1 - 5                   (y_1: accuracy at the lowest TPF)
    AUP   = rho_1 * y_1 + sum_{i >= 2} (rho_i - rho_{i-1}) * (W(y_i) y_i + W(y_{i-1}) y_{i-1}) / 2

so AUP is the area under the weighted curve from TPF 0, in TPF x percentage points: AR alone scores
1 x its accuracy; a family that keeps the best accuracy while its TPF grows from 1 to 3 scores about
3 x y_max. The first rectangle is not weighted (as in the reference), and points more than 5 points
below the family's lowest-TPF accuracy are dropped rather than rejected.

A family is the decoder with every parameter fixed except the parallelism knobs (KNOBS: thresholds,
entropy bounds, draft lengths, step caps, seeds): sdlm-conf at block_size 4 and at 8 are two families.
Pure functions over report.summarize()'s DataFrame; `add_aup` is the hook that puts the numbers in
summary.parquet, `markdown_section` in report.md, and `aup_curves` is the plot.
"""

from __future__ import annotations

import json
import math

import pandas as pd

ALPHA = 3.0
MAX_DROP = 5.0  # percentage points below the family's lowest-TPF accuracy that still count
GROUP = ("model", "suite", "batch_size")
KNOBS = frozenset({"threshold", "entropy_bound", "confidence_threshold", "stability_threshold",
                   "max_denoising_steps", "max_steps_per_block", "draft_len", "max_ngram", "max_nfe",
                   "seed", "trace"})


def weight(y: float, y_max: float, alpha: float = ALPHA) -> float:
    """W(y) = min(1, exp(-alpha (1 - y / y_max))); 1 when y_max is 0 (nothing to lose)."""
    return 1.0 if y_max <= 0 else min(1.0, math.exp(-alpha * (1.0 - y / y_max)))


def aup(tpf: list[float], acc_pct: list[float], y_max: float, alpha: float = ALPHA,
        max_drop: float = MAX_DROP) -> float:
    """AUP of one family's points (TPF, accuracy in percent); NaN points are ignored."""
    pts = sorted((float(r), float(y)) for r, y in zip(tpf, acc_pct) if not (math.isnan(r) or math.isnan(y)))
    if not pts:
        return float("nan")
    floor = pts[0][1] - max_drop
    pts = [(r, y) for r, y in pts if y >= floor]
    total = pts[0][0] * pts[0][1]
    for (r0, y0), (r1, y1) in zip(pts, pts[1:]):
        total += (r1 - r0) * (weight(y1, y_max, alpha) * y1 + weight(y0, y_max, alpha) * y0) / 2
    return total


def family_labels(summary: pd.DataFrame, knobs=KNOBS) -> pd.Series:
    """Per cell: the decoder name plus the non-knob parameters that tell its families apart in this
    summary (e.g. "sdlm-conf[block_size=8]"); just the name when they are all the same."""
    params = summary["decoder_params"].map(lambda s: {k: v for k, v in json.loads(s).items() if k not in knobs})
    labels = pd.Series(index=summary.index, dtype=object)
    for dec, idx in summary.groupby("decoder").groups.items():
        fixed = [params[i] for i in idx]
        varying = sorted(k for k in set().union(*fixed) if len({json.dumps(p.get(k)) for p in fixed}) > 1)
        for i in idx:
            extra = ",".join(f"{k}={params[i].get(k)}" for k in varying)
            labels[i] = f"{dec}[{extra}]" if extra else dec
    return labels


def aup_table(summary: pd.DataFrame, alpha: float = ALPHA, max_drop: float = MAX_DROP) -> pd.DataFrame:
    """One row per (model, suite, batch size, family): its AUP and the points it rests on."""
    cols = [*GROUP, "family", "aup", "n_points", "tpf_min", "tpf_max", "acc_at_min_tpf", "y_max"]
    if summary.empty:
        return pd.DataFrame(columns=cols)
    s = summary.assign(family=family_labels(summary), acc_pct=100.0 * summary["accuracy"])
    rows = []
    for key, group in s.groupby(list(GROUP), sort=False):
        y_max = float(group["acc_pct"].max())
        for fam, f in group.groupby("family", sort=False):
            f = f.sort_values("tpf")
            rows.append({**dict(zip(GROUP, key)), "family": fam,
                         "aup": aup(f["tpf"].tolist(), f["acc_pct"].tolist(), y_max, alpha, max_drop),
                         "n_points": len(f), "tpf_min": float(f["tpf"].min()), "tpf_max": float(f["tpf"].max()),
                         "acc_at_min_tpf": float(f["acc_pct"].iloc[0]), "y_max": y_max})
    return pd.DataFrame(rows, columns=cols)


def add_aup(summary: pd.DataFrame) -> pd.DataFrame:
    """summary + columns aup_family and aup (the family's AUP, repeated on each of its cells)."""
    if summary.empty:
        return summary
    out = summary.drop(columns=["aup_family", "aup"], errors="ignore").assign(aup_family=family_labels(summary))
    table = aup_table(summary)[[*GROUP, "family", "aup"]].rename(columns={"family": "aup_family"})
    return out.merge(table, on=[*GROUP, "aup_family"], how="left")


def markdown_section(summary: pd.DataFrame) -> list[str]:
    """report.md lines: AUP per family, best first, with the definition and weighting stated."""
    table = aup_table(summary)
    if table.empty:
        return []
    lines = ["## AUP (accuracy under parallelism)", "",
             "| model | suite | batch | family | AUP | points | TPF range | accuracy at lowest TPF (%) |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in table.sort_values([*GROUP, "aup"], ascending=[True, True, True, False]).iterrows():
        lines.append(f"| {r['model']} | {r['suite']} | {r['batch_size']} | {r['family']} | {r['aup']:.1f} | "
                     f"{r['n_points']} | {r['tpf_min']:.2f}–{r['tpf_max']:.2f} | {r['acc_at_min_tpf']:.1f} |")
    lines += ["", f"AUP (d3LLM, arXiv 2601.07568): area under a family's accuracy (%) vs TPF curve from TPF 0, "
              f"points weighted by W(y) = min(1, exp(-{ALPHA:g}(1 - y/y_max))), y_max = best accuracy in the "
              f"model/suite/batch group; points more than {MAX_DROP:g} points below the family's lowest-TPF "
              "accuracy are dropped. Higher is better; AR alone scores its accuracy.", ""]
    return lines


def aup_curves(summary: pd.DataFrame):
    """Accuracy vs TPF per decoder family (one panel per suite), labelled with each family's AUP."""
    if summary.empty:
        return None
    import matplotlib.pyplot as plt

    s = add_aup(summary).assign(acc_pct=lambda d: 100.0 * d["accuracy"]).dropna(subset=["tpf", "acc_pct"])
    if s.empty:
        return None
    suites = list(dict.fromkeys(s["suite"]))
    fig, axes = plt.subplots(1, len(suites), figsize=(5.5 * len(suites), 4.5), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        g = s[s["suite"] == suite]
        for (fam, bs), f in g.groupby(["aup_family", "batch_size"], sort=False):
            f = f.sort_values("tpf")
            ax.plot(f["tpf"], f["acc_pct"], marker="o", label=f"{fam} bs{bs} (AUP {f['aup'].iloc[0]:.0f})")
        ax.set(title=suite, xlabel="tokens per forward (TPF, tokens/forward)", ylabel="accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
