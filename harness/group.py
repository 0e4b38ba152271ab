"""One loaded model's cells, decoded as a stream of events, and the one writer that stores them.

`decode_group()` runs wherever the model is loaded — in this process, or inside a Ray task
(harness/distributed.py) — and yields events; `Sink` takes them in the driver and is the only code
that writes the run directory. The measurement (threads, hashes, plan, rotation, warm-up, timed
generate, checks, grading) is the same code either way; only where the events go differs.

The stream has a fixed shape, one event per *slot*: first one per cell of the group (CellReady, or
CellFailed when the model does not suit the decoder), then one per planned job in rotation order
(BatchDone, CellFailed, or JobSkipped). A retried Ray task replays its stream from the start and Ray
hands the driver only the items past the ones it already consumed, matched by position, so a replay
must yield the same slots whatever fails or is skipped this time (JobSkipped keeps the count).

Grading runs with the decoding, before the rows leave the worker: code suites execute programs in
the sandbox, and on a cluster that load spreads over the nodes instead of piling up on the driver.
The rule for *when* it runs (inline between timed batches on a CPU, overlapped with the next batch
on an accelerator) is RunOptions.overlap_grading's, unchanged.
"""

from __future__ import annotations

import json
import math
import sys
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from harness import manifest, store
from harness.cells import cell_hash, describe_for_hash
from harness.rows import apply_grades, grade
from harness.measure import choose_threads, run_job
from harness.runner import Prepared, RunOptions, RunResult, failure_fields, plan, record_failure, rotation
from harness.tally import CellTally, cell_records
from harness.telemetry import placement


@dataclass
class CellReady:
    """The model suits cell `cell` (its index in the run): its hash and the jobs it owes."""
    cell: int
    hash: str
    params_json: str
    model_fields: dict
    threads: int
    owed: int  # rows this session will decode
    skipped: int  # rows already stored
    model_desc: dict  # what the hash was computed from: architecture, dtype, family, weights fingerprint


@dataclass
class CellFailed:
    cell: int
    hash: str | None
    stage: str  # check_model | run | grade | load_model | ray
    error_type: str
    message: str
    traceback: str
    repeat: int | None = None


@dataclass
class BatchDone:
    """A timed, checked and graded batch: its rows as a SAMPLE_SCHEMA table, and what the machine did."""
    cell: int
    hash: str
    repeat: int
    batch_index: int
    table: pa.Table
    wall_s: float
    warmup_s: float
    gpu: dict
    cpu: dict
    forward_s: list[float]
    started_at: str
    node: str
    accelerator: str


@dataclass
class JobSkipped:
    """A planned job not decoded: its cell failed earlier, or (in a retried task) its rows are stored."""
    cell: int
    reason: str


def _ready(group: list[Prepared], adapter, stored: set, threads: int) -> Iterator:
    """Hash and plan every cell; yields (slot event, jobs or None) per cell."""
    model_desc = desc = None
    for p in group:
        try:
            p.decoder.check_model(adapter)
            if model_desc is None:  # once per model: the fingerprint reads every tensor
                model_desc = describe_for_hash(adapter)
                desc = adapter.describe()
            p.hash = cell_hash(p.cell, p.decoder, p.suite, model_desc)
            p.params_json = json.dumps(p.decoder.params(), sort_keys=True, default=str)
            p.model_fields = {"model_revision": None if desc.get("revision") is None else str(desc["revision"]),
                              "dtype": str(desc.get("dtype", p.cell.dtype)),
                              "device": str(desc.get("device", p.cell.device))}
        except Exception as e:
            yield CellFailed(p.index, p.hash, "check_model", *failure_fields(e)), None
            continue
        jobs, skipped = plan(p, stored)
        yield CellReady(p.index, p.hash, p.params_json, p.model_fields, threads,
                        sum(len(j.samples) for j in jobs), skipped, model_desc), jobs


