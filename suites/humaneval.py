"""HumanEval (164 problems): the completion's program runs against the problem's `check` function.

Extraction (suites/codegrade.py): the fenced blocks that make up the program, joined in order; with no
fence, the raw completion as a continuation of the prompt (how base models are evaluated), cut where
it starts "using" the function; if prompt + continuation does not parse, the code found between the
prose. Either way the prompt goes first, so its imports and helper functions are there; a full
function in the completion simply redefines the stub (a `def` with only a docstring is valid Python).
"""

from __future__ import annotations

from typing import Iterator

from suites import register
from suites.base import Sample
from suites.codegrade import CodeSuite, defines, extract_code, parses
from suites.data import DataSpec, load_records, subset
from suites.prompts import HUMANEVAL_TEMPLATE, SYSTEM_PROMPT, chat_messages, render_ids

SPEC = DataSpec(("humaneval.jsonl", "HumanEval.jsonl", "HumanEval.jsonl.gz"),
                ("task_id", "prompt", "entry_point", "canonical_solution", "test"), "openai_humaneval", None, "test")
# Raw continuations run on past the function; cut where the model starts "using" it instead.
RAW_STOPS = ("\nif __name__", "\nprint(", "\nassert ", "\n```")


@register("humaneval")
class HumanEval(CodeSuite):
    version = "1"
    data_spec = SPEC

    def prompt_settings(self):
        return {"template": HUMANEVAL_TEMPLATE, "system": SYSTEM_PROMPT, "plain": "the raw prompt (continuation)",
                "raw_stops": list(RAW_STOPS)}

    def samples(self) -> Iterator[Sample]:
        records, origin = load_records(self.name, SPEC, self.data_dir)
        for record in subset(records, self.limit, self.shuffle, self.seed):
            yield Sample(id=record["task_id"],
                         messages=chat_messages(HUMANEVAL_TEMPLATE.format(prompt=record["prompt"])),
                         reference={"test": record["test"], "entry_point": record["entry_point"]},
                         meta={"origin": origin, "prompt": record["prompt"],
                               "canonical_solution": record["canonical_solution"]})

    def render(self, sample: Sample, tokenizer) -> list[int]:
        return render_ids(sample.messages, tokenizer, sample.meta["prompt"])

    def program(self, sample: Sample, completion: str) -> tuple[str, str, str]:
        prompt, entry = sample.meta["prompt"], sample.reference["entry_point"]
        raw = completion
        for stop in RAW_STOPS:
            raw = raw.split(stop, 1)[0]
        code, how = extract_code(completion, entry, raw, parses(prompt + raw))
        solution = prompt + ("\n" + code if defines(code, entry) else code)
        source = f"{solution}\n\n{sample.reference['test']}\n\ncheck({entry})\n"
        return solution, source, how
