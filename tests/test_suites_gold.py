"""Full-data gold self-checks (slow): every reference solution graded correct, except the misses
listed with their reason in tests/fixtures/gold_exceptions.json, and the same golds corrupted
(answer +/- 1, `return None`, a wrong operator) graded wrong, again up to listed exceptions."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

import suites
from suites.sandbox import available_cores

EXCEPTIONS = json.loads((Path(__file__).parent / "fixtures" / "gold_exceptions.json").read_text())
# (from, to): the first kind present in a solution is flipped everywhere in it
OPERATOR_SWAPS = [("==", "!="), ("!=", "=="), ("<=", ">"), (">=", "<"), (" < ", " >= "), (" > ", " <= "),
                  (" + ", " - "), (" - ", " + "), (" * ", " + "), (" % ", " // "), (" and ", " or "), (" or ", " and ")]


def return_none(code: str) -> str:
    return re.sub(r"\breturn\b[^\n]*", "return None", code)


def wrong_operator(code: str) -> str:
    for old, new in OPERATOR_SWAPS:
        if old in code:
            return code.replace(old, new)
    return return_none(code)


@pytest.fixture(autouse=True)
def data_env(data_dir):
    """The full data sets ($PDBENCH_DATA; skipped without), never the hub."""
    return data_dir


def graded_correct(samples, grades) -> set[str]:
    """A corrupted program that fails, times out or errors is graded wrong; these were not."""
    return {s.id for s, g in zip(samples, grades) if g.correct}


def listed(key: str) -> set[str]:
    return set(EXCEPTIONS[key]["ids"])


@pytest.mark.slow
def test_humaneval_canonical_164_and_throughput(capsys):
    suite = suites.get("humaneval", allow_code_exec=True)
    samples = list(suite.samples())
    start = time.perf_counter()
    grades = suite.grade_many([(s, s.meta["canonical_solution"]) for s in samples])
    elapsed = time.perf_counter() - start
    failures = {s.id: f"{g.status}: {g.detail}" for s, g in zip(samples, grades) if not g.correct}
    assert failures == {} and len(samples) == 164
    with capsys.disabled():
        print(f"\nHumanEval canonical: 164/164 pass, {len(samples) / elapsed:.1f} programs/s on "
              f"{available_cores()} cores, sandbox layers {grades[0].extra['isolation']}")


@pytest.mark.slow
def test_humaneval_corrupted_fail():
    suite = suites.get("humaneval", allow_code_exec=True)
    samples = list(suite.samples())
    nones = suite.grade_many([(s, "    return None\n") for s in samples])
    assert graded_correct(samples, nones) == listed("humaneval_return_none_correct")
    swapped = suite.grade_many([(s, wrong_operator(s.meta["canonical_solution"])) for s in samples])
    assert graded_correct(samples, swapped) == listed("humaneval_wrong_operator_correct")


@pytest.mark.slow
def test_mbpp_reference_code_and_corruptions():
    suite = suites.get("mbpp", allow_code_exec=True)
    samples = list(suite.samples())
    gold = suite.grade_many([(s, s.meta["code"]) for s in samples])
    misses = {s.id for s, g in zip(samples, gold) if not g.correct}
    assert len(samples) == 500 and misses == listed("mbpp_gold_failures")
    nones = suite.grade_many([(s, return_none(s.meta["code"])) for s in samples])
    assert graded_correct(samples, nones) == listed("mbpp_return_none_correct")
    swapped = suite.grade_many([(s, wrong_operator(s.meta["code"])) for s in samples])
    assert graded_correct(samples, swapped) == listed("mbpp_wrong_operator_correct")


@pytest.mark.slow
def test_math500_reference_solutions_and_corruptions():
    suite = suites.get("math500")
    try:
        samples = list(suite.samples())
        gold = suite.grade_many([(s, s.meta["solution"]) for s in samples])
        misses = {s.id for s, g in zip(samples, gold) if not g.correct}
        assert len(samples) == 500 and misses == listed("math500_gold_misses")
        assert {s.id for s, g in zip(samples, gold) if not g.extra["boxed_match"]} == listed("math500_boxed_mismatch")
        # integer answers +/- 1
        integers = [s for s in samples if re.fullmatch(r"-?\d+", s.reference)]
        for delta in (1, -1):
            bumped = suite.grade_many([(s, f"So $\\boxed{{{int(s.reference) + delta}}}$.") for s in integers])
            assert not any(g.correct for g in bumped)
        # every answer replaced by the next problem's (different) answer
        pairs = [(s, samples[(i + 1) % len(samples)].reference) for i, s in enumerate(samples)]
        pairs = [(s, other) for s, other in pairs if other.replace(" ", "") != s.reference.replace(" ", "")]
        swapped = suite.grade_many([(s, f"The answer is $\\boxed{{{other}}}$.") for s, other in pairs])
        wrongly_right = {s.id for (s, _), g in zip(pairs, swapped) if g.correct}
        assert wrongly_right == listed("math500_swapped_still_equal")
        assert len(integers) > 250
    finally:
        suite.close()