def decode_group(group: list[Prepared], adapter, run_id: str, session: int, stored: set, opts: RunOptions, *,
                 pool=None, stop=None, already: Callable | None = None) -> Iterator:
    """Every cell sharing one loaded model, as events (see the module docstring for the slots).

    stored   the (cell_hash, sample_id, repeat) keys to plan around (a Ray task gets a snapshot)
    stop     a flag object whose `.set` ends the stream early (local Ctrl-C); Ray cancels instead
    already  hashes -> (stored keys, failed hashes) known *now*: a retried task skips those jobs
    """
    import torch

    threads = choose_threads(opts.threads, adapter)
    torch.set_num_threads(threads)
    where = placement(adapter.device)
    per_cell = []
    for event, jobs in _ready(group, adapter, stored, threads):
        yield event
        if jobs is not None:
            per_cell.append(jobs)
    done_keys, failed = already([jobs[0].p.hash for jobs in per_cell if jobs]) if already else (set(), set())
    failed = set(failed)
    overlap = opts.overlap_grading if opts.overlap_grading is not None else adapter.device.type != "cpu"
    pending: list[tuple[Future, object]] = []  # in slot order: graded batches, failures, skips
    rendered: dict[str, dict] = {}
    warmed: set[str] = set() if opts.warmup else {jobs[0].p.hash for jobs in per_cell if jobs}

    def ready_now(block: bool) -> Iterator:
        while pending and (block or pending[0][0].done() or len(pending) > opts.max_pending_batches):
            fut, item = pending.pop(0)
            if not isinstance(item, tuple):
                yield item
                continue
            job, d = item
            try:
                rows = apply_grades(d.rows, fut.result())
                table = store.to_table(rows, store.SAMPLE_SCHEMA)
            except Exception as e:
                failed.add(job.p.hash)
                yield CellFailed(job.p.index, job.p.hash, "grade", *failure_fields(e), repeat=job.repeat)
                continue
            yield BatchDone(job.p.index, job.p.hash, job.repeat, job.index, table, d.wall_s, d.warmup_s, d.gpu,
                            d.cpu, d.forward_s, d.started_at, where["node"], where["accelerator"])

    def now(item) -> None:
        fut = Future()
        fut.set_result(None)
        pending.append((fut, item))

    for job in rotation(per_cell, opts.interleave):
        if stop is not None and stop.set:
            break
        p = job.p
        if p.hash in failed:
            now(JobSkipped(p.index, "cell failed"))
        elif all((p.hash, str(s.id), job.repeat) in done_keys for s in job.samples):
            now(JobSkipped(p.index, "stored"))
        else:
            try:
                texts = rendered.setdefault(p.hash, {})
                for s in job.samples:
                    if str(s.id) not in texts:
                        texts[str(s.id)] = list(p.suite.render(s, adapter.tokenizer))
                started = manifest.now()
                d = run_job(job, adapter, run_id, session, texts, p.hash not in warmed, opts)
                d.started_at = started
                for r in d.rows:
                    r.update(where)
                warmed.add(p.hash)
            except Exception as e:
                failed.add(p.hash)
                now(CellFailed(p.index, p.hash, "run", *failure_fields(e), repeat=job.repeat))
                _free_accelerator()
            else:
                suite, texts_out = p.suite, [r["output_text"] for r in d.rows]
                if overlap and pool is not None and getattr(suite, "needs_code_exec", False):
                    fut = pool.submit(grade, suite, job.samples, texts_out)  # runs while the next batch decodes
                else:  # answer extraction is cheap and may rely on the main thread (signals); on CPU code
                    fut = Future()  # is graded here too, between timed batches
                    try:
                        fut.set_result(grade(suite, job.samples, texts_out))
                    except Exception as e:
                        fut.set_exception(e)
                pending.append((fut, (job, d)))
        yield from ready_now(block=False)
    yield from ready_now(block=True)


def _free_accelerator() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # an OOM in one cell should not starve the next
    except Exception:
        pass


