"""plots: each figure shows what it claims (intervals, direct labels, fixed accuracy axes, short
legends) and every figure is written as PNG and SVG."""


import matplotlib.pyplot as plt
from matplotlib.text import Text
import pytest

from harness import plots, store
from tests.test_report import build_run, cell_rows


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def add_tau_sweep(tmp_path):
    for t, (n_tok, n_fwd) in {0.5: (12, 4), 0.7: (12, 6), 1.0: (12, 12)}.items():
        store.append_samples(tmp_path, cell_rows(f"h_t{t}", f"conf-t{t}", "sdlm-conf",
                                                 {"block_size": 4, "threshold": t}, [0.3] * 4,
                                                 [True, True, False, True] * 2, n_tok, n_fwd))


def test_figures_are_written(tmp_path):
    build_run(tmp_path)
    add_tau_sweep(tmp_path)
    figs = plots.build_figures(tmp_path)
    assert set(figs) == {"accuracy_vs_tpf", "speedup", "tau_ablation", "accepted_lengths", "latency_cdf", "aup_curves"}
    written = plots.write_plots(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.{e}" for n in figs for e in ("png", "svg"))
    assert all(p.stat().st_size > 5000 for p in written)


def test_tau_ablation_shows_accuracy_on_its_whole_scale_with_intervals(tmp_path):
    build_run(tmp_path)
    add_tau_sweep(tmp_path)
    fig = plots.build_figures(tmp_path)["tau_ablation"]
    tpf_ax, acc_ax = fig.axes[0], fig.axes[1]
    assert acc_ax.get_ylim() == (-0.02, 1.02)  # a 1-problem difference is not zoomed into a V
    assert acc_ax.containers, "accuracy points carry error bars"
    (line,) = tpf_ax.get_lines()
    assert list(line.get_xdata()) == [0.5, 0.7, 0.9, 1.0] and list(line.get_ydata()) == [3.0, 2.0, 2.5, 1.0]


def test_accuracy_vs_tpf_labels_each_point_with_what_varies(tmp_path):
    build_run(tmp_path)
    add_tau_sweep(tmp_path)
    ax = plots.build_figures(tmp_path)["accuracy_vs_tpf"].axes[0]
    labels = {t.get_text() for t in ax.texts}
    assert {"τ=0.5", "τ=0.7", "τ=0.9", "τ=1.0", "ar"} <= labels
    (legend,) = ax.figure.legends
    assert len(legend.get_texts()) <= 3  # one entry per decoder and the front


def test_accuracy_vs_tpf_labels_do_not_overlap_and_the_legend_covers_no_point(tmp_path):
    """Cells of the same accuracy and near-equal TPF (a τ sweep where accuracy does not move) crowd one
    spot: as drawn, no two labels overlap and the legend lies outside every panel."""
    build_run(tmp_path)
    for t, n_fwd in {0.6: 5, 0.65: 5, 0.75: 6, 0.8: 6, 0.85: 6}.items():
        store.append_samples(tmp_path, cell_rows(f"h_c{t}", f"conf-c{t}", "sdlm-conf",
                                                 {"block_size": 4, "threshold": t}, [0.3] * 4,
                                                 [True, True, False, False] * 2, 12, n_fwd))
    fig = plots.build_figures(tmp_path)["accuracy_vs_tpf"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in fig.axes[0].texts]  # the text, without a leader line
    assert len(boxes) == 7
    overlapping = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert not overlapping
    (legend,) = fig.legends
    assert not legend.get_window_extent(renderer).overlaps(fig.axes[0].get_window_extent(renderer))


def test_label_spots_avoid_each_other():
    spots = plots.place_labels([(0.5, 0.5, "τ=0.5"), (0.5, 0.5, "τ=0.7"), (0.51, 0.5, "τ=0.9")], (360, 288))
    assert len(set(spots)) == 3


def test_speedup_bars_carry_the_paired_interval_and_mark_unstable_cells(tmp_path):
    build_run(tmp_path, conf_walls=(0.5, 0.5, 0.5, 3.0))
    ax = plots.build_figures(tmp_path)["speedup"].axes[0]
    assert any(t.get_text().endswith("⚠") for t in ax.get_yticklabels())
    assert ax.containers and ax.get_xlabel().startswith("speedup over AR")


def test_crowded_plots_split_by_family_instead_of_long_legends(tmp_path):
    build_run(tmp_path)
    add_tau_sweep(tmp_path)
    figs = plots.build_figures(tmp_path)
    assert [ax.get_title() for ax in figs["accepted_lengths"].axes] == ["ar", "sdlm-conf"]
    assert all(ax.get_legend() is None for ax in figs["latency_cdf"].axes)  # lines are labelled in place


def test_pareto_front():
    import pandas as pd

    pts = pd.DataFrame({"x": [1, 2, 3, 2.5], "y": [0.9, 0.8, 0.5, 0.4]})
    assert plots.pareto_front(pts, "x", "y")["x"].tolist() == [1, 2, 3]


def test_no_tau_sweep_no_tau_plot(tmp_path):
    build_run(tmp_path)  # one threshold only
    assert "tau_ablation" not in plots.build_figures(tmp_path)
