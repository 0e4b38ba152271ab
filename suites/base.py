"""What every suite provides. Nothing here knows about decoders or the harness."""

from __future__ import annotations

import hashlib
import json
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


class Suite:
    """Base class: subclasses set `name`, `version`, `needs_code_exec`, and implement the methods."""

    name = "suite"
    version = "0"
    needs_code_exec = False  # True for suites that run generated code (opt-in: allow_code_exec)

    def samples(self) -> Iterator[Sample]:
        raise NotImplementedError

    def render(self, sample: Sample, tokenizer) -> list[int]:
        raise NotImplementedError

    def grade(self, sample: Sample, completion: str) -> Grade:
        raise NotImplementedError

    def prompt_settings(self) -> dict[str, Any]:
        """Everything that shapes the prompt text; hashed into `prompt_hash`."""
        return {}

    @property
    def prompt_hash(self) -> str:
        blob = json.dumps({"suite": self.name, "version": self.version, **self.prompt_settings()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]
