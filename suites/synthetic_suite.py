"""Shared shape of the two synthetic suites: deterministic problems by index, split by key hash.

Options beside the common ones (limit, shuffle, seed, allow_code_exec; data_dir is accepted and
ignored: nothing is read from disk): `split` ("test", the default, or "train") and `size` (how many
distinct problems the split holds, default 500).
"""

from __future__ import annotations

import random
from typing import Any, Iterator

from suites.base import Sample, Suite
from suites.prompts import SYSTEM_PROMPT, chat_messages, plain_from_messages, render_ids
from suites.synthetic import distinct_problems

DEFAULT_SIZE = 500


class SyntheticSuite(Suite):
    kind = "arith"  # which generator in suites.synthetic

    def __init__(self, data_dir=None, limit: int | None = None, shuffle: bool = False, seed: int = 0,
                 allow_code_exec: bool = False, split: str = "test", size: int = DEFAULT_SIZE, **kwargs):
        super().__init__(data_dir=data_dir, limit=limit, shuffle=shuffle, seed=seed,
                         allow_code_exec=allow_code_exec, **kwargs)
        if split not in ("test", "train"):
            raise ValueError(f"{self.name}: split={split!r}; accepted: test, train")
        if limit is not None and limit < 0:
            raise ValueError(f"{self.name}: limit={limit!r} must be >= 0")
        self.split, self.size = split, size

    def samples(self) -> Iterator[Sample]:
        needed = self.size if self.shuffle or self.limit is None else min(self.size, self.limit)
        problems = distinct_problems(self.kind, self.split, needed)
        order = list(range(needed))
        if self.shuffle:
            random.Random(self.seed).shuffle(order)
        for index in order[: self.limit]:
            p = problems[index]
            yield Sample(id=f"{self.name}/{self.split}/{index:04d}", messages=chat_messages(p.prompt),
                         reference=p.answer, meta={"solution": p.solution, "key": p.key, **p.meta})

    def render(self, sample: Sample, tokenizer) -> list[int]:
        return render_ids(sample.messages, tokenizer, plain_from_messages(sample.messages))

    def prompt_settings(self) -> dict[str, Any]:
        return {"system": SYSTEM_PROMPT, "split": self.split, "size": self.size, "plain": "user turn + newline"}
