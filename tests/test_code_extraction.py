"""Code extraction as a person reads an answer (suites/codegrade.py): solutions split over several
fenced blocks, unfenced code between prose, and an `if __name__ == "__main__":` demo that reads
stdin, on HumanEval-, MBPP- and toy-code-style samples built here (no data needed). Each format is
graded twice: the right solution passes and its corrupted twin fails."""

from __future__ import annotations

import textwrap

import pytest

import suites
from suites.base import Sample
from suites.codegrade import code_in_prose, extract_code, join_program

F = "```"

# ---------------------------------------------------------------- extraction, without running anything


def test_blocks_join_in_order_leaving_out_usage_transcripts_tests_and_stubs():
    blocks = [
        "def count(xs):\n    \"\"\"How many.\"\"\"\n",  # restated stub: the real one comes later
        "import math\n\ndef helper(x):\n    return math.floor(x)\n",
        "def count(xs):\n    return sum(helper(x) for x in xs)\n",
        "print(count([1.5, 2.5]))\n",  # usage
        ">>> count([1.5])\n1\n",  # a transcript: does not parse
        "def test_count():\n    assert count([]) == 1\n\ntest_count()\n",  # the model's own (wrong) test
        "def count(xs):\n    ...\n",  # a stub restated after the answer must not replace it
    ]
    program = join_program(blocks, "count")
    assert program == ("import math\n\ndef helper(x):\n    return math.floor(x)\n\n"
                       "def count(xs):\n    return sum(helper(x) for x in xs)")


def test_a_later_full_definition_replaces_an_earlier_one():
    program = join_program(["def f():\n    return 1\n", "def f():\n    return 2\n"], "f")
    namespace = {}
    exec(program, namespace)
    assert namespace["f"]() == 2


def test_entry_points_named_like_tests_are_kept():
    # MBPP has functions such as test_duplicate and check_greater
    assert join_program(["def test_duplicate(xs):\n    return len(set(xs)) != len(xs)\n"], "test_duplicate")


def test_when_no_block_qualifies_the_answer_fails_as_itself():
    code, how = extract_code(f"{F}python\ndef f(:\n    return 1\n{F}\n", "f", "", False)
    assert (code, how) == ("def f(:\n    return 1\n", "fenced")


def test_code_between_prose():
    text = ("Sure! First a helper:\n\nimport math\n\ndef helper(x):\n    return math.floor(x)\n\n"
            "Explanation\nThe helper rounds down. Now the function itself:\n\n"
            "def count(xs):\n    total = 0\n\n    for x in xs:\n        total += helper(x)\n    return total\n\n"
            "print(count([1.5]))\nThis runs in O(n) time.\n")
    assert code_in_prose(text, "count") == (
        "import math\n\ndef helper(x):\n    return math.floor(x)\n\n"
        "def count(xs):\n    total = 0\n\n    for x in xs:\n        total += helper(x)\n    return total\n\n"
        "print(count([1.5]))")
    assert code_in_prose("No code here, from what I can tell.\nimport this module first.", "f") is None
    constant = "We cap the table.\n\nMAX = 3000\ndef table():\n    return [0] * MAX\n\nDone.\n"
    assert code_in_prose(constant, "table") == "MAX = 3000\ndef table():\n    return [0] * MAX"


# ---------------------------------------------------------------- graded in the sandbox

HUMANEVAL = Sample(
    id="HumanEval/x",
    messages=[],
    reference={"entry_point": "below_zero",
               "test": ("def check(candidate):\n    assert candidate([1, -2]) is True\n"
                        "    assert candidate([1, 2]) is False\n")},
    meta={"prompt": "from typing import List\n\n\ndef below_zero(ops: List[int]) -> bool:\n"
                    "    \"\"\"Does the running balance ever drop below zero?\"\"\"\n"})
MBPP = Sample(id="mbpp/x", messages=[], reference={"tests": ["assert max_gap([1, 5, 6]) == 4"], "setup": ""},
              meta={"function": "max_gap"})


def indent(block: str, width: int = 3) -> str:
    """A fenced block as it sits inside a Markdown list item: every line indented with the item."""
    return textwrap.indent(block, " " * width)


