"""Shared shape of the two synthetic suites: deterministic problems by index, split by key hash."""

from __future__ import annotations

import random
from typing import Any, Iterator

from suites.base import Sample, Suite
from suites.synthetic import SYSTEM_PROMPT, distinct_problems

DEFAULT_SIZE = 500  # problems per split unless `size` says otherwise


class SyntheticSuite(Suite):
    kind = "arith"  # which generator in suites.synthetic

    def __init__(self, limit: int | None = None, shuffle: bool = False, seed: int = 0, split: str = "test",
                 size: int = DEFAULT_SIZE, allow_code_exec: bool = False):
        if split not in ("test", "train"):
            raise ValueError(f"{self.name}: split={split!r}; accepted: test, train")
        if limit is not None and limit < 0:
            raise ValueError(f"{self.name}: limit={limit!r} must be >= 0")
        self.limit, self.shuffle, self.seed, self.split = limit, shuffle, seed, split
        self.size, self.allow_code_exec = size, allow_code_exec

    def samples(self) -> Iterator[Sample]:
        needed = self.size if self.shuffle or self.limit is None else min(self.size, self.limit)
        problems = distinct_problems(self.kind, self.split, needed)
        order = list(range(self.size))
        if self.shuffle:
            random.Random(self.seed).shuffle(order)
        for index in order[: self.limit]:
            p = problems[index]
            yield Sample(id=f"{self.name}/{self.split}/{index:04d}", messages=[{"role": "user", "content": p.prompt}],
                         reference=p.answer, meta={"solution": p.solution, "key": p.key, **p.meta})

    def render(self, sample: Sample, tokenizer) -> list[int]:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, *sample.messages]
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                return_dict=False)
            return [int(i) for i in ids]
        text = f"{SYSTEM_PROMPT}\n\n{sample.messages[-1]['content']}\n\n"
        return tokenizer.encode(text, add_special_tokens=False)

    def prompt_settings(self) -> dict[str, Any]:
        return {"system_prompt": SYSTEM_PROMPT, "split": self.split, "template": "chat"}
