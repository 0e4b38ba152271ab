"""Training data for the toy models: endless seeded streams of train-split synthetic problems, and
bare arithmetic drills. Training-only, so it lives outside the installed package; the problems
themselves come from the suites' generators (suites/synthetic.py), so what a model trains on is
exactly what the suites test, never a test problem (the split is a hash of the problem's key).
"""

from __future__ import annotations

import random
from typing import Iterator

from suites.prompts import chat_messages as chat_messages_for
from suites.synthetic import MAKERS, Problem, split_of, worked_product, worked_sum


def arith_drill(rng: random.Random, steps: int = 6) -> str:
    """Training-only text: a chain of worked steps in the suite's exact format (`089+217=306. 7*31=...`),
    without the word problem or chat framing. Operands stay in the templates' ranges (products of a
    one-digit and a two-digit number, sums below 1000); a drill holds six steps in ~70 tokens, where a
    rendered problem spends ~45 tokens of framing on two or three."""
    lines, value = [], rng.randint(10, 199)
    for _ in range(steps):
        kind = rng.choice(["+", "-", "*"])
        if kind == "*":
            a, b = rng.randint(11, 49), rng.randint(2, 9)
            lines.append(worked_product(a, b))
            value = b * a
        elif kind == "-" and value >= 20:
            other = rng.randint(10, value - 10)
            lines.append(worked_sum(value, "-", other))
            value -= other
        else:
            other = rng.randint(10, max(10, min(299, 999 - value)))
            lines.append(worked_sum(value, "+", other))
            value += other
        if value > 800:
            value = rng.randint(10, 199)
    return ". ".join(lines) + "."


def train_stream(seed: int, weights: dict[str, float]) -> Iterator[Problem]:
    """Endless training problems (train split only), mixed by `weights`, from one seeded RNG."""
    rng = random.Random(f"train-stream/{seed}")
    kinds, w = list(weights), list(weights.values())
    while True:
        problem = MAKERS[rng.choices(kinds, w)[0]](rng)
        if split_of(problem.key) == "train":
            yield problem


def chat_messages(problem: Problem) -> list[dict[str, str]]:
    """The messages the suites render (system prompt + the problem), shared with training."""
    return chat_messages_for(problem.prompt)