def humaneval_answers(body: str) -> dict[str, str]:
    helper = f"def running_balances(ops):\n{body}"
    return {
        "split blocks": (f"First a helper:\n{F}python\nfrom itertools import accumulate\n\n{helper}\n{F}\n"
                         f"Then the function:\n{F}python\ndef below_zero(ops: List[int]) -> bool:\n"
                         f"    return any(b < 0 for b in running_balances(ops))\n{F}\n"
                         f"Example:\n{F}python\nprint(below_zero([1, -2]))\n{F}\n"),
        "prose": (f"Here is a solution.\n\nfrom itertools import accumulate\n\n{helper}\n\n"
                  f"def below_zero(ops):\n    return any(b < 0 for b in running_balances(ops))\n\n"
                  f"The helper yields the balance after each operation.\n"),
        "main demo": (f"{F}python\nfrom itertools import accumulate\n\n{helper}\n\n"
                      f"def below_zero(ops):\n    return any(b < 0 for b in running_balances(ops))\n\n\n"
                      f"if __name__ == \"__main__\":\n    ops = list(map(int, input().split()))\n"
                      f"    print(below_zero(ops))\n{F}\n"),
        "list item": ("1. A helper for the balances:\n\n" + indent(f"{F}python\nfrom itertools import accumulate\n\n"
                                                                   f"{helper}{F}\n") +
                      "2. The function itself:\n\n" + indent(f"{F}python\ndef below_zero(ops):\n"
                                                              f"    return any(b < 0 for b in running_balances(ops))\n{F}\n")),
    }


def mbpp_answers(expression: str) -> dict[str, str]:
    helper = f"def gaps(xs):\n    return [{expression} for a, b in zip(xs, xs[1:])]\n"
    return {
        "split blocks": (f"{F}python\n{helper}{F}\nand\n{F}python\ndef max_gap(xs):\n    return max(gaps(xs))\n{F}\n"
                         f"{F}python\nassert max_gap([1, 5, 6]) == 4\nprint('ok')\n{F}\n"),
        "prose": f"We need the gaps.\n\n{helper}\ndef max_gap(xs):\n    return max(gaps(xs))\n\nThat is all.\n",
        "main demo": (f"{F}python\n{helper}\ndef max_gap(xs):\n    return max(gaps(xs))\n\n"
                      f"if __name__ == '__main__':\n    print(max_gap([int(x) for x in input().split()]))\n{F}\n"),
        "list item": ("- Steps:\n\n" + indent(f"{F}python\n{helper}\ndef max_gap(xs):\n    return max(gaps(xs))\n{F}\n", 2)),
    }


@pytest.fixture(scope="module")
def graded():
    """{(suite, format, right?): Grade}, all programs on one pool."""
    right_body, wrong_body = "    return list(accumulate(ops))\n", "    return [abs(b) for b in accumulate(ops)]\n"
    cases = {}
    for correct, body, expression in ((True, right_body, "b - a"), (False, wrong_body, "a - b")):
        for fmt, text in humaneval_answers(body).items():
            cases[("humaneval", fmt, correct)] = (HUMANEVAL, text)
        for fmt, text in mbpp_answers(expression).items():
            cases[("mbpp", fmt, correct)] = (MBPP, text)
    grades = {}
    for name in ("humaneval", "mbpp"):
        suite = suites.get(name, allow_code_exec=True)
        keys = [key for key in cases if key[0] == name]
        for key, grade in zip(keys, suite.grade_many([cases[key] for key in keys])):
            grades[key] = grade
    return grades


@pytest.mark.parametrize("suite", ["humaneval", "mbpp"])
@pytest.mark.parametrize("fmt, how", [("split blocks", "fenced"), ("prose", "prose"), ("main demo", "fenced"),
                                      ("list item", "fenced")])
def test_chat_formats_are_graded_as_written(graded, suite, fmt, how):
    right, wrong = graded[(suite, fmt, True)], graded[(suite, fmt, False)]
    assert (right.status, right.extra["code_source"]) == ("pass", how), right.detail
    assert wrong.status == "fail" and wrong.extra["code_source"] == how


def test_toy_code_split_blocks_and_prose():
    suite = suites.get("toy-code", limit=1, allow_code_exec=True)
    sample = next(suite.samples())
    gold, entry = sample.meta["gold_code"], sample.meta["entry_point"]
    renamed = gold.replace(f"def {entry}(", "def _solution(", 1)
    split = f"{F}python\n{renamed}\n{F}\n{F}python\ndef {entry}(*args):\n    return _solution(*args)\n{F}\n"
    prose = f"Here you go:\n\n{gold}\n\nIt returns the value asked for.\n"
    wrong = split.replace("return _solution", "return None and _solution")
    grades = suite.grade_many([(sample, split), (sample, prose), (sample, wrong)])
    assert [(g.status, g.extra["code_source"]) for g in grades] == [("pass", "fenced"), ("pass", "prose"),
                                                                    ("fail", "fenced")]


def test_unguarded_demo_code_still_runs():
    """Only the __main__ guard is off: a demo outside it that reads stdin still fails (EOF)."""
    suite = suites.get("mbpp", allow_code_exec=True)
    text = f"{F}python\ndef max_gap(xs):\n    return max(b - a for a, b in zip(xs, xs[1:]))\n\nprint(input())\n{F}\n"
    grade = suite.grade(MBPP, text)
    assert grade.status == "fail" and "EOFError" in grade.detail
