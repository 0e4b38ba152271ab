"""The synthetic suites: deterministic, train/test disjoint, graders accept gold and reject corruptions."""

from __future__ import annotations

import itertools
import random
import re

import pytest

import suites
from suites.synthetic import ARITH_TEMPLATES, problem_at, split_of
from toy.data import arith_drill, train_stream


def test_registered():
    assert {"arith", "toy-code"} <= set(suites.available())


@pytest.mark.parametrize("name", ["arith", "toy-code"])
def test_generation_is_deterministic_and_ids_stable(name):
    a = list(suites.get(name, limit=20).samples())
    b = list(suites.get(name, limit=20).samples())
    assert [(s.id, s.messages, s.reference) for s in a] == [(s.id, s.messages, s.reference) for s in b]
    # a longer draw starts with the same problems: ids do not depend on `limit`
    longer = list(suites.get(name, limit=40).samples())
    assert [s.id for s in longer[:20]] == [s.id for s in a]
    assert len({s.messages[-1]["content"] for s in longer}) == 40  # distinct problems
    shuffled = list(suites.get(name, limit=None, shuffle=True, seed=3, size=40).samples())
    assert sorted(s.id for s in shuffled) == sorted(s.id for s in longer)
    assert [s.id for s in shuffled] != [s.id for s in longer]


@pytest.mark.parametrize("kind", ["arith", "code"])
def test_train_and_test_are_disjoint(kind):
    test_keys = {problem_at(kind, "test", i).key for i in range(500)}
    assert all(split_of(k) == "test" for k in test_keys)
    stream = train_stream(0, {kind: 1.0})
    train = [next(stream) for _ in range(5000)]
    assert not test_keys & {p.key for p in train}
    assert not {problem_at(kind, "test", i).prompt for i in range(500)} & {p.prompt for p in train}
    assert all(split_of(problem_at(kind, "train", i).key) == "train" for i in range(50))


def test_test_split_covers_every_template():
    templates = {problem_at("arith", "test", i).meta["template"] for i in range(200)}
    assert len(templates) == len(ARITH_TEMPLATES)
    kinds = {problem_at("code", "test", i).meta["arg_kind"] for i in range(200)}
    assert kinds == {"int", "list", "str"}


def test_arith_grader():
    suite = suites.get("arith", limit=50)
    for sample in suite.samples():
        gold = sample.meta["solution"]
        assert suite.grade(sample, gold).correct, gold
        wrong = gold.replace(f"\\boxed{{{sample.reference}}}", f"\\boxed{{{sample.reference + 1}}}")
        grade = suite.grade(sample, wrong)
        assert not grade.correct and grade.status == "ok"
    sample = next(iter(suite.samples()))
    assert suite.grade(sample, f"so it is {sample.reference}").correct  # last-number fallback
    assert suite.grade(sample, "I do not know").status == "no_answer"


def test_toy_code_grader_runs_tests_in_the_sandbox():
    suite = suites.get("toy-code", limit=8, allow_code_exec=True)
    for sample in suite.samples():
        gold = suite.grade(sample, sample.meta["solution"])
        assert gold.correct and gold.status == "pass", (sample.meta["solution"], gold)
        # plausible wrong programs: another return value, a syntax error
        broken = sample.meta["solution"].replace("return ", "return None or 0 and ")
        assert not suite.grade(sample, broken).correct
        assert suite.grade(sample, "```python\ndef nope(:\n```").status in ("fail", "error")
    # unfenced code is graded too
    sample = next(iter(suite.samples()))
    assert suite.grade(sample, sample.meta["gold_code"]).correct


def test_toy_code_needs_opt_in():
    suite = suites.get("toy-code", limit=1)
    assert suite.needs_code_exec
    with pytest.raises(PermissionError):
        suite.grade(next(iter(suite.samples())), "def f(x):\n    return x\n")


def test_outputs_are_short():
    """Outputs must stay tens of tokens (the toy preset's 3-minute budget); characters as a proxy."""
    for kind in ("arith", "code"):
        lengths = [len(problem_at(kind, "test", i).solution) for i in range(200)]
        assert max(lengths) < 160 and sum(lengths) / len(lengths) < 100


def test_bad_split_is_rejected():
    with pytest.raises(ValueError):
        suites.get("arith", split="validation")
    assert len(list(itertools.islice(suites.get("arith", split="train").samples(), 3))) == 3


def test_training_encoding_matches_the_suite_render():
    """The model is trained on exactly the prompt ids the harness will feed it."""
    from toy.tokenizer import build_tokenizer
    from toy.train import encode
    from suites.synthetic import distinct_problems

    tokenizer = build_tokenizer()
    for name, kind in (("arith", "arith"), ("toy-code", "code")):
        suite = suites.get(name, limit=5)
        for i, sample in enumerate(suite.samples()):
            problem = distinct_problems(kind, "test", 5)[i]
            assert sample.messages[-1]["content"] == problem.prompt
            x0, start = encode(tokenizer, problem)
            assert x0[:start] == suite.render(sample, tokenizer)
            assert tokenizer.decode(x0[start:]) == problem.solution + "<|im_end|>"


def check_worked_steps(text: str) -> int:
    """Every step of a worked solution or drill is true arithmetic in the fixed-width format:
    `aaa+bbb=ccc`, `aaa-bbb=ccc`, `b*aa=ttt+uuu=ppp` (or `b*aa=ppp` for a round aa). Returns the
    number of steps checked."""
    steps = [s for s in re.split(r"\. ?", text) if "=" in s]
    for step in steps:
        if "*" in step:
            m = re.fullmatch(r"(\d)\*(\d\d)=(?:(\d{3})\+(\d{3})=)?(\d{3})", step)
            assert m, step
            b, a, tens, units, product = m.groups()
            assert int(product) == int(a) * int(b), step
            if tens is not None:
                assert (int(tens), int(units)) == (int(b) * (int(a) // 10 * 10), int(b) * (int(a) % 10)), step
        else:
            m = re.fullmatch(r"(\d{3})([+-])(\d{3})=(\d{3})", step)
            assert m, step
            a, op, b, c = m.groups()
            assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b)), step
    return len(steps)


def test_worked_steps_are_true_and_fixed_width():
    for i in range(300):
        problem = problem_at("arith", "test", i)
        steps, boxed = problem.solution.split(" \\boxed")
        assert check_worked_steps(steps) >= 2
        assert boxed == f"{{{problem.answer}}}"  # the final answer is unpadded
        assert steps.rstrip(".").split("=")[-1].lstrip("0") == str(problem.answer)
    rng = random.Random(1)
    assert sum(check_worked_steps(arith_drill(rng)) for _ in range(300)) == 300 * 6
