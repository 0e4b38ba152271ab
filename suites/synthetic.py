"""Seeded generators for the synthetic suites (`arith`, `toy-code`); the toy models' training streams
(`toy/data.py`, not installed) draw from the same generators.

Every problem has a `key` (what it *is*: the template and its numbers or constants); the train/test
split is a hash of that key, so a test problem can never be drawn for training, however many
problems either side draws. Test problem i comes from its own RNG (`problem_at`), so ids are stable
whatever `limit` or size a caller uses; training draws from one seeded stream (`toy/data.py`).

The gold solutions are deliberately templated: most tokens restate something (operands copied from
the prompt or the line before, `def name(arg):`, the code fence), and a few are computed (product
and sum digits, the operator and constants of the returned expression). That mix is what makes
tokens-per-forward trade against accuracy as the confidence threshold moves.

Sizes are chosen so a few-M-parameter model learns them in a CPU-minutes budget: operands of 2-3
digits (a one-digit times a two-digit product, worked as tens part + units part), results up to 3
digits; the hard tokens are the partial products, the carries and the final sum.

Every number in a sum is written with three digits (`197-126=071`): a digit's place value is then a
fixed distance from the digits it depends on. With unpadded operands (`97+217`) the model must first
infer each number's length; a 2.5 M model trained for 25 CPU-minutes did not (4 % accuracy, units
digits wrong). Padding only moves that problem if a sum operand is copied from the prompt (`32` ->
`032`: 27 % accuracy, 73 of 74 failures a miscopied operand), so every prompt number that enters a
sum has three digits already; the others are one-digit multipliers and two-digit multiplicands,
which are copied as written, and padded results of earlier steps. The boxed answer is unpadded.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable

TEST_FRACTION_DENOM = 8  # 1 in 8 problem keys belongs to the test split


@dataclass
class Problem:
    kind: str  # "arith" | "code"
    key: str  # canonical identity; decides the split
    prompt: str  # the user message
    solution: str  # the gold assistant response
    answer: Any  # arith: the int answer; code: the test list (asserts)
    meta: dict[str, Any] = field(default_factory=dict)


def split_of(key: str) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_FRACTION_DENOM == 0 else "train"


# --------------------------------------------------------------------------------------- arith ----
NAMES = ["Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gina", "Hugo", "Ivy", "Jack", "Kim", "Leo",
         "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tara", "Omar"]
ITEMS = ["apples", "pens", "books", "cards", "eggs", "coins", "shells", "stamps", "marbles",
         "stickers", "beads", "candles", "cookies", "tickets", "bricks", "plums"]


WIDTH = 3  # digits of every number in a worked step (all results stay below 1000)


def _w(n: int) -> str:
    return f"{n:0{WIDTH}d}"


def worked_sum(a: int, op: str, b: int) -> str:
    """`a+b=c` or `a-b=c`, fixed width."""
    return f"{_w(a)}{op}{_w(b)}={_w(a + b if op == '+' else a - b)}"


def worked_product(a: int, b: int) -> str:
    """`b*a=...` for a one-digit b and a two-digit a, worked as tens part + units part: the two
    partial products are table look-ups, only their sum carries."""
    tens, units = (a // 10) * 10, a % 10
    if units == 0:
        return f"{b}*{a}={_w(b * a)}"
    return f"{b}*{a}={_w(b * tens)}+{_w(b * units)}={_w(b * a)}"


def _arith_buy(rng: random.Random) -> tuple[str, str, str, int]:
    n, items = rng.choice(NAMES), rng.choice(ITEMS)
    have, packs, per = rng.randint(100, 499), rng.randint(2, 9), rng.randint(11, 49)
    total = have + packs * per
    prompt = f"{n} has {have} {items}. {n} buys {packs} packs of {per} {items}. How many {items} does {n} have now?"
    sol = f"{worked_product(per, packs)}. {worked_sum(have, '+', packs * per)}."
    return f"buy|{have}|{packs}|{per}", prompt, sol, total


def _arith_give(rng: random.Random) -> tuple[str, str, str, int]:
    n, items = rng.choice(NAMES), rng.choice(ITEMS)
    have = rng.randint(200, 699)
    gone = rng.randint(100, have - 50)
    got = rng.randint(100, 299)
    left, total = have - gone, have - gone + got
    prompt = f"{n} has {have} {items}, gives away {gone} and then gets {got} more. How many {items} does {n} have now?"
    sol = f"{worked_sum(have, '-', gone)}. {worked_sum(left, '+', got)}."
    return f"give|{have}|{gone}|{got}", prompt, sol, total


def _arith_shop(rng: random.Random) -> tuple[str, str, str, int]:
    items = rng.choice(ITEMS)
    days, per = rng.randint(2, 5), rng.randint(11, 29)
    sold = days * per
    stock = rng.randint(max(100, sold + 10), 399)
    got = rng.randint(100, 299)
    left, total = stock - sold, stock - sold + got
    prompt = (f"A shop has {stock} {items}. It sells {per} {items} a day for {days} days, "
              f"then gets {got} more. How many {items} does it have now?")
    sol = f"{worked_product(per, days)}. {worked_sum(stock, '-', sold)}. {worked_sum(left, '+', got)}."
    return f"shop|{stock}|{per}|{days}|{got}", prompt, sol, total


def _arith_bags(rng: random.Random) -> tuple[str, str, str, int]:
    n, items = rng.choice(NAMES), rng.choice(ITEMS)
    b1, p1, b2, p2 = rng.randint(2, 9), rng.randint(11, 29), rng.randint(2, 9), rng.randint(11, 29)
    x, y = b1 * p1, b2 * p2
    prompt = f"{n} buys {b1} bags of {p1} {items} and {b2} bags of {p2} {items}. How many {items} is that?"
    sol = f"{worked_product(p1, b1)}. {worked_product(p2, b2)}. {worked_sum(x, '+', y)}."
    return f"bags|{b1}|{p1}|{b2}|{p2}", prompt, sol, x + y


ARITH_TEMPLATES = [_arith_buy, _arith_give, _arith_shop, _arith_bags]


def arith_problem(rng: random.Random) -> Problem:
    template = rng.choice(ARITH_TEMPLATES)
    key, prompt, steps, answer = template(rng)
    return Problem("arith", "arith|" + key, prompt, f"{steps} \\boxed{{{answer}}}", answer,
                   {"template": key.split("|")[0]})


# ---------------------------------------------------------------------------------------- code ----
FUNC_NAMES = ["f", "g", "solve", "compute", "transform", "calc", "process", "helper", "func",
              "apply", "answer", "result", "convert", "pick", "make", "run"]
INT_ARGS, LIST_ARGS, STR_ARGS = ["x", "n", "a", "num"], ["xs", "nums", "values", "items"], ["s", "text", "word"]


def _int_task(rng: random.Random, v: str) -> tuple[str, str]:
    a, b = rng.randint(2, 19), rng.randint(1, 19)
    return rng.choice([
        (f"{v} times {a} plus {b}", f"{v} * {a} + {b}"),
        (f"{v} times {a} minus {b}", f"{v} * {a} - {b}"),
        (f"{v} plus {a}, times {b}", f"({v} + {a}) * {b}"),
        (f"{v} minus {a}, times {b}", f"({v} - {a}) * {b}"),
        (f"the square of {v} plus {b}", f"{v} * {v} + {b}"),
        (f"{v} modulo {a}", f"{v} % {a}"),
        (f"{v} divided by {a}, rounded down", f"{v} // {a}"),
    ])


def _cond(rng: random.Random) -> tuple[str, str]:
    k = rng.randint(2, 15)
    return rng.choice([
        (f"greater than {k}", f"x > {k}"), (f"less than {k}", f"x < {k}"), ("even", "x % 2 == 0"),
        ("odd", "x % 2 == 1"), (f"divisible by {k % 8 + 2}", f"x % {k % 8 + 2} == 0"),
        (f"not equal to {k}", f"x != {k}"),
    ])


def _list_task(rng: random.Random, v: str) -> tuple[str, str]:
    (cw, ce), m = _cond(rng), rng.randint(2, 9)
    mw, me = rng.choice([(f"times {m}", f"x * {m}"), (f"plus {m}", f"x + {m}"), ("squared", "x * x")])
    return rng.choice([
        (f"the elements of {v} that are {cw}", f"[x for x in {v} if {ce}]"),
        (f"each element of {v} {mw}", f"[{me} for x in {v}]"),
        (f"each element of {v} that is {cw}, {mw}", f"[{me} for x in {v} if {ce}]"),
        (f"the sum of the elements of {v} that are {cw}", f"sum(x for x in {v} if {ce})"),
        (f"the number of elements of {v} that are {cw}", f"len([x for x in {v} if {ce}])"),
        (f"the sum of {v} plus {m}", f"sum({v}) + {m}"), (f"the largest element of {v}", f"max({v})"),
        (f"the smallest element of {v} times {m}", f"min({v}) * {m}"),
        (f"the first {m % 4 + 2} elements of {v} sorted in increasing order", f"sorted({v})[:{m % 4 + 2}]"),
        (f"{v} sorted in decreasing order", f"sorted({v}, reverse=True)"),
    ])


def _str_task(rng: random.Random, v: str) -> tuple[str, str]:
    k, c, d = rng.randint(2, 5), rng.choice("abcdef"), rng.choice("uvwxyz")
    return rng.choice([
        (f"{v} reversed", f"{v}[::-1]"), (f"{v} in upper case", f"{v}.upper()"),
        (f"the last {k} characters of {v} in lower case", f"{v}[-{k}:].lower()"),
        (f"the first {k} characters of {v} reversed", f"{v}[:{k}][::-1]"),
        (f"the first {k} characters of {v}", f"{v}[:{k}]"), (f"the last {k} characters of {v}", f"{v}[-{k}:]"),
        (f"{v} repeated {k} times", f"{v} * {k}"), (f"the number of times '{c}' occurs in {v}", f"{v}.count('{c}')"),
        (f"{v} with every '{c}' replaced by '{d}'", f"{v}.replace('{c}', '{d}')"),
    ])


def _test_inputs(rng: random.Random, arg_kind: str) -> list[Any]:
    if arg_kind == "int":
        return [rng.randint(0, 60) for _ in range(4)]
    if arg_kind == "list":
        return [[rng.randint(0, 20) for _ in range(rng.randint(3, 7))] for _ in range(3)]
    return ["".join(rng.choice("abcdefABCxyz") for _ in range(rng.randint(6, 10))) for _ in range(3)]


def code_problem(rng: random.Random) -> Problem:
    name = rng.choice(FUNC_NAMES)
    arg_kind = rng.choice(["int", "list", "list", "str"])
    arg = rng.choice({"int": INT_ARGS, "list": LIST_ARGS, "str": STR_ARGS}[arg_kind])
    task: Callable = {"int": _int_task, "list": _list_task, "str": _str_task}[arg_kind]
    words, expr = task(rng, arg)
    prompt = f"Write a Python function {name}({arg}) that returns {words}."
    code = f"def {name}({arg}):\n    return {expr}\n"
    scope: dict[str, Any] = {}
    exec(code, scope)  # our own template, not model output: computes the expected test values
    tests = [f"assert {name}({x!r}) == {scope[name](x)!r}" for x in _test_inputs(rng, arg_kind)]
    return Problem("code", prompt, prompt, f"```python\n{code}```", tests,
                   {"entry_point": name, "arg_kind": arg_kind, "gold_code": code})


# --------------------------------------------------------------------------------------- draws ----
MAKERS = {"arith": arith_problem, "code": code_problem}


def problem_at(kind: str, split: str, index: int) -> Problem:
    """Problem `index` of a split: its own RNG, redrawn until the key hashes into `split`."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; accepted: train, test")
    rng = random.Random(f"{kind}/{split}/{index}")
    while True:
        problem = MAKERS[kind](rng)
        if split_of(problem.key) == split:
            return problem


def distinct_problems(kind: str, split: str, n: int) -> list[Problem]:
    """The first n problems of a split with distinct keys (tasks without constants would otherwise
    repeat); problem i depends only on the split's fixed sequence, so ids do not depend on n."""
    out, seen, index = [], set(), 0
    while len(out) < n:
        problem = problem_at(kind, split, index)
        if problem.key not in seen:
            seen.add(problem.key)
            out.append(problem)
        index += 1
    return out
