"""Answer extraction, math-verify under a process timeout, and code extraction."""

from __future__ import annotations

from fractions import Fraction

import pytest

from suites.answers import extract_number, format_number, last_boxed, parse_number
from suites.codegrade import fenced_blocks, pick_block
from suites.mathgrade import MathVerifier, normalize_boxed


@pytest.mark.parametrize("text, value, extractor", [
    ("so the total is \\boxed{\\$1,000}.", Fraction(1000), "boxed"),
    ("<<3*4=12>> 12 apples\n#### 72", Fraction(72), "hash"),
    ("#### 5\nlater: #### 7", Fraction(7), "hash"),  # the last one (models recite examples first)
    ("She pays $18.00 in total.", Fraction(18), "last_number"),
    ("x = -3", Fraction(-3), "last_number"),
    ("\\boxed{\\frac{1}{2}}", Fraction(1, 2), "boxed"),
    ("\\boxed{18 \\text{ dollars}}", Fraction(18), "boxed"),
    ("\\boxed{1{,}234}", Fraction(1234), "boxed"),
    ("the answer is 3/4", Fraction(3, 4), "last_number"),
    ("\\boxed{no idea} but 42", Fraction(42), "last_number"),  # a boxed non-number falls through
    ("no digits at all", None, None),
])
def test_extract_number(text, value, extractor):
    assert extract_number(text) == (value, extractor)


def test_last_boxed_balances_braces_and_takes_the_last():
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{a}{b}} end") == "\\frac{a}{b}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("nothing") is None


def test_number_helpers():
    assert parse_number("1,234,567") == 1234567
    assert format_number(Fraction(5, 2)) == "2.5" and format_number(Fraction(1, 3)) == "1/3"
    assert format_number(Fraction(-4)) == "-4"


def test_normalize_boxed():
    assert normalize_boxed("\\left( 3, \\dfrac{\\pi}{2} \\right)") == normalize_boxed("(3,\\frac{\\pi}{2})")
    assert normalize_boxed("x+1") != normalize_boxed("x-1")


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(workers=1, timeout_s=30.0)
    yield v
    v.close()


def test_math_verify_equivalence(verifier):
    assert verifier.check("\\frac{1}{2}", "so it is \\boxed{0.5}").equal
    assert verifier.check("\\dfrac{9}{7}", "Thus $\\boxed{\\frac{9}{7}}$.").equal  # bare gold re-boxed
    assert verifier.check("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}").equal
    wrong = verifier.check("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}")
    assert (wrong.equal, wrong.status) == (False, "ok")
    none = verifier.check("5", "I cannot solve this.")
    assert (none.equal, none.status) == (False, "no_answer")


def test_math_verify_timeout_kills_and_replaces_the_worker(verifier):
    verifier.check("1", "\\boxed{1}")  # warm
    verifier.timeout_s = 1e-6  # no answer can come back this fast: the worker is killed
    try:
        slow = verifier.check("x^2 + 2x + 1", "\\boxed{(x+1)^2}")
    finally:
        verifier.timeout_s = 30.0
    assert (slow.equal, slow.status) == (False, "timeout")
    assert verifier.check("x^2 + 2x + 1", "\\boxed{(x+1)^2}").equal  # a fresh worker answers


def test_math_verify_from_threads(verifier):
    pairs = [("2", "\\boxed{2}"), ("3", "\\boxed{4}"), ("\\sqrt{2}", "\\boxed{2^{1/2}}")]
    assert [c.equal for c in verifier.check_many(pairs)] == [True, False, True]


def test_fenced_blocks_and_pick_block():
    text = "Sig:\n```python\ndef f(x): ...\n```\nAnswer:\n```python\ndef g():\n    pass\ndef f(x):\n    return 1\n```\n"
    blocks = fenced_blocks(text)
    assert len(blocks) == 2
    assert "return 1" in pick_block(blocks, "f")
    assert pick_block(blocks, "h") == blocks[0]
    assert fenced_blocks("```\nprint(1)\n") == ["print(1)\n"]  # unclosed fence: cut at max tokens
    assert fenced_blocks("plain text") == [] and pick_block([], "f") is None
