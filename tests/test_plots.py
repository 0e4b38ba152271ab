"""plots: every figure is built from data (non-empty axes) and written as PNG and SVG."""

import json

from harness import plots, store
from tests.test_report import build_run
from tests.test_store import make_row


def add_tau_sweep(tmp_path):
    rows = []
    for t, tpf in ((0.5, 3.0), (0.9, 2.0), (1.0, 1.0)):
        for i in range(3):
            rows.append(make_row(f"h_t{t}", f"s{i}", cell_name=f"conf-t{t}", decoder="sdlm-conf", suite="arith",
                                 decoder_params=json.dumps({"block_size": 4, "threshold": t}), model="m",
                                 dtype="float32", device="cpu", batch_size=2, max_new_tokens=16,
                                 batch_id=f"t{t}", batch_wall_s=0.3, n_tokens=6, n_forward=int(6 / tpf), tpf=tpf,
                                 correct=i < 2, ttft_s=0.05, e2e_s=0.1 * (i + 1), finish="eos",
                                 accepted=[int(tpf)] * int(6 / tpf), step_s=[0.1] * int(6 / tpf)))
    store.append_samples(tmp_path, rows)


def test_figures_have_data_and_files_are_written(tmp_path):
    build_run(tmp_path)
    add_tau_sweep(tmp_path)
    figs = plots.build_figures(tmp_path)
    assert set(figs) == {"accuracy_vs_tpf", "speedup", "tau_ablation", "accepted_lengths", "latency_cdf", "aup_curves"}
    for name, fig in figs.items():
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>":
                continue
            assert ax.has_data(), name
            assert ax.get_xlabel() and ax.get_ylabel(), name
    written = plots.write_plots(tmp_path)
    assert len(written) == 12
    for path in written:
        assert path.stat().st_size > 5000, path


def test_pareto_front():
    import pandas as pd

    pts = pd.DataFrame({"x": [1, 2, 3, 2.5], "y": [0.9, 0.8, 0.5, 0.4]})
    assert plots.pareto_front(pts, "x", "y")["x"].tolist() == [1, 2, 3]


def test_no_tau_sweep_no_tau_plot(tmp_path):
    build_run(tmp_path)  # one threshold only
    assert "tau_ablation" not in plots.build_figures(tmp_path)
