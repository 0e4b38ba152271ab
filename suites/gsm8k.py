"""GSM8K test split (1319 grade-school word problems), graded by exact numeric match.

Reference: the number after "#### " in the record's `answer`. Completion: \\boxed{} first, then
`#### n`, then an "answer is ..." / "Answer:" statement, then the last number (suites/answers.py);
`Grade.extra["extractor"]` says which fired.
"""

from __future__ import annotations

from typing import Iterator

from suites import register
from suites.answers import extract_number, format_number, parse_number
from suites.base import Grade, Sample, Suite
from suites.data import DataError, DataSpec, load_records, subset
from suites.prompts import MATH_TEMPLATE, SYSTEM_PROMPT, chat_messages, plain_from_messages, render_ids

SPEC = DataSpec(("gsm8k_test.jsonl", "gsm8k.jsonl"), ("question", "answer"), "openai/gsm8k", "main", "test")


def gold_number(answer: str) -> str:
    if "####" not in answer:
        raise DataError(f"GSM8K answer has no '#### <number>': {answer[-80:]!r}")
    value = parse_number(answer.rsplit("####", 1)[1])
    if value is None:
        raise DataError(f"GSM8K answer after '####' is not a number: {answer[-80:]!r}")
    return format_number(value)


@register("gsm8k")
class GSM8K(Suite):
    version = "1"
    data_spec = SPEC

    def prompt_settings(self):
        return {"template": MATH_TEMPLATE, "system": SYSTEM_PROMPT, "shots": 0, "plain": "user turn + newline"}

    def samples(self) -> Iterator[Sample]:
        records, origin = load_records(self.name, SPEC, self.data_dir)
        indexed = list(enumerate(records))
        for index, record in subset(indexed, self.limit, self.shuffle, self.seed):
            yield Sample(id=f"gsm8k/{index:04d}",
                         messages=chat_messages(MATH_TEMPLATE.format(problem=record["question"])),
                         reference=gold_number(record["answer"]),
                         meta={"origin": origin, "solution": record["answer"]})

    def render(self, sample: Sample, tokenizer) -> list[int]:
        return render_ids(sample.messages, tokenizer, plain_from_messages(sample.messages))

    def grade(self, sample: Sample, completion: str) -> Grade:
        value, extractor = extract_number(completion)
        if value is None:
            return Grade(False, None, "no_answer", "no number found", {"extractor": None})
        extracted = format_number(value)
        correct = value == parse_number(sample.reference)
        return Grade(correct, extracted, "ok", f"extractor={extractor}", {"extractor": extractor})
