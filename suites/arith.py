"""`arith`: seeded multi-step arithmetic word problems (suites/synthetic.py), graded numerically.

The gold solution is a few short equations ending in `\\boxed{n}`; the completion's answer is
\\boxed{} first, then `#### n`, then the last number (suites/answers.py), compared exactly.
"""

from __future__ import annotations

from suites import register
from suites.answers import extract_number, format_number
from suites.base import Grade, Sample
from suites.synthetic_suite import SyntheticSuite


@register("arith")
class Arith(SyntheticSuite):
    version = "3"  # 3: fixed-width sums, three-digit prompt numbers where they enter a sum
    kind = "arith"
    needs_code_exec = False

    def grade(self, sample: Sample, completion: str) -> Grade:
        value, extractor = extract_number(completion)
        if value is None:
            return Grade(False, None, "no_answer", "no number found", {"extractor": None})
        correct = value == int(sample.reference)
        return Grade(correct, format_number(value), "ok", f"extractor={extractor}", {"extractor": extractor})
