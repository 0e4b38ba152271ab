"""The shipped toy checkpoint on a fixed 30-problem subset of each synthetic suite: accuracy and
tokens-per-forward floors (measured values minus a margin, see toy/TRAINING.md),
so that a regression in a decoder, a suite or the loader shows up in CI."""

from __future__ import annotations

import pytest

import decoders
import suites
from harness.models import TOY_CHECKPOINT, load_model
from toy.evaluate import decode_and_grade

N = 30
NEW = 96
# (suite, decoder, params) -> (min accuracy, min tokens per forward)
FLOORS = {  # measured on this subset: arith acc 0.10 (3/30), toy-code 1.00 (30/30) for every decoder
    ("arith", "ar", ()): (0.06, 1.0),
    ("toy-code", "ar", ()): (0.9, 1.0),
    ("arith", "sdlm-conf", (("threshold", 0.9),)): (0.06, 2.55),  # TPF 2.78
    ("toy-code", "sdlm-conf", (("threshold", 0.9),)): (0.9, 3.0),  # 3.25
    ("arith", "sdlm-ssd", ()): (0.06, 3.15),  # 3.38
    ("toy-code", "sdlm-ssd", ()): (0.9, 3.1),  # 3.35
    ("arith", "block-diffusion", (("threshold", 0.9),)): (0.06, 2.45),  # 2.67
    ("toy-code", "block-diffusion", (("threshold", 0.9),)): (0.9, 2.9),  # 3.11
}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (TOY_CHECKPOINT / "config.json").exists(), reason="no shipped checkpoint")]


@pytest.fixture(scope="module")
def toy():
    return load_model("pdbench-toy", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def subsets(toy):
    out = {}
    for name in ("arith", "toy-code"):
        suite = suites.get(name, limit=N, allow_code_exec=True)
        samples = list(suite.samples())
        out[name] = (suite, samples, [suite.render(s, toy.tokenizer) for s in samples])
    return out


@pytest.mark.parametrize("key", list(FLOORS), ids=[f"{s}-{d}-{dict(p)}" for s, d, p in FLOORS])
def test_floors(toy, subsets, key):
    suite_name, name, params = key
    min_acc, min_tpf = FLOORS[key]
    results, accuracy, tpf = decode_and_grade(toy, *subsets[suite_name], decoders.get(name, **dict(params)), NEW)
    for r in results:
        r.check_bookkeeping()
    assert accuracy >= min_acc, f"{name} on {suite_name}: accuracy {accuracy:.3f} < floor {min_acc}"
    assert tpf >= min_tpf, f"{name} on {suite_name}: tokens per forward {tpf:.2f} < floor {min_tpf}"


@pytest.mark.parametrize("suite_name", ["arith", "toy-code"])
def test_ssd_is_lossless_on_the_trained_model(toy, subsets, suite_name):
    """On a model trained for next-sequence prediction drafts are accepted (TPF well above 1), and the
    output still equals first-token-only decoding."""
    prompts = subsets[suite_name][2]
    ssd = decoders.get("sdlm-ssd").generate(toy, prompts, NEW)
    first = decoders.get("sdlm-conf", threshold=1.0).generate(toy, prompts, NEW)
    assert [r.tokens for r in ssd] == [r.tokens for r in first]
