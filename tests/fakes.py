"""Shared helpers for the harness tests: a deterministic in-memory suite (no data files), a code suite
for the code-exec gate and the grading pool, and a tiny-model loader. No tests live here; the
`fake_suites` fixture (conftest.py) registers the suites for one test."""

from __future__ import annotations

import time
from pathlib import Path

from suites.base import Grade, Sample, Suite

REPO = Path(__file__).resolve().parents[1]


class EchoSuite(Suite):
    """N fixed prompts; 'correct' is a deterministic function of the completion so that accuracy
    varies between decoders without a trained model."""

    version = "1"

    def __init__(self, data_dir=None, limit=None, shuffle=False, seed=0, allow_code_exec=False, n=6):
        super().__init__(data_dir, limit, shuffle, seed, allow_code_exec)
        self.n = n if limit is None else min(n, limit)

    def samples(self):
        for i in range(self.n):
            yield Sample(id=f"echo/{i}", messages=[{"role": "user", "content": f"Count to {i + 3}:"}], reference=i)

    def render(self, sample, tokenizer):
        return list(tokenizer(sample.messages[0]["content"], add_special_tokens=False)["input_ids"])

    def grade(self, sample, completion):
        return Grade(correct=len(completion) % 2 == 0, extracted=str(len(completion)), status="ok", detail="parity")


class SlowCodeSuite(EchoSuite):
    """Pretends to execute code: grading sleeps, so the pool's overlap with decoding is exercised."""

    needs_code_exec = True
    graded_in: list[str] = []

    def grade(self, sample, completion):
        import threading

        time.sleep(0.05)
        SlowCodeSuite.graded_in.append(threading.current_thread().name)
        return Grade(correct=True, extracted=completion[:10], status="pass", detail="")


def tiny_loader(cell):
    from harness.models import load_model

    return load_model("tiny-random-qwen2", device="cpu", dtype="float32", add_mask_token=cell.add_mask_token)


def sweep_text(suite="test-echo", limit=4, batch_size=2, max_new_tokens=8, extra=""):
    return f"""
[defaults]
model = "tiny-random-qwen2"
dtype = "float32"
device = "cpu"
suite = "{suite}"
limit = {limit}
batch_size = {batch_size}
max_new_tokens = {max_new_tokens}
{extra}
[[sweep]]
decoder = "ar"

[[sweep]]
decoder = "sdlm-conf"
name = "conf-t{{threshold}}"
params = {{ block_size = 4, threshold = [0.0, 1.0] }}
"""


def crashing_loader(cell):
    """Kills its own process when asked to load a batch-size-2 cell's model: a Ray worker that dies
    every time, so the task's retries run out (test_ray.py)."""
    import os

    if cell.batch_size == 2:
        os._exit(1)
    return tiny_loader(cell)


def loads_only_once(marker, cell):
    """Loads the model the first time (creating `marker`), fails every later time: with a worker killed
    mid-task, the retried attempt cannot load its model (test_ray.py). Bind `marker` with functools.partial."""
    from pathlib import Path

    if Path(marker).exists():
        raise RuntimeError("the model is gone")
    Path(marker).touch()
    return tiny_loader(cell)

