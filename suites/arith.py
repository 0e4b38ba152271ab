"""`arith`: seeded multi-step arithmetic word problems (suites/synthetic.py), graded numerically.

The gold solution is a few short equations ending in `\\boxed{n}`; the grader takes the last
`\\boxed{...}` (else the last integer in the completion) and compares it as a number.
"""

from __future__ import annotations

import re

from suites import register
from suites.synthetic_suite import SyntheticSuite
from suites.base import Grade, Sample

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
INTEGER = re.compile(r"-?\d[\d,]*")


def extract_answer(completion: str) -> tuple[str | None, str]:
    """(answer text, which extractor fired)."""
    boxed = BOXED.findall(completion)
    if boxed:
        return boxed[-1].strip(), "boxed"
    numbers = INTEGER.findall(completion)
    if numbers:
        return numbers[-1], "last_number"
    return None, "none"


@register("arith")
class Arith(SyntheticSuite):
    version = "1"
    kind = "arith"
    needs_code_exec = False

    def grade(self, sample: Sample, completion: str) -> Grade:
        text, how = extract_answer(completion)
        if text is None:
            return Grade(False, None, "no_answer", "no \\boxed{} and no number")
        try:
            value = int(text.replace(",", "").replace(" ", ""))
        except ValueError:
            return Grade(False, text, "no_answer", f"{how}: not an integer")
        return Grade(value == int(sample.reference), text, "ok", how)
