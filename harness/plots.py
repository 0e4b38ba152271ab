"""`pdbench plot RUN_DIR`: the figures an ablation needs, as PNG and SVG under RUN_DIR/plots/.

Each figure answers one question, with one panel per suite (and per decoder family where lines
would otherwise pile up), points labelled where they are rather than through a long legend, and
95% intervals drawn wherever the report has one:
  accuracy_vs_tpf   what accuracy does each decoder keep as it commits more tokens per forward?
  speedup           how much faster than AR is each cell in wall clock (paired interval)?
  tau_ablation      what does the confidence threshold τ buy (TPF) and cost (accuracy)?
  accepted_lengths  how many tokens does a forward commit, per decoder family?
  latency_cdf       how long does a request take, per decoder family?
Each builder returns a matplotlib Figure, or None when the run has nothing to show for it (e.g. no
threshold sweep -> no τ curve), so callers and tests can inspect the axes before saving.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness import aup, store  # noqa: E402
from harness.report import summarize  # noqa: E402

plt.rcParams.update({"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})
PANEL = (5.0, 4.0)


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not beaten on both x and y (higher is better for both), sorted by x."""
    pts = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[False, False])
    front, best = [], float("-inf")
    for _, p in pts.iterrows():
        if p[y] > best:
            front.append(p)
            best = p[y]
    return pd.DataFrame(front).sort_values(x) if front else pts.iloc[:0]


def _suites(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["suite"]))


def short_labels(summary: pd.DataFrame) -> pd.Series:
    """Per cell, the decoder plus only the parameters that vary between cells of that decoder in this
    run (`sdlm-conf τ=0.9`), so labels stay short enough to print next to a point."""
    params = summary["decoder_params"].map(json.loads)
    names = {"threshold": "τ", "block_size": "D"}
    labels = []
    for i, row in summary.iterrows():
        same = params[summary["decoder"] == row["decoder"]]
        varying = [k for k in params[i] if len({json.dumps(p.get(k)) for p in same}) > 1]
        text = " ".join(f"{names.get(k, k)}={params[i][k]}" for k in varying)
        labels.append(f"{row['decoder']} {text}".strip())
    return pd.Series(labels, index=summary.index)


def _colors(decoders: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {d: cmap(i % 10) for i, d in enumerate(dict.fromkeys(decoders))}


def _panels(n: int, rows: int = 1):
    fig, axes = plt.subplots(rows, n, figsize=(PANEL[0] * n, PANEL[1] * rows), squeeze=False)
    return fig, axes


# where a point's label may go, in points from the point, tried in this order (right, left, above,
# below, then further out) until one overlaps neither a label already placed nor a marker or error bar
LABEL_SPOTS = [(6, 3), (-6, 3), (6, -11), (-6, -11), (6, 13), (-6, 13), (6, -21), (-6, -21), (6, 23), (-6, 23),
               (6, -31), (-6, -31), (6, 33), (-6, 33)]
LABEL_FONT = 7


def place_labels(points: list[tuple[float, float, str]], panel_pt: tuple[float, float],
                 obstacles: list[tuple[float, float, float, float]] = ()) -> list[tuple[int, int]]:
    """An offset from LABEL_SPOTS per (x, y, text), x and y as fractions of the axes, so that labels do not
    overlap each other or the `obstacles` (boxes in points from the axes' lower left: markers, error bars).
    Boxes are sized from the font (a character ~0.65 em wide); points are placed left to right, each
    taking the first clear spot inside the panel, or the least-covered one when none is clear."""
    w_pt, h_pt = panel_pt
    boxes = list(obstacles)
    out = [LABEL_SPOTS[0]] * len(points)

    def box(i, spot):
        x, y, text = points[i]
        dx, dy = spot
        width, height = 0.65 * LABEL_FONT * len(text) + 2, LABEL_FONT * 1.2  # +2: a gap between neighbours
        left = x * w_pt + dx - (width if dx < 0 else 0)
        bottom = y * h_pt + dy
        return left, bottom, left + width, bottom + height

    def covered(b):
        outside = (b[0] < 0) or (b[1] < 0) or (b[2] > w_pt) or (b[3] > h_pt)  # cut off by the panel's edge
        return outside * w_pt * h_pt + sum(
            max(0.0, min(b[2], o[2]) - max(b[0], o[0])) * max(0.0, min(b[3], o[3]) - max(b[1], o[1])) for o in boxes)

    for i in sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1])):
        spot = next((sp for sp in LABEL_SPOTS if covered(box(i, sp)) == 0),
                    min(LABEL_SPOTS, key=lambda sp: covered(box(i, sp))))
        boxes.append(box(i, spot))
        out[i] = spot
    return out