class Progress:
    """A bar on a terminal; in a log (no terminal), one line per finished cell instead of bar updates."""

    def __init__(self, desc: str, enabled: bool):
        self.enabled, self.tty = enabled, sys.stderr.isatty()
        self.remaining: dict[str, int] = {}
        self.done: dict[str, list[tuple[bool, int, int]]] = {}
        self.bar = None
        if enabled and self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, desc=desc, unit="sample", dynamic_ncols=True, file=sys.stderr)

    def expect(self, label: str, n: int) -> None:
        self.remaining[label] = self.remaining.get(label, 0) + n
        if self.bar is not None and n:
            self.bar.total += n
            self.bar.refresh()

    def batch_done(self, label: str, table: pa.Table) -> None:
        cols = table.select(["correct", "n_tokens", "n_forward"]).to_pydict()
        self.done.setdefault(label, []).extend(zip(cols["correct"], cols["n_tokens"], cols["n_forward"]))
        self.remaining[label] -= table.num_rows
        if self.bar is not None:
            self.bar.update(table.num_rows)
            self.bar.set_postfix_str(label, refresh=False)
        elif self.enabled and self.remaining[label] == 0:
            done = self.done[label]
            acc = sum(bool(c) for c, _, _ in done) / len(done)
            tpf = sum(t for _, t, _ in done) / sum(f for _, _, f in done)
            print(f"pdbench: {label}: {len(done)} rows, accuracy {acc:.3f}, TPF {tpf:.2f}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Sink:
    """The one writer. Takes events (from this process or from Ray workers) and stores them: rows appended
    as one part file per batch, minus any key already stored (a retried task can re-send a batch);
    failures; per-(cell, repeat) tallies that become cells.parquet rows; where each cell ran."""
    run_dir: Path
    run_id: str
    prepared: list[Prepared]
    stored: set
    result: RunResult
    progress: Progress
    tallies: dict[tuple, CellTally] = field(default_factory=dict)
    placement: dict[str, list[str]] = field(default_factory=dict)  # cell name -> ["node accelerator", ...]
    threads: dict[str, int] = field(default_factory=dict)  # cell hash -> torch threads it ran with
    models: list[dict] = field(default_factory=list)  # each loaded model's description, once
    duplicates: int = 0  # rows dropped because their key was stored already

    def take_all(self, events: Iterable) -> None:
        for ev in events:
            self.take(ev)

    def take(self, ev) -> None:
        p = self.prepared[ev.cell]
        if isinstance(ev, CellReady):
            p.hash, p.params_json, p.model_fields = ev.hash, ev.params_json, ev.model_fields
            self.result.rows_skipped += ev.skipped
            self.progress.expect(p.label, ev.owed)
            self.threads[ev.hash] = ev.threads
            if ev.model_desc not in self.models:
                self.models.append(ev.model_desc)
        elif isinstance(ev, CellFailed):
            self.fail(p, ev.hash, ev.stage, ev.error_type, ev.message, ev.traceback, ev.repeat)
        elif isinstance(ev, BatchDone):
            self._batch(p, ev)

    def _batch(self, p: Prepared, ev: BatchDone) -> None:
        t = ev.table
        keys = list(zip(t["cell_hash"].to_pylist(), t["sample_id"].to_pylist(), t["repeat"].to_pylist()))
        fresh = [k not in self.stored for k in keys]
        if not all(fresh):
            self.duplicates += fresh.count(False)
            t = t.filter(pa.array(fresh))
        store.append_sample_table(self.run_dir, t)
        self.stored.update(k for k, f in zip(keys, fresh) if f)
        self.result.rows_written += t.num_rows
        tally = self._tally(ev.hash, ev.repeat, ev.started_at)
        tally.threads = self.threads.get(ev.hash, tally.threads)
        tally.node, tally.accelerator = ev.node, ev.accelerator
        if not math.isnan(ev.warmup_s):
            tally.warmup_s = ev.warmup_s
        tally.walls.append(ev.wall_s)
        tally.n_rows += t.num_rows
        tally.n_tokens += sum(t["n_tokens"].to_pylist())
        tally.gpu.append(ev.gpu)
        tally.cpu.append(ev.cpu)
        tally.forward_s += ev.forward_s
        where = f"{ev.node} {ev.accelerator}"
        if where not in self.placement.setdefault(p.cell.name, []):
            self.placement[p.cell.name].append(where)
        self.progress.batch_done(p.label, t)

    def _tally(self, h: str, repeat: int, started_at: str = "") -> CellTally:
        return self.tallies.setdefault((h, repeat), CellTally(started_at=started_at or manifest.now()))

    def fail(self, p: Prepared, h: str | None, stage: str, error_type: str, message: str, tb: str,
             repeat: int | None = None) -> None:
        record_failure(self.run_dir, self.run_id, self.result, p.cell, h, stage, error_type, message, tb, repeat)
        if h is not None and repeat is not None:
            self._tally(h, repeat).status = "failed"
        elif h is not None:  # the whole cell (its task died): every repeat that ran in this session
            for (th, _), t in self.tallies.items():
                if th == h:
                    t.status = "failed"

    def flush_cells(self, cells: Iterable[int] | None = None, interrupted: bool = False) -> None:
        """cells.parquet rows for these cells' tallies (all when None), then forget them."""
        hashes = None if cells is None else {self.prepared[i].hash for i in cells}
        keys = [k for k in self.tallies if hashes is None or k[0] in hashes]
        if not keys:
            return
        done = {k: self.tallies.pop(k) for k in keys}
        if interrupted:
            for t in done.values():
                if t.status == "done":
                    t.status = "interrupted"
        store.append_cells(self.run_dir, cell_records(done, {p.hash: p for p in self.prepared if p.hash}, self.run_id))
