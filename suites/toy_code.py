"""`toy-code`: seeded one-line function-writing tasks (suites/synthetic.py), graded by running the
generated asserts on the model's code in the sandbox (opt-in: allow_code_exec=True).

Extraction (suites/codegrade.py): the fenced blocks that make up the program, joined in order; else
the raw completion when it parses; else the code found between the prose.
"""

from __future__ import annotations

from suites import register
from suites.base import Sample
from suites.codegrade import CodeSuite, extract_code, parses
from suites.synthetic_suite import SyntheticSuite


@register("toy-code")
class ToyCode(CodeSuite, SyntheticSuite):
    version = "1"
    kind = "code"
    needs_code_exec = True

    def __init__(self, *args, timeout_s: float = 10.0, **kwargs):
        super().__init__(*args, timeout_s=timeout_s, **kwargs)

    def program(self, sample: Sample, completion: str) -> tuple[str, str, str]:
        code, how = extract_code(completion, sample.meta["entry_point"], completion, parses(completion))
        return code, f"{code.rstrip()}\n\n" + "\n".join(sample.reference) + "\n", how
