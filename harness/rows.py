"""One stored row per sample: built from a decoder's DecodeResult, checked, then graded.

The row's counts are the DecodeResult's own (`n_tokens`, `n_forward`, `tpf` are its properties);
what is checked here is what a decoder can get wrong: a result per prompt, the bookkeeping
identities, and forward counts that agree with the adapter, which counts every call of the network
itself (harness/adapter.py).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd


class BookkeepingError(AssertionError):
    """A decoder's results contradict themselves or the adapter's own forward count."""


def check_batch(results: list, n_prompts: int, forwards_run: int) -> None:
    """`forwards_run`: forwards the adapter counted during the batch. Every forward serves at least
    one row and no row can take part in more forwards than ran, so
    max(n_forward) <= forwards_run <= sum(n_forward)."""
    if len(results) != n_prompts:
        raise BookkeepingError(f"decoder returned {len(results)} results for {n_prompts} prompts")
    for i, res in enumerate(results):
        try:
            res.check_bookkeeping()
        except AssertionError as e:
            raise BookkeepingError(f"prompt {i}: {e}") from None
        if res.n_forward == 0:
            raise BookkeepingError(f"prompt {i}: no forward recorded")
    counts = [r.n_forward for r in results]
    if not max(counts) <= forwards_run <= sum(counts):
        raise BookkeepingError(f"rows report n_forward {counts}, but the adapter ran {forwards_run} forwards "
                               "(each row's count must be at most that, and together at least that)")


def sample_row(base: dict[str, Any], sample, prompt: list[int], res, tokenizer, eos_ids, pos: int) -> dict:
    """The stored row of one sample, grades still empty."""
    tokens = [int(t) for t in res.tokens]
    ends_eos = res.finish == "eos" and bool(tokens) and tokens[-1] in eos_ids
    body = tokens[:-1] if ends_eos else tokens
    n, e2e, ttft = res.n_tokens, float(res.e2e_s), float(res.ttft_s)
    return {
        **base,
        "sample_id": str(sample.id), "pos_in_batch": pos, "prompt_tokens": len(prompt),
        "output_ids": tokens, "output_text": tokenizer.decode(body, skip_special_tokens=True),
        "finish": res.finish, "n_tokens": n, "n_tokens_excl_eos": len(body), "n_forward": res.n_forward,
        "tpf": res.tpf, "accepted": [int(a) for a in res.accepted], "step_s": [float(s) for s in res.step_s],
        "n_draft_forward": int(res.n_draft_forward),
        "trace": None if res.trace is None else json.dumps(res.trace),
        "ttft_s": ttft, "e2e_s": e2e, "tpot_s": (e2e - ttft) / (n - 1) if n > 1 else float("nan"),
        "tok_s": n / e2e if e2e > 0 else float("nan"), "finished_at": pd.Timestamp.now("UTC"),
        "correct": None, "extracted": None, "grade_status": None, "grade_detail": None, "grade_extra": None,
    }


def grade(suite, samples: list, texts: list[str]) -> list:
    grades = list(suite.grade_many(list(zip(samples, texts))))
    if len(grades) != len(samples):
        raise BookkeepingError(f"suite returned {len(grades)} grades for {len(samples)} completions")
    return grades


def apply_grades(rows: list[dict], grades: list) -> list[dict]:
    for row, g in zip(rows, grades):
        row.update(correct=bool(g.correct), extracted=None if g.extracted is None else str(g.extracted),
                   grade_status=str(g.status), grade_detail=str(g.detail or ""),
                   grade_extra=json.dumps(getattr(g, "extra", None) or {}, sort_keys=True, default=str))
    return rows
