"""Run a list of cells into a run directory: one model load per model, batches through the decoder,
grading, one bookkept row per sample appended to the store as each batch finishes.

Everything that can be checked without a model (decoder parameters, suite names and data, the
code-execution opt-in) is checked for every cell before the first model loads. A cell that fails at
run time (exception, CUDA OOM, broken bookkeeping) goes to failures.parquet and the sweep goes on.
Ctrl-C stops after the batch in flight; a second Ctrl-C aborts at once. Either way the store stays
consistent because every batch is one atomically renamed part file.
"""

from __future__ import annotations

import inspect
import json
import math
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from harness import manifest, store
from harness.cells import Cell, cell_hash, describe_for_hash
from harness.telemetry import GpuSampler

WARMUP_TOKENS = 8


class RunConfigError(ValueError):
    """Problems found before any model loads; lists them all."""


@dataclass
class RunOptions:
    data_dir: str | None = None
    allow_code_exec: bool = False  # the CLI's --allow-code-exec; a cell may also opt in
    warmup: bool = True  # one untimed batch per cell (WARMUP_TOKENS new tokens)
    progress: bool = True
    grade_workers: int = 4  # threads driving code-grading subprocesses while the next batch decodes
    # Grade generated code while the next batch decodes? None: only when decoding on an accelerator.
    # On a CPU the sandboxed programs compete with the decoder for the same cores, so the timings would
    # measure the grader too (2 cores, toy preset: sdlm-conf τ=0.7 on toy-code 130 tok/s overlapped, 972 not).
    overlap_grading: bool | None = None
    max_pending_batches: int = 4  # bound on batches decoded but not yet graded


@dataclass
class Prepared:
    cell: Cell
    decoder: Any
    suite: Any
    samples: list
    label: str = ""  # "[i/N] name" for the progress bar


@dataclass
class RunResult:
    run_dir: Path
    rows_written: int = 0
    rows_skipped: int = 0
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False


def prepare(cells: list[Cell], opts: RunOptions) -> list[Prepared]:
    """Build every decoder and suite and read every sample list; raise RunConfigError listing all
    problems. No model is touched here."""
    import decoders
    import suites

    out, problems = [], []
    suite_cache: dict[tuple, tuple] = {}
    for cell in cells:
        try:
            decoder = decoders.get(cell.decoder, **cell.decoder_params())
        except (KeyError, ValueError) as e:
            problems.append(f"{cell.name}: {e}")
            continue
        allow = opts.allow_code_exec or cell.allow_code_exec
        key = (cell.suite, cell.limit, cell.shuffle, cell.seed, allow)
        try:
            if key not in suite_cache:
                suite = suites.get(cell.suite, **_suite_options(suites.get_class(cell.suite), dict(
                    data_dir=opts.data_dir, limit=cell.limit, shuffle=cell.shuffle, seed=cell.seed,
                    allow_code_exec=allow)))
                _check_code_exec(suite, allow)
                suite_cache[key] = (suite, list(suite.samples()))
        except Exception as e:  # missing data file, bad option, code-exec gate
            problems.append(f"{cell.name}: suite {cell.suite!r}: {e}")
            continue
        suite, samples = suite_cache[key]
        if not samples:
            problems.append(f"{cell.name}: suite {cell.suite!r} yielded no samples")
            continue
        out.append(Prepared(cell, decoder, suite, samples))
    if problems:
        raise RunConfigError("cannot start the run:\n  " + "\n  ".join(problems))
    for i, p in enumerate(out, 1):
        p.label = f"[{i}/{len(out)}] {p.cell.name}"
    return out


def _suite_options(cls, options: dict) -> dict:
    """The options this suite's constructor takes: synthetic suites have no data_dir, and passing
    one must not break them."""
    sig = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return options
    return {k: v for k, v in options.items() if k in sig.parameters}


def _check_code_exec(suite, allowed: bool) -> None:
    # the gate is checked before generation (LME PR #4198): no hour of decoding lost to a refusal
    gate = getattr(suite, "check_ready", None)
    if callable(gate):
        gate()
    elif getattr(suite, "needs_code_exec", False) and not allowed:
        raise PermissionError(
            f"suite {suite.name!r} executes model-generated code; pass --allow-code-exec "
            "(or allow_code_exec = true in the sweep) to opt in")


