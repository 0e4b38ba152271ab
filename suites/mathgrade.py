"""MATH answer equivalence with math-verify, under a process-level timeout.

math-verify's own timeouts use signal.alarm, which only works in the main thread (Math-Verify #50,
#55), and a runner grading from a thread would crash. So we call it with `parsing_timeout=None`,
`timeout_seconds=None` inside worker processes and enforce the limit from outside: a call that
does not answer within `timeout_s` gets its worker killed and replaced.

The workers are plain subprocesses running suites/_mathworker.py (JSON lines over stdin/stdout),
not multiprocessing ones: those re-import the caller's `__main__`, so a caller that is a script
without an `if __name__ == "__main__":` guard would start them again and die. That file also holds
the normalisation done before verifying (degree signs, spaces grouping digits).

    verifier = MathVerifier(workers=2, timeout_s=5.0)
    verifier.check(gold_answer, completion) -> Check(equal, predicted, status, detail)
    verifier.check_many([(gold_answer, completion), ...]) -> list[Check]    (one thread per worker)
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from suites.sandbox import available_cores

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_mathworker.py")


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


class _Handle:
    """One worker process and its pipes; restarted after a timeout or a crash."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self._pending = b""  # bytes read past the last reply

    def _start(self):
        # its own session: a Ctrl-C at the terminal stops the run after the batch in flight, and that
        # batch's answers still need their grader
        self.proc = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True)
        self._pending = b""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdin.close()
            self.proc.stdout.close()
        self.proc = None

    def _read_reply(self, timeout_s: float) -> bytes | None:
        """One reply line, or None when none came within `timeout_s`; EOFError if the worker died."""
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def call(self, job: tuple[str, str], timeout_s: float) -> Check:
        if not self.alive():
            self._start()
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
            # The first call also pays the worker's import of sympy and math-verify.
            line = self._read_reply(timeout_s)
        except (BrokenPipeError, EOFError):
            self.stop()
            return Check(False, None, "error", "math-verify worker died")
        if line is None:
            self.stop()
            return Check(False, None, "timeout", f"math-verify took over {timeout_s:g} s")
        equal, predicted, status, detail = json.loads(line)
        return Check(equal, predicted, status, detail)


class MathVerifier:
    def __init__(self, workers: int | None = None, timeout_s: float = 10.0, start_timeout_s: float = 120.0):
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.workers = workers or available_cores()
        self._free = [_Handle() for _ in range(self.workers)]
        # workers left running by a caller that never calls close() are stopped at exit
        self._closer = weakref.finalize(self, _stop_all, list(self._free))
        self._lock = threading.Lock()
        self._ready = threading.Semaphore(len(self._free))

    def check(self, gold_answer: str, completion: str) -> Check:
        self._ready.acquire()
        with self._lock:
            handle = self._free.pop()
        try:
            if not handle.alive():  # warm the worker up outside the per-answer limit
                warm = handle.call(("1", "\\boxed{1}"), self.start_timeout_s)
                if warm.status not in ("ok", "no_answer"):  # not this answer's fault: say so
                    return Check(False, None, "error", f"math-verify worker did not start: {warm.detail}")
            return handle.call((gold_answer, completion), self.timeout_s)
        finally:
            with self._lock:
                self._free.append(handle)
            self._ready.release()

    def check_many(self, pairs: list[tuple[str, str]]) -> list[Check]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda pair: self.check(*pair), pairs))

    def close(self) -> None:
        self._closer()


def _stop_all(handles: list[_Handle]) -> None:
    for handle in handles:
        handle.stop()
