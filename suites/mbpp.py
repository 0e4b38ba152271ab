"""MBPP, full (not sanitized) test split: task_id 11..510, 500 problems.

The prompt gives the task text and its three asserts; the program is the extracted code, then the
record's `test_setup_code`, then those asserts (`challenge_test_list` is not run).
Extraction (suites/codegrade.py): the fenced blocks that make up the program, joined in order; else
the raw completion with any [BEGIN]/[DONE] markers removed when it parses; else the code found
between the prose.
"""

from __future__ import annotations

import re
from typing import Iterator

from suites import register
from suites.base import Sample
from suites.codegrade import CodeSuite, extract_code, parses
from suites.data import DataSpec, load_records, subset
from suites.prompts import MBPP_TEMPLATE, SYSTEM_PROMPT, chat_messages, plain_from_messages, render_ids

SPEC = DataSpec(("mbpp_test.jsonl", "mbpp.jsonl"), ("task_id", "text", "code", "test_list", "test_setup_code"),
                "mbpp", "full", "test")
TEST_IDS = range(11, 511)  # google-research mbpp/README.md: "Task IDs 11-510 are used for testing"


def called_function(tests: list[str]) -> str | None:
    match = re.search(r"assert\s+\(?\s*(?:not\s+)?\(?\s*([A-Za-z_]\w*)\s*\(", tests[0]) if tests else None
    return match.group(1) if match else None


@register("mbpp")
class MBPP(CodeSuite):
    version = "1"
    data_spec = SPEC

    def prompt_settings(self):
        return {"template": MBPP_TEMPLATE, "system": SYSTEM_PROMPT, "shots": 0, "plain": "user turn + newline"}

    def samples(self) -> Iterator[Sample]:
        records, origin = load_records(self.name, SPEC, self.data_dir)
        # the full mbpp.jsonl (974 problems) holds few-shot, validation and train tasks too
        records = [r for r in records if int(r["task_id"]) in TEST_IDS]
        for record in subset(records, self.limit, self.shuffle, self.seed):
            tests = list(record["test_list"])
            yield Sample(id=f"mbpp/{record['task_id']}",
                         messages=chat_messages(MBPP_TEMPLATE.format(text=record["text"], tests="\n".join(tests))),
                         reference={"tests": tests, "setup": record["test_setup_code"] or ""},
                         meta={"origin": origin, "code": record["code"], "function": called_function(tests)})

    def render(self, sample: Sample, tokenizer) -> list[int]:
        return render_ids(sample.messages, tokenizer, plain_from_messages(sample.messages))

    def program(self, sample: Sample, completion: str) -> tuple[str, str, str]:
        raw = completion.replace("[BEGIN]", "").split("[DONE]", 1)[0]
        code, how = extract_code(completion, sample.meta["function"], raw, parses(raw))
        # setup after the solution: the one task that has setup code (367) builds its test trees
        # with the Node class the solution defines
        source = f"{code}\n\n{sample.reference['setup']}\n" + "\n".join(sample.reference["tests"]) + "\n"
        return code, source, how