class _StopFlag:
    """First SIGINT: finish the batch in flight, then stop. Second: KeyboardInterrupt."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        print("\npdbench: stopping after the batch in flight (Ctrl-C again to abort now)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _grade(suite, samples: list, texts: list[str]) -> list:
    many = getattr(suite, "grade_many", None)
    if callable(many):
        grades = list(many(list(zip(samples, texts))))
    else:
        grades = [suite.grade(s, t) for s, t in zip(samples, texts)]
    if len(grades) != len(samples):
        raise AssertionError(f"suite returned {len(grades)} grades for {len(samples)} completions")
    return grades


def check_row(row: dict) -> None:
    """DESIGN.md's bookkeeping identities on a stored row; AssertionError names the broken one."""
    acc, n, nf = row["accepted"], row["n_tokens"], row["n_forward"]
    assert sum(acc) == n, f"{row['sample_id']}: sum(accepted)={sum(acc)} != n_tokens={n}"
    assert len(acc) == nf, f"{row['sample_id']}: len(accepted)={len(acc)} != n_forward={nf}"
    assert len(row["step_s"]) == nf, f"{row['sample_id']}: len(step_s)={len(row['step_s'])} != n_forward={nf}"
    assert nf > 0 and math.isclose(row["tpf"], n / nf), f"{row['sample_id']}: tpf={row['tpf']} != {n}/{nf}"
    assert len(row["output_ids"]) == n, f"{row['sample_id']}: len(output_ids) != n_tokens"


def _row(base: dict, sample, prompt: list[int], res, adapter, pos: int) -> dict:
    tokens = [int(t) for t in res.tokens]
    ends_eos = bool(tokens) and tokens[-1] in adapter.eos_ids and res.finish == "eos"
    body = tokens[:-1] if ends_eos else tokens
    n = len(tokens)
    e2e, ttft = float(res.e2e_s), float(res.ttft_s)
    return {
        **base,
        "sample_id": str(sample.id), "pos_in_batch": pos, "prompt_tokens": len(prompt),
        "output_ids": tokens, "output_text": adapter.tokenizer.decode(body, skip_special_tokens=True),
        "finish": res.finish, "n_tokens": n, "n_tokens_excl_eos": len(body), "n_forward": len(res.accepted),
        "tpf": n / len(res.accepted) if res.accepted else float("nan"),
        "accepted": [int(a) for a in res.accepted], "step_s": [float(s) for s in res.step_s],
        "ttft_s": ttft, "e2e_s": e2e, "tpot_s": (e2e - ttft) / (n - 1) if n > 1 else float("nan"),
        "tok_s": n / e2e if e2e > 0 else float("nan"), "finished_at": pd.Timestamp.now("UTC"),
        "correct": None, "extracted": None, "grade_status": None, "grade_detail": None, "grade_extra": None,
    }


def _apply_grades(rows: list[dict], grades: list) -> list[dict]:
    for row, g in zip(rows, grades):
        row.update(correct=bool(g.correct), extracted=None if g.extracted is None else str(g.extracted),
                   grade_status=str(g.status), grade_detail=str(g.detail or ""),
                   grade_extra=json.dumps(getattr(g, "extra", None) or {}, sort_keys=True, default=str))
    return rows


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled or total == 0, leave=True,
                dynamic_ncols=True, file=sys.stderr)


