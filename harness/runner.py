"""Run a list of cells into a run directory: one model load per model, batches through the decoders,
grading, one checked row per sample appended to the store as each batch finishes.

The steps, each a function that returns a value:
  prepare(cells, opts)          every decoder built once, every suite's samples read, the code-exec
                                gate passed: all problems raised together before any model loads
  plan(p, stored)               the timed batches (jobs) a cell still owes, per repeat
  rotation(jobs, interleave)    the order jobs run in: cells that share a model, suite, batch size and
                                token budget take turns batch by batch, so drift in the machine's load hits them
                                alike and batch k of every cell (the same samples) is timed close together
  measure.run_job(...)          warm-up (a cell's first job), the timed generate() (K times with
                                --timing-repeats: the median is kept, outputs must repeat exactly),
                                the checks, the rows
  group.decode_group(...)       a loaded model's cells as a stream of events (hashes, graded
                                batches, failures), here or inside a Ray task (harness/distributed.py)
  group.Sink                    the one writer: rows, failures, cells.parquet, where cells ran
  tally.cell_records(...)       one cells.parquet row per cell and repeat run in this session

A cell that fails at run time (exception, CUDA OOM, broken bookkeeping) goes to failures.parquet and
the sweep goes on without its remaining batches. Ctrl-C (or SIGTERM) stops after the batch in flight;
a second one aborts at once. Either way the store stays consistent because every batch is one atomically
renamed part file, and a re-run skips the (cell_hash, sample_id, repeat) rows already stored.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import traceback
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import manifest, store
from harness.cells import Cell
from harness.models import check_model_ref
from harness.sweep import FROM_FLAGS, flag_for

class RunConfigError(ValueError):
    """Problems found before any model loads; lists them all."""


@dataclass
class RunOptions:
    data_dir: str | None = None
    allow_code_exec: bool = False  # the CLI's --allow-code-exec; a cell may also opt in
    warmup: bool = True  # one untimed batch per cell (WARMUP_TOKENS new tokens)
    progress: bool = True
    interleave: bool = True  # rotate batches across cells that share model, suite, batch size and budget
    timing_repeats: int = 1  # run each timed batch K times, keep the median wall time
    threads: int | str = "auto"  # torch CPU threads; "auto": see measure.choose_threads
    grade_workers: int = 4  # threads driving code-grading subprocesses while the next batch decodes
    # Grade generated code while the next batch decodes? None: only when decoding on an accelerator.
    # On a CPU the sandboxed programs compete with the decoder for the same cores, so the timings would
    # measure the grader too (2 cores, toy preset: sdlm-conf τ=0.7 on toy-code 130 tok/s overlapped, 972 not).
    overlap_grading: bool | None = None
    max_pending_batches: int = 4  # bound on batches decoded but not yet graded
    # where the cells run (harness/distributed.py): "local", or "ray" with a cluster address ("" or None:
    # a local Ray started for the run; "auto", "ray://host:port": an existing cluster)
    executor: str = "local"
    ray_address: str | None = None
    num_gpus: float | None = None  # GPUs per Ray task; None: 1 for CUDA cells, 0 for CPU cells
    max_retries: int = 2  # Ray re-runs a task whose worker or node died at most this often


@dataclass
class Prepared:
    cell: Cell
    decoder: Any
    suite: Any
    samples: list
    label: str = ""  # "[i/N] name" for progress lines
    index: int = -1  # position in the run's cell list: how events from a worker name their cell
    # known once the model is loaded (the weights are part of the hash):
    hash: str | None = None
    params_json: str = ""  # the built decoder's parameters, defaults included
    model_fields: dict = field(default_factory=dict)  # model_revision, dtype, device of every row


@dataclass
class Job:
    """One timed batch: `samples` of cell `p`, repeat `repeat`, the `index`-th batch of that repeat."""
    p: Prepared
    repeat: int
    index: int
    samples: list


@dataclass
class RunResult:
    run_dir: Path
    rows_written: int = 0
    rows_skipped: int = 0
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False


def prepare(cells: list[Cell], opts: RunOptions) -> list[Prepared]:
    """Build every decoder and suite and read every sample list; raise RunConfigError listing all
    problems, each named by where the cell was defined. No model is touched here."""
    import decoders
    import suites

    out, problems = [], []
    suite_cache: dict[tuple, tuple] = {}
    checked_models: dict[str, str | None] = {}
    measured: dict[tuple, str] = {}
    for cell in cells:
        where = cell.origin or cell.name
        if cell.model not in checked_models:
            try:
                check_model_ref(cell.model)
                checked_models[cell.model] = None
            except ValueError as e:
                checked_models[cell.model] = str(e)
                problems.append(f"{where}: {e}")
        try:
            decoder = decoders.get(cell.decoder, **cell.decoder_params())
        except KeyError as e:
            problems.append(f"{where}: {e.args[0]}")
            continue
        except decoders.DecoderConfigError as e:
            if e.param and cell.origin == FROM_FLAGS:
                problems.append(f"{flag_for(('params', e.param))}: {e}")
            else:
                problems.append(f"{where}{f' params.{e.param}' if e.param else ''}: {e}")
            continue
        allow = opts.allow_code_exec or cell.allow_code_exec
        key = (cell.suite, cell.limit, cell.shuffle, cell.seed, allow)
        try:
            if key not in suite_cache:
                suite = suites.get(cell.suite, data_dir=opts.data_dir, limit=cell.limit, shuffle=cell.shuffle,
                                   seed=cell.seed, allow_code_exec=allow)
                suite.check_ready()  # the code-exec gate: no hour of decoding lost to a refusal
                suite_cache[key] = (suite, list(suite.samples()))
        except Exception as e:  # missing data file, bad option, code-exec gate
            problems.append(f"{where}: suite {cell.suite!r}: {e}")
            continue
        suite, samples = suite_cache[key]
        if not samples:
            problems.append(f"{where}: suite {cell.suite!r} yielded no samples")
            continue
        # what the cell hash will be made of, less the model's fingerprint (not loaded yet): two cells
        # alike here would store the same rows under one hash
        same = (cell.model_key(), cell.decoder, json.dumps(decoder.params(), sort_keys=True, default=str),
                cell.suite, cell.shuffle, cell.seed if cell.shuffle else None, cell.batch_size, cell.max_new_tokens)
        if same in measured:
            problems.append(f"{where}: cell {cell.name!r} measures what cell {measured[same]!r} measures (same "
                            "model, decoder parameters, suite, batch size and token budget); drop one of them")
            continue
        measured[same] = cell.name
        out.append(Prepared(cell, decoder, suite, samples))
    if problems:
        raise RunConfigError("cannot start the run:\n  " + "\n  ".join(problems))
    for i, p in enumerate(out):
        p.label, p.index = f"[{i + 1}/{len(out)}] {p.cell.name}", i
    return out


def plan(p: Prepared, stored: set) -> tuple[list[Job], int]:
    """The jobs cell `p` still owes (rows already stored are skipped), and how many rows it skips."""
    jobs, skipped = [], 0
    for repeat in range(p.cell.repeats):
        pending = [s for s in p.samples if (p.hash, str(s.id), repeat) not in stored]
        skipped += len(p.samples) - len(pending)
        size = p.cell.batch_size
        jobs += [Job(p, repeat, i, pending[k:k + size]) for i, k in enumerate(range(0, len(pending), size))]
    return jobs, skipped


def rotation(per_cell: list[list[Job]], interleave: bool) -> list[Job]:
    """The run order. Interleaved: cells that share a suite, batch size and token budget (the model is
    shared already) run in turns, job k of each, then job k+1; groups follow one another in the
    order their first cell was given. Otherwise each cell runs all its jobs in turn."""
    if not interleave:
        return [job for jobs in per_cell for job in jobs]
    groups: OrderedDict[tuple, list[list[Job]]] = OrderedDict()
    for jobs in per_cell:
        if jobs:
            c = jobs[0].p.cell
            groups.setdefault((c.suite, c.batch_size, c.max_new_tokens), []).append(jobs)
    order = []
    for members in groups.values():
        for k in range(max(len(jobs) for jobs in members)):
            order += [jobs[k] for jobs in members if k < len(jobs)]
    return order


class _StopFlag:
    """First SIGINT (Ctrl-C) or SIGTERM (a batch scheduler's notice): finish the batch in flight, then
    stop. A second one: KeyboardInterrupt, at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.set = False
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        print(f"\npdbench: {signal.Signals(signum).name}: stopping after the batch in flight "
              "(Ctrl-C again to abort now)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def failure_fields(exc: BaseException) -> tuple[str, str, str]:
    """(error type, message, traceback) of an exception: plain strings, so a failure can travel from a
    Ray worker to the driver that stores it."""
    return type(exc).__name__, str(exc)[:2000], "".join(traceback.format_exception(exc))


def record_failure(run_dir: Path, run_id: str, result: RunResult, cell: Cell, h: str | None, stage: str,
                   error_type: str, message: str, tb: str, repeat: int | None = None) -> None:
    store.append_failures(run_dir, [{
        "run_id": run_id, "cell_hash": h, "cell_name": cell.name, "repeat": repeat, "stage": stage,
        "error_type": error_type, "message": message, "traceback": tb, "failed_at": manifest.now(),
    }])
    result.failures.append(f"{cell.name}: {error_type}: {message}")
    print(f"pdbench: cell {cell.name} FAILED at {stage}: {error_type}: {message}", file=sys.stderr)


def default_loader(cell: Cell):
    from harness.models import load_model

    return load_model(cell.model, device=None if cell.device == "auto" else cell.device,
                      dtype=None if cell.dtype == "auto" else cell.dtype, add_mask_token=cell.add_mask_token,
                      family=cell.family or None)


# the RunOptions a --resume keeps (flags still win: a Ray run can be resumed locally and vice versa)
SETTINGS = ("interleave", "timing_repeats", "threads", "executor", "ray_address", "num_gpus", "max_retries")


def save_cells(run_dir: Path, cells: list[Cell], sweep_text: str | None, opts: RunOptions) -> None:
    """What a --resume re-runs: the resolved cell list and how they ran (and the sweep text, for people)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "cells.json").write_text(json.dumps([c.to_dict() for c in cells], indent=1))
    (Path(run_dir) / "run_settings.json").write_text(json.dumps({k: getattr(opts, k) for k in SETTINGS}))
    if sweep_text is not None:
        (Path(run_dir) / "sweep.toml").write_text(sweep_text)


def load_settings(run_dir: Path) -> dict:
    path = Path(run_dir) / "run_settings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load_cells(run_dir: Path) -> list[Cell]:
    path = Path(run_dir) / "cells.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a pdbench run directory (no cells.json)")
    return [Cell.from_dict(d) for d in json.loads(path.read_text())]


def run(cells: list[Cell], run_dir: Path, opts: RunOptions | None = None, *, argv: list[str] | None = None,
        sweep_file: str | None = None, sweep_text: str | None = None,
        loader: Callable[[Cell], Any] = default_loader, notes: dict | None = None) -> RunResult:
    from harness import group

    opts = opts or RunOptions()
    run_dir = Path(run_dir)
    prepared = prepare(cells, opts)  # raises before any model loads
    cluster = None
    if opts.executor == "ray":
        from harness import distributed

        cluster = distributed.connect(opts, prepared)  # raises RunConfigError (no Ray, no cluster): still no run directory
    save_cells(run_dir, cells, sweep_text, opts)
    run_id = run_dir.name
    result = RunResult(run_dir)
    from harness.measure import WARMUP_TOKENS

    warmup = (f"one untimed warm-up per cell before its timed batches: the first batch, {WARMUP_TOKENS} new "
              "tokens (not stored)") if opts.warmup else "none"
    session = manifest.start_session(
        run_dir, argv=argv if argv is not None else sys.argv, sweep_file=sweep_file, cells=cells,
        seeds=[c.seed for c in cells], data_dir=opts.data_dir,
        notes={"warmup_enabled": opts.warmup, "warmup": warmup, "interleave": opts.interleave,
               "timing_repeats": opts.timing_repeats, "threads_requested": opts.threads,
               "executor": opts.executor, **(cluster.describe() if cluster else {}), **(notes or {})})
    stored = store.stored_keys(run_dir)
    status, sink = "done", None
    try:
        with _StopFlag() as stop, ThreadPoolExecutor(opts.grade_workers, thread_name_prefix="pdbench-grade") as pool:
            sink = group.Sink(run_dir, run_id, prepared, stored, result, group.Progress("pdbench", opts.progress))
            ended_early = True  # until the decode loop returns: an exception leaves its cells unfinished
            try:
                if cluster is not None:
                    cluster.run(prepared, sink, run_id, session, opts, stop, loader)
                else:
                    _run_local(prepared, sink, run_id, session, stored, opts, stop, pool, loader)
                ended_early = False
            finally:
                sink.progress.close()
                sink.flush_cells(interrupted=stop.set or ended_early)
            result.interrupted = stop.set
    except KeyboardInterrupt:
        result.interrupted, status = True, "aborted"
        raise
    except BaseException:
        status = "crashed"  # what was stored stays and resumes; the report says the session did not finish
        raise
    finally:
        if cluster is not None:
            cluster.close()
        store.compact(run_dir)
        if status == "done":
            status = "interrupted" if result.interrupted else ("done_with_failures" if result.failures else "done")
        manifest.end_session(run_dir, session, status, rows_written=result.rows_written,
                             rows_skipped=result.rows_skipped, n_failures=len(result.failures),
                             placement=sink.placement if sink else {}, models=sink.models if sink else [],
                             threads={p.cell.model: sink.threads[p.hash] for p in prepared
                                      if sink and p.hash in sink.threads},
                             **(cluster.session_log() if cluster else {}))
    return result


def _run_local(prepared: list[Prepared], sink, run_id: str, session: int, stored: set, opts: RunOptions,
               stop: _StopFlag, pool: ThreadPoolExecutor, loader: Callable[[Cell], Any]) -> None:
    """In this process: one model loaded at a time, all the cells that share it decoded in rotation."""
    from harness.group import decode_group

    groups: OrderedDict[tuple, list[Prepared]] = OrderedDict()
    for p in prepared:
        groups.setdefault(p.cell.model_key(), []).append(p)
    for members in groups.values():
        if stop.set:
            break
        try:
            adapter = loader(members[0].cell)
        except Exception as e:
            for p in members:
                sink.fail(p, None, "load_model", *failure_fields(e))
            continue
        sink.take_all(decode_group(members, adapter, run_id, session, stored, opts, pool=pool, stop=stop))
        sink.flush_cells([p.index for p in members], interrupted=stop.set)
        del adapter  # one model in memory at a time
