"""The shipped toy checkpoint meets issue 5's floors with the real decoders (slow: about a minute or two)."""

from __future__ import annotations

import pytest

from harness.models import TOY_CHECKPOINT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (TOY_CHECKPOINT / "model.safetensors").exists(), reason="no shipped checkpoint"),
]

N = 100


@pytest.fixture(scope="module")
def scores():
    from harness.toy.evaluate import evaluate_decoders

    preset = [("ar", {}), ("sdlm-conf", {"threshold": 0.9}), ("sdlm-ssd", {}),
              ("block-diffusion", {"threshold": 0.9})]
    return evaluate_decoders("pdbench-toy", n=N, preset=preset)


def test_ar_accuracy(scores):
    assert scores["arith/ar"]["acc"] >= 0.90, scores
    assert scores["toy-code/ar"]["acc"] >= 0.80, scores
    assert scores["arith/ar"]["tpf"] == 1.0


@pytest.mark.parametrize("suite", ["arith", "toy-code"])
def test_sdlm_confidence_is_parallel_and_accurate(scores, suite):
    conf, ar = scores[f"{suite}/sdlm-conf@0.9"], scores[f"{suite}/ar"]
    assert conf["tpf"] >= 3.0, scores
    assert conf["acc"] >= ar["acc"] - 0.03, scores


@pytest.mark.parametrize("suite", ["arith", "toy-code"])
def test_ssd_and_block_diffusion_speedups(scores, suite):
    assert scores[f"{suite}/sdlm-ssd"]["tpf"] >= 2.5, scores
    assert scores[f"{suite}/block-diffusion@0.9"]["tpf"] >= 2.0, scores
