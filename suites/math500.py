"""MATH-500 (the PRM800K test subset of MATH), graded by math-verify equivalence.

Beside the verdict, `Grade.extra` carries the boxed-string exact-match column: `boxed` (the last
\\boxed{} content) and `boxed_match` (equal to the `answer` field after light normalisation).
`Grade.extracted` is the boxed string when there is one, else what math-verify extracted.
"""

from __future__ import annotations

from typing import Iterator

from suites import register
from suites.answers import last_boxed
from suites.base import Grade, Sample, Suite
from suites.data import DataSpec, load_records, subset
from suites.mathgrade import Check, MathVerifier, normalize_boxed
from suites.prompts import MATH_TEMPLATE, SYSTEM_PROMPT, chat_messages, plain_from_messages, render_ids

SPEC = DataSpec(("math500_test.jsonl", "math500.jsonl", "MATH-500.jsonl"),
                ("problem", "solution", "answer", "unique_id"), "HuggingFaceH4/MATH-500", None, "test")


@register("math500")
class MATH500(Suite):
    version = "1"
    data_spec = SPEC
    verify_timeout_s = 10.0  # per answer, enforced by killing the math-verify worker

    def __init__(self, *args, verify_workers: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._verify_workers = verify_workers
        self._verifier: MathVerifier | None = None

    @property
    def verifier(self) -> MathVerifier:
        if self._verifier is None:
            self._verifier = MathVerifier(workers=self._verify_workers, timeout_s=self.verify_timeout_s)
        return self._verifier

    def close(self) -> None:
        if self._verifier is not None:
            self._verifier.close()
            self._verifier = None

    def prompt_settings(self):
        return {"template": MATH_TEMPLATE, "system": SYSTEM_PROMPT, "shots": 0, "plain": "user turn + newline"}

    def samples(self) -> Iterator[Sample]:
        records, origin = load_records(self.name, SPEC, self.data_dir)
        for record in subset(records, self.limit, self.shuffle, self.seed):
            yield Sample(id=record["unique_id"],
                         messages=chat_messages(MATH_TEMPLATE.format(problem=record["problem"])),
                         reference=record["answer"],
                         meta={"origin": origin, "solution": record["solution"], "subject": record.get("subject"),
                               "level": record.get("level")})

    def render(self, sample: Sample, tokenizer) -> list[int]:
        return render_ids(sample.messages, tokenizer, plain_from_messages(sample.messages))

    def _grade(self, sample: Sample, completion: str, check: Check) -> Grade:
        boxed = last_boxed(completion)
        boxed_match = boxed is not None and normalize_boxed(boxed) == normalize_boxed(sample.reference)
        extra = {"boxed": boxed, "boxed_match": boxed_match, "math_verify": check.equal}
        extracted = boxed if boxed is not None else check.predicted
        return Grade(check.equal, extracted, check.status, check.detail, extra)

    def grade(self, sample: Sample, completion: str) -> Grade:
        return self._grade(sample, completion, self.verifier.check(sample.reference, completion))

    def grade_many(self, pairs: list[tuple[Sample, str]]) -> list[Grade]:
        checks = self.verifier.check_many([(sample.reference, completion) for sample, completion in pairs])
        return [self._grade(s, c, check) for (s, c), check in zip(pairs, checks)]
