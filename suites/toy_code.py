"""`toy-code`: seeded one-line function-writing tasks (suites/synthetic.py), graded by running the
generated asserts on the model's code in the sandbox (opt-in: allow_code_exec=True).

Extraction: the last fenced block that defines the requested function (else the first block), else
the raw completion.
"""

from __future__ import annotations

from suites import register
from suites.base import Sample
from suites.codegrade import CodeSuite, fenced_blocks, pick_block
from suites.synthetic_suite import SyntheticSuite


@register("toy-code")
class ToyCode(CodeSuite, SyntheticSuite):
    version = "1"
    kind = "code"
    needs_code_exec = True

    def __init__(self, *args, timeout_s: float = 10.0, **kwargs):
        super().__init__(*args, timeout_s=timeout_s, **kwargs)

    def program(self, sample: Sample, completion: str) -> tuple[str, str, str]:
        block = pick_block(fenced_blocks(completion), sample.meta["entry_point"])
        code, how = (block, "fenced") if block is not None else (completion, "raw")
        return code, f"{code.rstrip()}\n\n" + "\n".join(sample.reference) + "\n", how
