"""Answer extraction, math-verify under a process timeout, and code extraction."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from suites._mathworker import normalize_for_verify
from suites.answers import extract_number, format_number, last_boxed, parse_number
from suites.codegrade import fenced_blocks, pick_block
from suites.mathgrade import MathVerifier, normalize_boxed

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, value, extractor", [
    ("so the total is \\boxed{\\$1,000}.", Fraction(1000), "boxed"),
    ("<<3*4=12>> 12 apples\n#### 72", Fraction(72), "hash"),
    ("#### 5\nlater: #### 7", Fraction(7), "hash"),  # the last one (models recite examples first)
    ("She pays $18.00 in total.", Fraction(18), "last_number"),
    ("x = -3", Fraction(-3), "last_number"),
    ("\\boxed{\\frac{1}{2}}", Fraction(1, 2), "boxed"),
    ("\\boxed{18 \\text{ dollars}}", Fraction(18), "boxed"),
    ("\\boxed{1{,}234}", Fraction(1234), "boxed"),
    ("the answer is 3/4", Fraction(3, 4), "phrase"),
    # the stated answer, not a number in a note after it or the working inside the statement
    ("The answer is 18.\n\nNote: each egg costs $2.", Fraction(18), "phrase"),
    ("**Final Answer:** 1200 (that is 1,000 + 200)", Fraction(1200), "phrase"),
    ("Therefore, the answer is: 3 + 4 = 7 apples.", Fraction(7), "phrase"),
    ("### Final Answer:\n$\\$36$ per week", Fraction(36), "phrase"),  # the label on its own line
    ("Let me find the answer: first 3 + 4 = 7. Then 7 + 5 = 12.", Fraction(12), "last_number"),  # a lead-in
    ("To answer this, we add 3 and 4 to get 7.", Fraction(7), "last_number"),
    ("\\boxed{no idea} but 42", Fraction(42), "last_number"),  # a boxed non-number falls through
    ("no digits at all", None, None),
    # Markdown headings are not the answer marker: only `#### <number>` is
    ("#### Step 1\nShe buys 3.\n\n#### Step 2\nSo she has 18 left.", Fraction(18), "last_number"),
    ("#### Step 2: add 3 and 4\n**Answer:** 9", Fraction(9), "phrase"),
    ("#### 1. Costs\n3 + 4 = 7\n#### 2. Total\nThe answer is 12.", Fraction(12), "phrase"),
    ("#### Step 1\n3 + 4 = 7\n#### 12", Fraction(12), "hash"),
    ("#### 18 (3 + 15)", Fraction(18), "hash"),  # the number the line opens with
    ("#### **18**", Fraction(18), "hash"),
    ("#### 3.5", Fraction(7, 2), "hash"),
    ("#### \u221212", Fraction(-12), "hash"),  # the typographic minus sign
    ("The temperature dropped to \u22125 degrees.", Fraction(-5), "last_number"),
    ("\\boxed{\u22123}", Fraction(-3), "boxed"),
    ("They are 10\u201312 years old, so 12 in all.", Fraction(12), "last_number"),  # an en dash is a range
    ("####\n72", Fraction(72), "hash"),
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


@pytest.mark.parametrize("text, normalised", [
    ("\\boxed{90°}", "\\boxed{90^{\\circ}}"),
    ("\\boxed{90^°}", "\\boxed{90^{\\circ}}"), ("\\boxed{90^{°}}", "\\boxed{90^{\\circ}}"),
    ("90\\degree and 45\\textdegree", "90^{\\circ} and 45^{\\circ}"),
    ("\\boxed{58\\,500}", "\\boxed{58500}"),
    ("1\\,000\\,000 and 1\\;000 and 1\\:000 and 1\\ 000 and 1~000", "1000000 and 1000 and 1000 and 1000 and 1000"),
    ("2\\thinspace 024", "2024"),
    ("58\u00a0500 58\u2009500 58\u202f500", "58500 58500 58500"),
    ("3.141\\,592", "3.141592"),
    # not digit groups: left alone
    ("x\\,dx", "x\\,dx"), ("3\\,\\text{cm}", "3\\,\\text{cm}"), ("12\\,34", "12\\,34"), ("1\\,2345", "1\\,2345"),
    ("1{,}5", "1{,}5"), ("(3, 500)", "(3, 500)"),
])
def test_normalize_for_verify(text, normalised):
    assert normalize_for_verify(text) == normalised


# (gold, completion): written the way chat models do; math-verify alone gets each of these wrong
READ_AS_PEOPLE_DO = [
    ("90^\\circ", "So the angle is $\\boxed{90°}$."),
    ("90", "So the angle is $\\boxed{90°}$."),
    ("30^\\circ", "\\boxed{30\\degree}"),
    ("58500", "The total is $\\boxed{58\\,500}$."),
    ("58,\\!500", "The total is $\\boxed{58\\;500}$."),
    ("1000000", "\\boxed{1\\,000\\,000}"),
    ("58500", "\\boxed{58\u202f500}"),
    ("58500", "\\boxed{58\u00a0500}"),
    ("58500", "\\boxed{58\u2009500}"),
    ("58500", "\\boxed{58\\ 500}"),
]


def test_math_verify_reads_degrees_and_spaced_digit_groups(verifier):
    checks = verifier.check_many(READ_AS_PEOPLE_DO)
    assert [c.equal for c in checks] == [True] * len(READ_AS_PEOPLE_DO), checks
    # and the same formats still tell a wrong answer from a right one
    wrong = [("90^\\circ", "\\boxed{91°}"), ("58500", "\\boxed{58\\,501}"), ("58500", "\\boxed{58\u202f600}"),
             ("1000000", "\\boxed{1\\,000\\,001}")]
    assert not any(c.equal for c in verifier.check_many(wrong))


def test_math_grade_from_a_script_without_a_main_guard(tmp_path):
    """The workers are not multiprocessing ones, so they never re-import the caller's script."""
    script = tmp_path / "grade.py"
    script.write_text("import suites\nfrom suites.base import Sample\n\n"
                      "suite = suites.get('math500')\n"
                      "sample = Sample(id='x', messages=[], reference='\\\\frac{1}{2}')\n"
                      "grade = suite.grade(sample, 'So it is $\\\\boxed{0.5}$.')\n"
                      "print('graded', grade.correct, grade.status)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["graded True ok"]


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
