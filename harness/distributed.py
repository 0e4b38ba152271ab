"""`pdbench run --ray [ADDRESS]` / `executor = "ray"`: the cells of a run as Ray tasks.

What runs where:
  driver   prepare() (every check, before any model loads) as for a local run; then one Ray task per
           group of cells that are timed together — same model, suite, batch size and token budget
           (the rotation's unit, so AR and the decoders it is compared with share a device) — and it is
           the one writer: group.Sink stores what the tasks stream back.
  task     a streaming generator (Ray's own; no queue or protocol of ours): loads the model once,
           runs group.decode_group() — the same code as a local run — and yields its events, one
           Arrow table of graded rows per finished batch, through Ray's object store.

Faults: a task whose worker or node dies is re-run by Ray (`max_retries`, default 2). A re-run gets
the first attempt's arguments, so it plans the same slots and Ray delivers only those past the ones
the driver already took, matched by position (group.py). To avoid decoding those again, the re-run
asks a small Ray actor (Ledger) which keys the driver stored since and skips those jobs; the driver
still drops any row whose key it has stored. A task that fails for good fails the cells it still owed
(failures.parquet) and the others go on. Ctrl-C cancels the tasks; every stored batch is whole.
"""

from __future__ import annotations

import os
import platform
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from harness import manifest
from harness.runner import Prepared, RunConfigError, RunOptions, failure_fields

INSTALL = 'pip install -e ".[ray]"  (or: pip install "ray>=2.20")'
DRAIN_S = 10.0  # after a Ctrl-C, how long batches already decoded may still arrive


def require_ray():
    try:
        import ray
    except ImportError:
        raise RunConfigError(f'--ray / executor = "ray" needs Ray, which is not installed here. Install it with:\n'
                             f"  {INSTALL}") from None
    return ray


def code_env() -> dict:
    """The runtime_env that ships this pdbench to every worker, so a cluster runs exactly the driver's
    code (the cell hash covers the code: other code would hash, plan and store differently). From a
    source tree: the tree (Ray honours .gitignore, so results/ stays home); from an installed wheel:
    the packages themselves."""
    import harness

    root = Path(harness.__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "decoders").is_dir():
        return {"working_dir": str(root)}
    import decoders
    import pdbench_registry
    import suites

    return {"py_modules": [harness, decoders, suites, pdbench_registry]}


def task_groups(prepared: list[Prepared]) -> list[list[Prepared]]:
    """One task per model x suite x batch size x token budget: the cells the rotation interleaves."""
    groups: OrderedDict[tuple, list[Prepared]] = OrderedDict()
    for p in prepared:
        c = p.cell
        groups.setdefault((c.model_key(), c.suite, c.batch_size, c.max_new_tokens), []).append(p)
    return list(groups.values())


def gpus_for(members: list[Prepared], opts: RunOptions, cluster_gpus: float) -> float:
    """GPUs a task asks for: as set (num_gpus), else 1 for a CUDA cell (and for device "auto" on a
    cluster with GPUs), else 0."""
    if opts.num_gpus is not None:
        return opts.num_gpus
    device = members[0].cell.device
    return 1 if device.startswith("cuda") or (device == "auto" and cluster_gpus > 0) else 0


class Ledger:
    """A Ray actor: the keys the driver stored and the cells that failed in this session, and every task
    attempt. A re-run task gets its first attempt's arguments; this is how it learns what is done."""

    def __init__(self):
        self.keys: set[tuple] = set()
        self.failed: set[str] = set()
        self.attempts: dict[str, list[dict]] = {}

    def begin(self, task: str, node: str, pid: int) -> int:
        self.attempts.setdefault(task, []).append({"node": node, "pid": pid, "started_at": manifest.now()})
        return len(self.attempts[task]) - 1

    def add(self, keys: list[tuple]) -> None:
        self.keys.update(tuple(k) for k in keys)

    def fail(self, h: str) -> None:
        self.failed.add(h)

    def known(self, task: str, hashes: list[str]) -> tuple[set, set]:
        hs = set(hashes)
        keys = {k for k in self.keys if k[0] in hs}
        self.attempts[task][-1]["rows_already_stored"] = len(keys)  # what this attempt will not decode again
        return keys, self.failed & hs

    def log(self) -> dict[str, list[dict]]:
        return self.attempts


