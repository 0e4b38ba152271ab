"""MATH answer equivalence with math-verify, under a process-level timeout.

math-verify's own timeouts use signal.alarm, which only works in the main thread (Math-Verify #50,
#55), and a runner grading from a thread would crash. So we call it with `parsing_timeout=None`,
`timeout_seconds=None` inside worker processes and enforce the limit from outside: a call that
does not answer within `timeout_s` gets its worker killed and replaced.

    verifier = MathVerifier(workers=2, timeout_s=5.0)
    verifier.check(gold_answer, completion) -> Check(equal, predicted, status, detail)
    verifier.check_many([(gold_answer, completion), ...]) -> list[Check]    (one thread per worker)
"""

from __future__ import annotations

import multiprocessing
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from suites.sandbox import available_cores


@dataclass
class Check:
    equal: bool
    predicted: str | None  # math-verify's extracted answer string
    status: str  # ok | no_answer | timeout | error
    detail: str = ""


def normalize_boxed(text: str) -> str:
    """Light normalisation for the boxed-string exact-match column (not an equivalence test)."""
    text = re.sub(r"\\left|\\right|\\displaystyle|\\[!,;: ]|\s+", "", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    return text.rstrip(".")


def verify_pair(gold_answer: str, completion: str) -> tuple[bool, str | None, str, str]:
    """Runs in a worker. The gold is re-boxed: bare LaTeX such as \\dfrac{9}{7} parses to nothing
    otherwise (Math-Verify #70). Gold goes first: verify() is asymmetric by design."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold = []
    for candidate in ("\\boxed{" + gold_answer + "}", "$" + gold_answer + "$", gold_answer):
        gold = parse(candidate, parsing_timeout=None)
        if gold:
            break
    if not gold:
        return False, None, "error", f"gold answer {gold_answer!r} did not parse"
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    predicted = parse(completion, extraction_config=config, parsing_timeout=None)
    if not predicted:
        return False, None, "no_answer", "math-verify extracted nothing"
    text = str(predicted[-1]) if len(predicted) > 1 else str(predicted[0])
    return bool(verify(gold, predicted, timeout_seconds=None)), text, "ok", ""


def _worker(conn) -> None:
    import logging

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every parse failure
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        try:
            conn.send(verify_pair(*job))
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            conn.send((False, None, "error", f"{type(exc).__name__}: {exc}"[:300]))


class _Handle:
    """One worker process and its pipe; restarted after a timeout or a crash."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.proc = None
        self.conn = None

    def _start(self):
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.conn.close()
        self.proc = self.conn = None

    def call(self, job, timeout_s: float) -> Check:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send(job)
        # The first call also pays the worker's import of sympy and math-verify.
        if not self.conn.poll(timeout_s):
            self.stop()
            return Check(False, None, "timeout", f"math-verify took over {timeout_s:g} s")
        try:
            equal, predicted, status, detail = self.conn.recv()
        except EOFError:
            self.stop()
            return Check(False, None, "error", "math-verify worker died")
        return Check(equal, predicted, status, detail)


class MathVerifier:
    def __init__(self, workers: int | None = None, timeout_s: float = 10.0, start_timeout_s: float = 120.0):
        # spawn, not fork: the caller may hold threads (a runner, torch) that fork would copy mid-lock
        ctx = multiprocessing.get_context("spawn")
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.workers = workers or available_cores()
        self._free = [_Handle(ctx) for _ in range(self.workers)]
        self._lock = threading.Lock()
        self._ready = threading.Semaphore(len(self._free))

    def check(self, gold_answer: str, completion: str) -> Check:
        self._ready.acquire()
        with self._lock:
            handle = self._free.pop()
        try:
            fresh = handle.proc is None or not handle.proc.is_alive()
            if fresh:  # warm the worker up outside the per-answer limit
                handle.call(("1", "\\boxed{1}"), self.start_timeout_s)
            return handle.call((gold_answer, completion), self.timeout_s)
        finally:
            with self._lock:
                self._free.append(handle)
            self._ready.release()

    def check_many(self, pairs: list[tuple[str, str]]) -> list[Check]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda pair: self.check(*pair), pairs))

    def close(self) -> None:
        for handle in self._free:
            handle.stop()
