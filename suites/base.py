"""What every suite provides. Nothing here knows about decoders or the harness.

Constructor convention (what `suites.get(name, **options)` passes through):
    Suite(data_dir=None, limit=None, shuffle=False, seed=0, allow_code_exec=False)
`data_dir` may also come from $PDBENCH_DATA; see suites/data.py for the lookup order.

Runner protocol:
    suite.check_ready()                 before any generation; raises CodeExecNotAllowed for a
                                        code suite built without allow_code_exec=True
    suite.samples() -> Iterator[Sample]
    suite.render(sample, tokenizer) -> list[int]
    suite.grade(sample, completion) -> Grade
    suite.grade_many([(sample, completion), ...]) -> list[Grade]   (concurrent where it pays)
    suite.version, suite.prompt_hash    stored in every result row

`Grade.extra` holds grader outputs beyond the four core fields, all JSON-serialisable:
    gsm8k:     extractor ("boxed" | "hash" | "last_number" | None)
    math500:   boxed (last \\boxed{} content or None), boxed_match (bool: boxed string == answer
               after whitespace/\\left\\right/\\! normalisation), math_verify (bool)
    humaneval, mbpp: exec_s (program wall time), isolation (sandbox layers applied),
               code_source ("fenced" | "raw")
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass
class Sample:
    id: str  # stable within the suite (e.g. "HumanEval/12", "gsm8k/0042")
    messages: list[dict[str, str]]  # chat messages (role/content); rendered with or without a chat template
    reference: Any  # what the grader compares against (gold answer, tests, ...)
    meta: dict[str, Any] = field(default_factory=dict)  # anything the grader needs beside the reference


@dataclass
class Grade:
    correct: bool
    extracted: str | None  # the answer or program the grader pulled out of the completion
    status: str  # ok | no_answer | timeout | error   (code: pass | fail | timeout | error)
    detail: str = ""  # which extractor fired, the failing assert, the exception ...
    extra: dict[str, Any] = field(default_factory=dict)  # per-suite grader outputs, see module docstring


class CodeExecNotAllowed(PermissionError):
    """A suite that runs model-generated code was used without opting in."""


class Suite:
    """Base class: subclasses set `name`, `version`, `needs_code_exec`, and implement the methods."""

    name = "suite"
    version = "0"
    needs_code_exec = False  # True for suites that run generated code (opt-in: allow_code_exec)
    data_spec = None  # suites.data.DataSpec of a suite that reads a data set (None: generated, no data)

    def __init__(self, data_dir=None, limit: int | None = None, shuffle: bool = False, seed: int = 0,
                 allow_code_exec: bool = False):
        self.data_dir = data_dir
        self.limit = limit
        self.shuffle = shuffle
        self.seed = seed
        self.allow_code_exec = allow_code_exec

    def check_ready(self) -> None:
        """Raise before generation starts if grading could not run (the code-exec gate)."""
        if self.needs_code_exec and not self.allow_code_exec:
            raise CodeExecNotAllowed(
                f"suite {self.name!r} grades by running model-generated code, which is untrusted; it runs in "
                "a sandboxed subprocess (suites/sandbox.py), but only with explicit consent: pass "
                "--allow-code-exec (allow_code_exec=True)")
        if self.needs_code_exec:
            from suites.sandbox import isolation_gaps

            gaps = isolation_gaps()
            if gaps:  # the run goes on (containers often refuse namespaces), but not silently
                warnings.warn(f"suite {self.name!r}: the code sandbox runs without {', '.join(gaps)}: generated "
                              "programs see the host's files and network (suites/sandbox.py); run in a container "
                              "or VM, or set PDBENCH_SANDBOX=plain to say you know", stacklevel=2)

    def samples(self) -> Iterator[Sample]:
        raise NotImplementedError

    def render(self, sample: Sample, tokenizer) -> list[int]:
        raise NotImplementedError

    def grade(self, sample: Sample, completion: str) -> Grade:
        raise NotImplementedError

    def grade_many(self, pairs: list[tuple[Sample, str]]) -> list[Grade]:
        """Grade (sample, completion) pairs, results in input order. Serial here; suites with
        expensive graders (code execution, math-verify) override it with a pool."""
        return [self.grade(sample, completion) for sample, completion in pairs]

    def prompt_settings(self) -> dict[str, Any]:
        """Everything that shapes the prompt text; hashed into `prompt_hash`."""
        return {}

    @property
    def prompt_hash(self) -> str:
        blob = json.dumps({"suite": self.name, "version": self.version, **self.prompt_settings()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]