def keys_table(stored: set) -> pa.Table:
    h, s, r = zip(*stored) if stored else ((), (), ())
    return pa.table({"cell_hash": pa.array(h, pa.string()), "sample_id": pa.array(s, pa.string()),
                     "repeat": pa.array(r, pa.int64())})


def decode_task(members: list[Prepared], keys: pa.Table, ledger, task: str, run_id: str, session: int,
                opts: RunOptions, loader, cwd: str):
    """The Ray task (a streaming generator): one model load, then group.decode_group's events."""
    import ray

    from harness.group import CellFailed, decode_group

    ray.get(ledger.begin.remote(task, platform.node(), os.getpid()))
    home = os.getcwd()
    if os.path.isdir(cwd):  # relative model paths mean what they mean on the driver (same host, shared FS)
        os.chdir(cwd)
    try:
        cell = members[0].cell
        if cell.device.startswith("cuda:") and ray.get_gpu_ids():
            cell = replace(cell, device="cuda")  # Ray made this task's GPU the only one visible: cuda:0
        try:
            adapter = loader(cell)
        except Exception as e:
            for p in members:
                yield CellFailed(p.index, None, "load_model", *failure_fields(e))
            return
        stored = set(zip(keys["cell_hash"].to_pylist(), keys["sample_id"].to_pylist(), keys["repeat"].to_pylist()))

        def already(hashes):
            return ray.get(ledger.known.remote(task, hashes))

        with ThreadPoolExecutor(opts.grade_workers, thread_name_prefix="pdbench-grade") as pool:
            yield from decode_group(members, adapter, run_id, session, stored, opts, pool=pool, already=already)
    finally:
        os.chdir(home)


@dataclass
class _Task:
    key: str
    members: list[Prepared]
    gpus: float
    owed: dict[int, int] = field(default_factory=dict)  # cell index -> rows still to come
    failed: set[int] = field(default_factory=set)
    status: str = "running"


