"""Where a toy checkpoint goes wrong on `arith`: teacher-forced next-token accuracy by the role of
each solution token (what TRAINING.md's per-run diagnostics come from).

Roles, for the digits of a worked solution (`6*49=240+054=294. 138+294=432.`):
  copy_prompt  an operand that is a number of the prompt (`6`, `49`, `138`)
  copy_step    any other operand: a result of an earlier step (`294` in `138+294`)
  computed     a number right of a step's first `=`, or inside \\boxed{} (`240`, `054`, `294`, `432`)
  other        every non-digit token (operators, punctuation, words, EOS)
Teacher forcing feeds the gold prefix, so each token is judged on its own: a miscopy is not
blamed on an earlier mistake. `--by-digit` splits the prompt copies further, by template and by the
digit's place in its number (`buy 3-digit #2`: the middle digit of buy's 3-digit number), which
separates finding the number (its first digit) from copying on from there.

    python -m toy.diagnose harness/checkpoints/pdbench-toy --n 200 [--by-digit]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from collections import Counter

import torch

ROLES = ("copy_prompt", "copy_step", "computed", "other")


def char_roles(prompt: str, solution: str) -> list[str]:
    """The role of every character of `solution` (module docstring)."""
    prompt_numbers = {int(n) for n in re.findall(r"\d+", prompt)}
    roles = ["other"] * len(solution)
    for match in re.finditer(r"\d+", solution):
        step_so_far = re.split(r"\. ", solution[:match.start()])[-1]
        if "=" in step_so_far or step_so_far.endswith("{"):
            role = "computed"
        elif int(match.group()) in prompt_numbers:
            role = "copy_prompt"
        else:
            role = "copy_step"
        roles[match.start():match.end()] = [role] * len(match.group())
    return roles


def token_roles(tokenizer, prompt: str, solution_ids: list[int]) -> list[str]:
    """A role per solution token: that of its first non-space character ("other" if none)."""
    pieces = [tokenizer.decode([t]) for t in solution_ids]
    text = "".join(pieces)
    by_char = char_roles(prompt, text)
    roles, start = [], 0
    for piece in pieces:
        offset = len(piece) - len(piece.lstrip())
        roles.append(by_char[start + offset] if piece.strip() else "other")
        start += len(piece)
    return roles


@torch.no_grad()
def teacher_forced(model, tokenizer, problem) -> tuple[list[str], list[bool]]:
    """(role, greedy prediction right?) for each gold solution token (+ EOS) of one problem."""
    from toy.train import encode

    x0, start = encode(tokenizer, problem)
    predicted = model(input_ids=torch.tensor([x0])).logits[0, start - 1:-1].argmax(-1).tolist()
    return token_roles(tokenizer, problem.prompt, x0[start:]), [w == g for w, g in zip(x0[start:], predicted)]


def teacher_forced_by_role(model, tokenizer, problems) -> dict[str, tuple[int, int]]:
    """{role: (correct, total)} of greedy next-token predictions on the gold solutions (+ EOS)."""
    correct, total = Counter(), Counter()
    for problem in problems:
        for role, right in zip(*teacher_forced(model, tokenizer, problem)):
            total[role] += 1
            correct[role] += right
    return {role: (correct[role], total[role]) for role in ROLES if total[role]}


def prompt_copies_by_digit(model, tokenizer, problems) -> dict[str, tuple[int, int]]:
    """{"<template> <n>-digit #<k>": (correct, total)} over the copy_prompt digits: the k-th digit
    of an n-digit number copied from the prompt (digits are single tokens in the toy tokenizer)."""
    correct, total = Counter(), Counter()
    for problem in problems:
        # a maximal run of copy_prompt tokens is one copied number (operators separate numbers)
        for role, run in itertools.groupby(zip(*teacher_forced(model, tokenizer, problem)), key=lambda rr: rr[0]):
            run = [right for _, right in run]
            if role != "copy_prompt":
                continue
            for place, right in enumerate(run, 1):
                key = f"{problem.meta['template']} {len(run)}-digit #{place}"
                total[key] += 1
                correct[key] += right
    return {key: (correct[key], total[key]) for key in sorted(total)}


def main(argv: list[str] | None = None) -> int:
    from toy.evaluate import load
    from suites.synthetic import distinct_problems

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a toy checkpoint directory")
    parser.add_argument("--n", type=int, default=200, help="arith test problems")
    parser.add_argument("--by-digit", action="store_true",
                        help="prompt copies by template and digit place instead of all tokens by role")
    args = parser.parse_args(argv)
    model, tokenizer = load(args.path)
    count = prompt_copies_by_digit if args.by_digit else teacher_forced_by_role
    counts = count(model, tokenizer, distinct_problems("arith", "test", args.n))
    print(json.dumps({key: {"correct": c, "total": t, "accuracy": round(c / t, 3)}
                      for key, (c, t) in counts.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
