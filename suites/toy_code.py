"""`toy-code`: seeded one-line function-writing tasks (suites/synthetic.py), graded by running
generated asserts on the model's code in the sandbox (opt-in: allow_code_exec=True)."""

from __future__ import annotations

import re

from suites import register
from suites.synthetic_suite import SyntheticSuite
from suites.base import Grade, Sample
from suites.sandbox import run_program

FENCE = re.compile(r"```(?:python|py)?[^\n]*\n(.*?)(?:```|$)", re.DOTALL)
TIMEOUT_S = 5.0


def extract_code(completion: str) -> str:
    """The first fenced block (an unclosed fence runs to the end), else the whole completion."""
    match = FENCE.search(completion)
    return match.group(1) if match else completion


@register("toy-code")
class ToyCode(SyntheticSuite):
    version = "1"
    kind = "code"
    needs_code_exec = True

    def program(self, sample: Sample, completion: str) -> str:
        return extract_code(completion).rstrip() + "\n\n" + "\n".join(sample.reference) + "\n"

    def grade(self, sample: Sample, completion: str) -> Grade:
        if not self.allow_code_exec:
            raise PermissionError("toy-code runs model-written code: construct it with allow_code_exec=True")
        code = extract_code(completion)
        result = run_program(self.program(sample, completion), timeout_s=TIMEOUT_S)
        return Grade(result.passed, code, result.status, result.detail)
