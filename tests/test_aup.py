"""AUP on synthetic summaries whose answer is worked out by hand (harness/aup.py's definition)."""

import json
import math

import pandas as pd
import pytest

from harness import aup, report
from tests.test_report import build_run

W76 = math.exp(-3 * (1 - 76 / 80))  # weight of 76 % when the group's best is 80 %


def cell(decoder, tpf, acc, suite="arith", batch_size=4, model="m", **params):
    return {"model": model, "suite": suite, "batch_size": batch_size, "decoder": decoder,
            "decoder_params": json.dumps({"seed": 0, **params}), "tpf": tpf, "accuracy": acc,
            "cell_name": f"{decoder}-{params}"}


def test_single_point_is_tpf_times_accuracy():
    assert aup.aup([1.0], [50.0], y_max=50.0) == pytest.approx(50.0)
    assert aup.aup([2.5], [40.0], y_max=80.0) == pytest.approx(100.0)  # the first rectangle is not weighted


def test_trapezoids_weighted_below_the_best_accuracy():
    want = 1 * 80 + (2 - 1) * (80 + 80) / 2 + (3 - 2) * (80 + 76 * W76) / 2
    assert aup.aup([1, 2, 3], [80, 80, 76], y_max=80) == pytest.approx(want)
    assert aup.aup([3, 1, 2], [76, 80, 80], y_max=80) == pytest.approx(want)  # order of the points is irrelevant
    # a best accuracy elsewhere in the group lowers every weight, never the first rectangle
    lower = aup.aup([1, 2, 3], [80, 80, 76], y_max=90)
    assert 80 < lower < want - 20


def test_points_far_below_the_first_are_dropped():
    kept = aup.aup([1, 2], [80, 76], y_max=80)
    assert aup.aup([1, 2, 3], [80, 76, 74.9], y_max=80) == pytest.approx(kept)  # 74.9 < 80 - 5
    assert aup.aup([1, 2, 3], [80, 76, 75.0], y_max=80) > kept  # exactly 5 below still counts
    assert math.isnan(aup.aup([float("nan")], [50.0], y_max=50.0))


def test_families_split_by_non_knob_params_and_groups_share_y_max():
    s = pd.DataFrame([
        cell("ar", 1.0, 0.80),
        cell("sdlm-conf", 2.0, 0.80, block_size=4, threshold=0.9),
        cell("sdlm-conf", 3.0, 0.76, block_size=4, threshold=0.5),
        cell("sdlm-conf", 2.5, 0.60, block_size=8, threshold=0.9),
        cell("ar", 1.0, 0.50, suite="code"),
    ])
    assert aup.family_labels(s).tolist() == ["ar", "sdlm-conf[block_size=4]", "sdlm-conf[block_size=4]",
                                             "sdlm-conf[block_size=8]", "ar"]
    t = aup.aup_table(s).set_index(["suite", "family"])
    assert t.loc[("arith", "ar"), "aup"] == pytest.approx(80.0)
    assert t.loc[("arith", "sdlm-conf[block_size=4]"), "aup"] == pytest.approx(2 * 80 + (3 - 2) * (80 + 76 * W76) / 2)
    assert t.loc[("arith", "sdlm-conf[block_size=8]"), "aup"] == pytest.approx(2.5 * 60)
    assert t.loc[("arith", "sdlm-conf[block_size=4]"), "n_points"] == 2 and t.loc[("code", "ar"), "y_max"] == 50.0
    out = aup.add_aup(s)
    assert len(out) == len(s) and out["aup"].tolist()[1] == out["aup"].tolist()[2]
    assert out.loc[4, "aup"] == pytest.approx(50.0)  # another suite: its own group


def test_report_carries_aup_and_the_plot_draws_each_family(tmp_path):
    build_run(tmp_path)
    summary, md = report.write_report(tmp_path)
    s = summary.set_index("cell_name")
    assert s.loc["ar", "aup"] == pytest.approx(50.0)  # TPF 1, 50 % correct
    assert s.loc["conf", "aup"] == pytest.approx(2.5 * 50.0)
    assert "## AUP (accuracy under parallelism)" in md.read_text()
    assert "aup" in pd.read_parquet(tmp_path / "summary.parquet").columns
    fig = aup.aup_curves(summary)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any(label.startswith("ar bs2") for label in labels) and any(label.startswith("sdlm-conf bs2") for label in labels)