def accuracy_vs_tpf(summary: pd.DataFrame):
    if summary.empty:
        return None
    s = summary.assign(label=short_labels(summary))
    colors = _colors(s["decoder"].tolist())
    suites = _suites(s)
    fig, axes = _panels(len(suites))
    ylim = (-0.02, 1.02)
    panels = []
    for ax, suite in zip(axes[0], suites):
        g = s[s["suite"] == suite]
        lo, hi = float(g["tpf"].min()), float(g["tpf"].max())
        pad = 0.1 * max(hi - lo, 1.0)
        xlim = (max(0.0, lo - pad), hi + 2 * pad)  # more room on the right, where labels go first
        ax.set(title=suite, xlabel="tokens per forward (TPF)", ylabel="accuracy (95% CI)", ylim=ylim, xlim=xlim)
        for _, r in g.iterrows():
            err = [[max(0.0, r["accuracy"] - r["acc_ci_low"])], [max(0.0, r["acc_ci_high"] - r["accuracy"])]]
            ax.errorbar(r["tpf"], r["accuracy"], yerr=err, fmt="o", color=colors[r["decoder"]], capsize=3,
                        label=r["decoder"])
        front = pareto_front(g, "tpf", "accuracy")
        ax.plot(front["tpf"], front["accuracy"], "--", color="0.4", lw=1, label="Pareto front")
        panels.append((ax, g, xlim))
    handles = {}
    for ax in axes[0]:
        for h, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, h)  # one entry per decoder over all panels (colours are shared)
    # below the panels, so no point sits under it
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=7,
               frameon=False)
    fig.suptitle("accuracy against tokens per forward (labels: the parameter that varies)", fontsize=10)
    rows_of_legend = -(-len(handles) // 6)
    fig.tight_layout(rect=(0, 0.04 + 0.05 * rows_of_legend, 1, 1))
    for ax, g, xlim in panels:  # labels last: placing them needs the panel's final size
        _label_points(ax, g, xlim, ylim, colors)
    return fig


def _label_points(ax, g: pd.DataFrame, xlim, ylim, colors) -> None:
    size = ax.get_window_extent().transformed(ax.figure.dpi_scale_trans.inverted())
    w_pt, h_pt = size.width * 72, size.height * 72

    def frac(x, y):
        return (x - xlim[0]) / (xlim[1] - xlim[0]), (y - ylim[0]) / (ylim[1] - ylim[0])

    texts, where, obstacles = [], [], []
    for _, r in g.iterrows():
        text = r["label"].removeprefix(r["decoder"]).strip() or r["decoder"]
        x, y = frac(r["tpf"], r["accuracy"])
        _, y_low = frac(r["tpf"], r["acc_ci_low"])
        _, y_high = frac(r["tpf"], r["acc_ci_high"])
        texts.append(text)
        where.append((x, y, text))
        obstacles += [(x * w_pt - 4, y * h_pt - 4, x * w_pt + 4, y * h_pt + 4),  # the marker
                      (x * w_pt - 3.5, y_low * h_pt, x * w_pt + 3.5, y_high * h_pt)]  # its error bar and caps
    for (_, r), text, (dx, dy) in zip(g.iterrows(), texts, place_labels(where, (w_pt, h_pt), obstacles)):
        far = abs(dy) > 13  # beyond the first ring a label needs a line to say whose it is
        ax.annotate(text, (r["tpf"], r["accuracy"]), textcoords="offset points", xytext=(dx, dy),
                    ha="right" if dx < 0 else "left", fontsize=LABEL_FONT, color=colors[r["decoder"]],
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": colors[r["decoder"]], "shrinkB": 4}
                    if far else None)


def speedup_bars(summary: pd.DataFrame):
    s = summary.dropna(subset=["speedup"]) if not summary.empty else summary
    if s.empty:
        return None
    s = s.assign(label=short_labels(s))
    colors = _colors(s["decoder"].tolist())
    suites = _suites(s)
    fig, axes = plt.subplots(1, len(suites), figsize=(PANEL[0] * len(suites), 0.35 * s.groupby("suite").size().max() + 1.8),
                             squeeze=False)
    for ax, suite in zip(axes[0], suites):
        g = s[s["suite"] == suite].reset_index(drop=True)
        y = np.arange(len(g))
        lo = (g["speedup"] - g["speedup_low"]).clip(lower=0).fillna(0)
        hi = (g["speedup_high"] - g["speedup"]).clip(lower=0).fillna(0)
        ax.barh(y, g["speedup"], xerr=[lo, hi], color=[colors[d] for d in g["decoder"]], capsize=3,
                hatch=["//" if u else "" for u in g["unstable"]], edgecolor="0.3")
        ax.set_yticks(y, [f"{l} ⚠" if u else l for l, u in zip(g["label"], g["unstable"])], fontsize=7)
        ax.axvline(1.0, color="0.3", lw=1, ls="--")
        ax.invert_yaxis()
        ax.set(title=suite, xlabel="speedup over AR (× tokens/s, paired 95% CI)", ylabel="cell")
    fig.suptitle("wall-clock speedup over the AR cell (hatched ⚠: unstable timing, see report.md)", fontsize=10)
    fig.tight_layout()
    return fig


def _with_params(summary: pd.DataFrame) -> pd.DataFrame:
    params = summary["decoder_params"].map(json.loads)
    out = summary.copy()
    out["threshold"] = params.map(lambda p: p.get("threshold"))
    out["block_size"] = params.map(lambda p: p.get("block_size"))
    return out


def tau_ablation(summary: pd.DataFrame):
    """TPF and accuracy against the confidence threshold τ, one line per decoder, block size and batch."""
    if summary.empty:
        return None
    s = _with_params(summary).dropna(subset=["threshold"])
    s = s.groupby(["suite", "decoder", "block_size", "batch_size"]).filter(lambda g: g["threshold"].nunique() >= 2)
    if s.empty:
        return None
    colors = _colors(s["decoder"].tolist())
    suites = _suites(s)
    fig, axes = _panels(len(suites), rows=2)
    for col, suite in enumerate(suites):
        top, bottom = axes[0][col], axes[1][col]
        for (dec, d, bs), g in s[s["suite"] == suite].groupby(["decoder", "block_size", "batch_size"], sort=False):
            g = g.sort_values("threshold")
            label = f"{dec} D={int(d)}" + (f" bs={bs}" if s["batch_size"].nunique() > 1 else "")
            top.plot(g["threshold"], g["tpf"], "o-", color=colors[dec], label=label)
            err = [(g["accuracy"] - g["acc_ci_low"]).clip(lower=0), (g["acc_ci_high"] - g["accuracy"]).clip(lower=0)]
            bottom.errorbar(g["threshold"], g["accuracy"], yerr=err, fmt="o-", color=colors[dec], capsize=3, label=label)
        top.set(title=suite, ylabel="tokens per forward", xlabel="threshold τ")
        bottom.set(ylabel="accuracy (95% CI)", xlabel="threshold τ", ylim=(-0.02, 1.02))  # 0..1: no zoomed V
        top.legend(fontsize=7)
    fig.suptitle("what the threshold τ buys (TPF, top) and costs (accuracy, bottom)", fontsize=10)
    fig.tight_layout()
    return fig


def accepted_hist(samples: pd.DataFrame):
    """How many tokens each forward committed (prefill included): one panel per decoder family,
    one bar group per configuration (few per panel)."""
    if samples.empty:
        return None
    acc = samples[["cell_name", "decoder", "accepted"]].explode("accepted").dropna(subset=["accepted"])
    if acc.empty:
        return None
    acc["accepted"] = acc["accepted"].astype(int)
    families = list(dict.fromkeys(acc["decoder"]))
    fig, axes = _panels(len(families))
    for ax, dec in zip(axes[0], families):
        g = acc[acc["decoder"] == dec]
        cells = list(dict.fromkeys(g["cell_name"]))
        width = 0.8 / len(cells)
        for k, cell in enumerate(cells):
            counts = g[g["cell_name"] == cell]["accepted"].value_counts(normalize=True).sort_index()
            ax.bar(counts.index + (k - (len(cells) - 1) / 2) * width, counts.values, width=width, label=cell)
        ax.set(title=dec, xlabel="tokens committed by one forward", ylabel="fraction of forwards")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(cells) > 1:
            ax.legend(fontsize=6, loc="upper right")
    fig.suptitle("tokens committed per forward", fontsize=10)
    fig.tight_layout()
    return fig


def latency_cdf(samples: pd.DataFrame):
    """End-to-end latency per request: one panel per suite, one line per cell, each line labelled at
    its median instead of a legend over the curves."""
    if samples.empty or samples["e2e_s"].dropna().empty:
        return None
    colors = _colors(samples["decoder"].tolist())
    suites = _suites(samples)
    fig, axes = _panels(len(suites))
    for ax, suite in zip(axes[0], suites):
        g = samples[samples["suite"] == suite]
        for cell, c in g.groupby("cell_name", sort=False):
            x = np.sort(c["e2e_s"].dropna().to_numpy())
            if not len(x):
                continue
            y = np.arange(1, len(x) + 1) / len(x)
            ax.step(x, y, where="post", color=colors[c["decoder"].iloc[0]], lw=1.2)
            mid = len(x) // 2
            ax.annotate(cell, (x[mid], y[mid]), fontsize=6, color=colors[c["decoder"].iloc[0]],
                        textcoords="offset points", xytext=(4, -2))
        ax.set(title=suite, xlabel="end-to-end latency per sample (s)", ylabel="fraction of samples (CDF)")
    fig.suptitle("latency per request (colour: decoder family)", fontsize=10)
    fig.tight_layout()
    return fig


def build_figures(run_dir: Path) -> dict[str, object]:
    summary = summarize(run_dir)
    samples = store.read_samples(run_dir, columns=["cell_name", "decoder", "suite", "accepted", "e2e_s"])
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