def run_cell(p: Prepared, adapter, run_dir: Path, run_id: str, h: str, stored: set, opts: RunOptions,
             stop: _StopFlag, pool: ThreadPoolExecutor, result: RunResult) -> None:
    cell, decoder, suite = p.cell, p.decoder, p.suite
    params_json = json.dumps(decoder.params(), sort_keys=True, default=str)
    desc = adapter.describe()
    rendered: dict[str, list[int]] = {}
    warmed = not opts.warmup
    overlap = opts.overlap_grading
    if overlap is None:
        overlap = str(desc.get("device", cell.device)).split(":")[0] != "cpu"
    for repeat in range(cell.repeats):
        pending = [s for s in p.samples if (h, str(s.id), repeat) not in stored]
        result.rows_skipped += len(p.samples) - len(pending)
        if not pending or stop.set:
            continue
        for s in pending:
            if str(s.id) not in rendered:
                rendered[str(s.id)] = list(suite.render(s, adapter.tokenizer))
        batches = [pending[i:i + cell.batch_size] for i in range(0, len(pending), cell.batch_size)]
        warmup_s = float("nan")
        if not warmed:  # first-call costs (allocator, kernels, caches) stay out of the timed rows
            # the first batch's prefill and a few decode steps hit the same kernels as the timed run,
            # at a fraction of its cost
            t0 = time.perf_counter()
            decoder.generate(adapter, [rendered[str(s.id)] for s in batches[0]], min(cell.max_new_tokens, WARMUP_TOKENS))
            adapter.synchronize()
            warmup_s, warmed = time.perf_counter() - t0, True
        base = {
            "run_id": run_id, "cell_hash": h, "cell_name": cell.name, "model": cell.model,
            "model_revision": None if desc.get("revision") is None else str(desc.get("revision")),
            "dtype": str(desc.get("dtype", cell.dtype)), "device": str(desc.get("device", cell.device)),
            "decoder": cell.decoder, "decoder_params": params_json, "suite": cell.suite,
            "suite_version": str(suite.version), "prompt_hash": suite.prompt_hash, "repeat": repeat,
            "seed": int(decoder.params().get("seed", cell.seed)), "batch_size": cell.batch_size,
            "max_new_tokens": cell.max_new_tokens,
        }
        started, n_rows, n_tok, wall = manifest.now(), 0, 0, 0.0
        graded: list[dict] = []
        inflight: list[tuple[Future, list[dict]]] = []
        bar = _progress(len(pending), p.label if cell.repeats == 1 else f"{p.label} r{repeat}", opts.progress)

        def flush(block: bool) -> None:
            nonlocal n_rows
            while inflight and (block or inflight[0][0].done() or len(inflight) > opts.max_pending_batches):
                fut, rows = inflight.pop(0)
                rows = _apply_grades(rows, fut.result())
                store.append_samples(run_dir, rows)
                stored.update((h, r["sample_id"], repeat) for r in rows)
                graded.extend(rows)
                n_rows += len(rows)
                result.rows_written += len(rows)
                bar.update(len(rows))
                bar.set_postfix(acc=f"{sum(r['correct'] for r in graded) / len(graded):.3f}",
                                tpf=f"{sum(r['tpf'] for r in graded) / len(graded):.2f}")

        with GpuSampler(index=adapter.device.index or 0, cuda_device=adapter.device) as tel:
            try:
                for bi, batch in enumerate(batches):
                    if stop.set:
                        break
                    prompts = [rendered[str(s.id)] for s in batch]
                    t0 = time.perf_counter()
                    results = decoder.generate(adapter, prompts, cell.max_new_tokens)
                    adapter.synchronize()
                    batch_wall = time.perf_counter() - t0
                    if len(results) != len(batch):
                        raise AssertionError(f"decoder returned {len(results)} results for {len(batch)} prompts")
                    bid = f"{h}-{repeat}-{time.time_ns()}"
                    rows = []
                    for pos, (s, prompt, res) in enumerate(zip(batch, prompts, results)):
                        res.check_bookkeeping()
                        row = _row({**base, "batch_id": bid, "batch_index": bi, "batch_wall_s": batch_wall},
                                   s, prompt, res, adapter, pos)
                        check_row(row)
                        rows.append(row)
                    wall += batch_wall
                    n_tok += sum(r["n_tokens"] for r in rows)
                    texts = [r["output_text"] for r in rows]
                    if getattr(suite, "needs_code_exec", False) and overlap:  # runs while the next batch decodes
                        fut = pool.submit(_grade, suite, batch, texts)
                    else:  # answer extraction is cheap and may rely on the main thread (signals); on CPU
                        # code is graded here too, between timed batches
                        fut = Future()
                        fut.set_result(_grade(suite, batch, texts))
                    inflight.append((fut, rows))
                    flush(block=False)
                flush(block=True)
            finally:
                bar.close()
        status = "interrupted" if stop.set else "done"
        store.append_cells(run_dir, [{
            "run_id": run_id, "cell_hash": h, "cell_name": cell.name, "model": cell.model,
            "decoder": cell.decoder, "decoder_params": params_json, "suite": cell.suite,
            "batch_size": cell.batch_size, "repeat": repeat, "status": status, "n_rows": n_rows,
            "n_tokens": n_tok, "wall_s": wall, "warmup_s": warmup_s, "started_at": started,
            "ended_at": manifest.now(), **tel.result(),
        }])