@dataclass
class Cluster:
    """A connection to Ray for one run: submits the tasks, feeds the Sink, logs the attempts."""
    ray: Any
    address: str
    started_here: bool
    tasks: list[_Task] = field(default_factory=list)
    attempts: dict[str, list[dict]] = field(default_factory=dict)

    def describe(self) -> dict:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return {"ray": {"address": self.address or "local (started for this run)", "version": self.ray.__version__,
                        "nodes": sorted({n.get("NodeManagerHostname", "?") for n in nodes}),
                        "resources": {k: v for k, v in self.ray.cluster_resources().items()
                                      if k in ("CPU", "GPU", "memory")}}}

    def gpus(self) -> float:
        return float(self.ray.cluster_resources().get("GPU", 0))

    def run(self, prepared: list[Prepared], sink, run_id: str, session: int, opts: RunOptions, stop, loader) -> None:
        ray = self.ray
        from harness.group import BatchDone, CellFailed, CellReady

        ledger = ray.remote(num_cpus=0)(Ledger).remote()
        keys = ray.put(keys_table(sink.stored))
        fn = ray.remote(decode_task)
        live: dict[Any, _Task] = {}
        for i, members in enumerate(task_groups(prepared)):
            c = members[0].cell
            t = _Task(f"#{i} {c.model} {c.suite} bs{c.batch_size} n{c.max_new_tokens}", members,
                      gpus_for(members, opts, self.gpus()))
            gen = fn.options(name="pdbench-decode", num_cpus=1, num_gpus=t.gpus, max_retries=opts.max_retries,
                             retry_exceptions=False).remote(members, keys, ledger, t.key, run_id, session, opts,
                                                            loader, os.getcwd())
            live[gen] = t
            self.tasks.append(t)
        try:
            while live and not stop.set:
                ready, _ = ray.wait(list(live), num_returns=1, timeout=0.5)  # wakes up for Ctrl-C
                for gen in ready:
                    t = live[gen]
                    try:
                        ev = ray.get(next(gen))
                    except StopIteration:
                        # a retried attempt that fails early (its model no longer loads) ends its stream
                        # before the slots still owed: those cells failed, they are not done
                        short = [p.cell.name for p in t.members if p.index not in t.failed and t.owed.get(p.index, 1) > 0]
                        if short:
                            self._fail(t, sink, RuntimeError(f"the task's stream ended with rows still owed by "
                                                             f"{', '.join(short)}"), opts)
                        else:
                            self._finish(t, sink, "done")
                        del live[gen]
                        continue
                    except Exception as e:  # retries used up (worker or node died), or a bug in the task
                        self._fail(t, sink, e, opts)
                        del live[gen]
                        continue
                    sink.take(ev)
                    if isinstance(ev, CellReady):
                        t.owed[ev.cell] = ev.owed
                    elif isinstance(ev, BatchDone):
                        t.owed[ev.cell] = t.owed.get(ev.cell, 0) - ev.table.num_rows
                        ledger.add.remote(list(zip(ev.table["cell_hash"].to_pylist(), ev.table["sample_id"].to_pylist(),
                                                   ev.table["repeat"].to_pylist())))
                    elif isinstance(ev, CellFailed):
                        t.failed.add(ev.cell)
                        if ev.hash:
                            ledger.fail.remote(ev.hash)
            if live:  # Ctrl-C: cancel, keep what already arrived
                self._cancel(live, sink)
        finally:  # normally nothing is live here; after a second Ctrl-C (or a bug) nothing may keep running
            for gen in live:
                try:
                    ray.cancel(gen, force=True)
                except Exception:
                    pass
            try:
                self.attempts = ray.get(ledger.log.remote(), timeout=30)
                ray.kill(ledger)
            except Exception:
                pass

    def _finish(self, t: _Task, sink, status: str) -> None:
        t.status = status
        sink.flush_cells([p.index for p in t.members], interrupted=status != "done")

    def _fail(self, t: _Task, sink, exc: BaseException, opts: RunOptions) -> None:
        """The task is gone for good: every cell it still owed rows fails (the others are complete)."""
        error_type, message, tb = failure_fields(exc)
        message = f"Ray task failed after {opts.max_retries + 1} attempt(s) at most: {message}"
        for p in t.members:
            if p.index not in t.failed and t.owed.get(p.index, 1) > 0:
                sink.fail(p, p.hash, "ray", error_type, message, tb)
        self._finish(t, sink, f"failed: {error_type}")

    def _cancel(self, live: dict, sink) -> None:
        import sys
        import time

        ray = self.ray
        print(f"pdbench: cancelling {len(live)} Ray task(s); batches already decoded are stored", file=sys.stderr)
        for gen in live:
            ray.cancel(gen)
        deadline = time.monotonic() + DRAIN_S
        for gen, t in list(live.items()):
            try:
                while time.monotonic() < deadline:
                    if not ray.wait([gen], timeout=max(0.0, deadline - time.monotonic()))[0]:
                        break
                    sink.take(ray.get(next(gen)))
            except Exception:  # StopIteration, TaskCancelledError: this task is over
                pass
            self._finish(t, sink, "cancelled")
            del live[gen]

    def session_log(self) -> dict:
        """For the manifest: every task, its cells, and each attempt's node and worker process."""
        return {"ray_tasks": [{"task": t.key, "cells": [p.cell.name for p in t.members], "num_gpus": t.gpus,
                               "status": t.status, "attempts": self.attempts.get(t.key, [])} for t in self.tasks]}

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def connect(opts: RunOptions, prepared: list[Prepared]) -> Cluster:
    """Ray for this run: a local one started here (address "" or None), or an existing cluster ("auto",
    "ray://host:port"); an already initialised Ray (a notebook, the tests) is used as it is. Raises
    RunConfigError, before any run directory exists, when Ray is missing, unreachable, or has no GPU
    for cells that need one."""
    ray = require_ray()
    address = opts.ray_address or ""
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address or None, runtime_env=code_env(), include_dashboard=False,
                     logging_level="WARNING")
        except Exception as e:  # ConnectionError, RuntimeError, ValueError: Ray's wording says what
            raise RunConfigError(f"cannot start or reach Ray at {address or '(local)'}: {e}") from None
        started = True
    cluster = Cluster(ray, address, started)
    need = [p.cell.name for p in prepared if gpus_for([p], opts, cluster.gpus()) > 0]
    if need and cluster.gpus() == 0:
        cluster.close()
        raise RunConfigError(f"the Ray cluster has no GPU, but {len(need)} cell(s) need one ({', '.join(need[:3])}"
                             f"{' ...' if len(need) > 3 else ''}): use device = \"cpu\", or num_gpus = 0")
    return cluster
