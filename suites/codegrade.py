"""Shared by the code suites: pulling a program out of a completion, and grading it in the sandbox.

A code suite subclasses `CodeSuite` and implements `program(sample, completion) -> (source, how)`;
grading runs that source (solution + tests) with suites/sandbox.py. Statuses: pass | fail |
timeout | error. `Grade.extracted` is the extracted solution code (without the tests).

The code-exec gate: a code suite can be built, listed and rendered without allow_code_exec, but
`check_ready()` (which the runner calls before any generation), `grade` and `grade_many` raise
CodeExecNotAllowed unless allow_code_exec=True (--allow-code-exec).
"""

from __future__ import annotations

import re

from suites.base import Grade, Sample, Suite
from suites.sandbox import ExecResult, run_many, run_program

_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def fenced_blocks(text: str) -> list[str]:
    """Contents of ``` fenced blocks, python-ish ones first kept in order; an unclosed final fence
    (generation cut at max tokens) still counts."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]
    code = [body for lang, body in blocks if lang in ("", "python", "py", "python3")]
    return code or [body for _, body in blocks]


def pick_block(blocks: list[str], name: str | None) -> str | None:
    """The last block that defines `name` (models often restate the signature, then answer), else
    the first block."""
    if not blocks:
        return None
    if name:
        defining = [b for b in blocks if re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", b, re.M)]
        if defining:
            return defining[-1]
    return blocks[0]


def defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", code, re.M) is not None


class CodeSuite(Suite):
    needs_code_exec = True

    def __init__(self, *args, timeout_s: float = 20.0, memory_mb: int = 1024, **kwargs):
        super().__init__(*args, **kwargs)
        # Per program, all its tests included. Generous: MBPP 123's reference takes ~4 s of CPU,
        # and on shared cores wall time is a multiple of that (EvalPlus #5).
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb

    def program(self, sample: Sample, completion: str) -> tuple[str, str, str]:
        """(solution code, full program = solution + tests, how it was extracted)."""
        raise NotImplementedError

    def _to_grade(self, code: str, how: str, result: ExecResult) -> Grade:
        extra = {"exec_s": round(result.wall_s, 4), "isolation": result.isolation, "code_source": how}
        return Grade(result.status == "pass", code, result.status, result.detail, extra)

    def grade(self, sample: Sample, completion: str) -> Grade:
        self.check_ready()
        code, source, how = self.program(sample, completion)
        return self._to_grade(code, how, run_program(source, timeout_s=self.timeout_s, memory_mb=self.memory_mb))

    def grade_many(self, pairs: list[tuple[Sample, str]], workers: int | None = None) -> list[Grade]:
        """All programs on a pool sized to the cores (or `workers`), results in input order."""
        self.check_ready()
        built = [self.program(sample, completion) for sample, completion in pairs]
        results = run_many([source for _, source, _ in built], timeout_s=self.timeout_s, workers=workers,
                           memory_mb=self.memory_mb)
        return [self._to_grade(code, how, result) for (code, _, how), result in zip(built, results)]