def _failure(run_dir: Path, run_id: str, result: RunResult, cell: Cell, h: str | None, stage: str,
             exc: BaseException) -> None:
    tb = "".join(traceback.format_exception(exc))
    store.append_failures(run_dir, [{
        "run_id": run_id, "cell_hash": h, "cell_name": cell.name, "repeat": None, "stage": stage,
        "error_type": type(exc).__name__, "message": str(exc)[:2000], "traceback": tb, "failed_at": manifest.now(),
    }])
    result.failures.append(f"{cell.name}: {type(exc).__name__}: {exc}")
    print(f"pdbench: cell {cell.name} FAILED at {stage}: {type(exc).__name__}: {exc}", file=sys.stderr)
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # an OOM in one cell should not starve the next
    except Exception:
        pass


def default_loader(cell: Cell):
    from harness.models import load_model

    return load_model(cell.model, device=None if cell.device == "auto" else cell.device,
                      dtype=None if cell.dtype == "auto" else cell.dtype, add_mask_token=cell.add_mask_token,
                      family=cell.family or None)


def save_cells(run_dir: Path, cells: list[Cell], sweep_text: str | None) -> None:
    """What a --resume re-runs: the resolved cell list (and the sweep text, for people)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "cells.json").write_text(json.dumps([c.to_dict() for c in cells], indent=1))
    if sweep_text is not None:
        (Path(run_dir) / "sweep.toml").write_text(sweep_text)


def load_cells(run_dir: Path) -> list[Cell]:
    path = Path(run_dir) / "cells.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a pdbench run directory (no cells.json)")
    return [Cell.from_dict(d) for d in json.loads(path.read_text())]


def run(cells: list[Cell], run_dir: Path, opts: RunOptions | None = None, *, argv: list[str] | None = None,
        sweep_file: str | None = None, sweep_text: str | None = None,
        loader: Callable[[Cell], Any] = default_loader) -> RunResult:
    opts = opts or RunOptions()
    run_dir = Path(run_dir)
    prepared = prepare(cells, opts)  # raises before any model loads
    save_cells(run_dir, cells, sweep_text)
    run_id = run_dir.name
    result = RunResult(run_dir)
    warmup = (f"one untimed warm-up per cell before its timed batches: the first batch, {WARMUP_TOKENS} new "
              "tokens (not stored)") if opts.warmup else "none"
    session = manifest.start_session(
        run_dir, argv=argv if argv is not None else sys.argv, sweep_file=sweep_file, cells=cells,
        seeds=[c.seed for c in cells], data_dir=opts.data_dir,
        notes={"warmup_enabled": opts.warmup, "warmup": warmup})
    stored = store.stored_keys(run_dir)
    groups: OrderedDict[tuple, list[Prepared]] = OrderedDict()
    for p in prepared:
        groups.setdefault(p.cell.model_key(), []).append(p)
    status = "done"
    try:
        with _StopFlag() as stop, ThreadPoolExecutor(opts.grade_workers, thread_name_prefix="pdbench-grade") as pool:
            for key, group in groups.items():
                if stop.set:
                    break
                try:
                    adapter = loader(group[0].cell)
                except Exception as e:
                    for p in group:
                        _failure(run_dir, run_id, result, p.cell, None, "load_model", e)
                    continue
                model_desc = None
                for p in group:
                    if stop.set:
                        break
                    h = None
                    try:
                        p.decoder.check_model(adapter)
                        if model_desc is None:  # once per model: the fingerprint reads every tensor
                            model_desc = describe_for_hash(adapter)
                            manifest.record_model(run_dir, session, model_desc)
                        h = cell_hash(p.cell, p.decoder, p.suite, model_desc)
                        run_cell(p, adapter, run_dir, run_id, h, stored, opts, stop, pool, result)
                    except Exception as e:
                        _failure(run_dir, run_id, result, p.cell, h, "run", e)
                del adapter  # one model in memory at a time
            result.interrupted = stop.set
    except KeyboardInterrupt:
        result.interrupted, status = True, "aborted"
        raise
    finally:
        store.compact(run_dir)
        if status != "aborted":
            status = "interrupted" if result.interrupted else ("done_with_failures" if result.failures else "done")
        manifest.end_session(run_dir, session, status, rows_written=result.rows_written,
                             rows_skipped=result.rows_skipped, n_failures=len(result.failures))
    return result
