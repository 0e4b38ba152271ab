"""The per-sample Parquet store of a run directory.

    RUN_DIR/samples/part-*.parquet    one file per batch, written atomically (tmp + rename), so a
                                      kill loses at most the batch in flight and never leaves half a row
    RUN_DIR/samples/compact-*.parquet many parts merged at the end of a run; its metadata lists the
                                      parts it replaces, which readers then ignore (crash-safe)
    RUN_DIR/cells.parquet             one row per cell execution: timing totals and telemetry
    RUN_DIR/failures.parquet          one row per failed cell, with the traceback

The reuse key is (cell_hash, sample_id, repeat); the schema below is the declared type of every column.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

KEY = ("cell_hash", "sample_id", "repeat")
_s, _i, _f, _b = pa.string(), pa.int64(), pa.float64(), pa.bool_()

SAMPLE_SCHEMA = pa.schema([
    # identity
    ("run_id", _s), ("session", _i), ("cell_hash", _s), ("cell_name", _s), ("model", _s), ("model_revision", _s),
    ("dtype", _s), ("device", _s), ("decoder", _s), ("decoder_params", _s), ("suite", _s),
    ("suite_version", _s), ("prompt_hash", _s), ("sample_id", _s), ("repeat", _i), ("seed", _i),
    # batching
    ("batch_size", _i), ("batch_id", _s), ("batch_index", _i), ("pos_in_batch", _i),
    ("max_new_tokens", _i),
    # output
    ("prompt_tokens", _i), ("output_ids", pa.list_(_i)), ("output_text", _s), ("finish", _s),
    ("n_tokens", _i), ("n_tokens_excl_eos", _i), ("n_forward", _i), ("tpf", _f),
    ("accepted", pa.list_(_i)), ("n_draft_forward", _i),  # drafter forwards (draft-spec), not in n_forward
    ("trace", _s),  # JSON, decoders run with trace=true: per forward {"pos": [...], "conf": [...]}; else null
    # timing
    ("step_s", pa.list_(_f)), ("ttft_s", _f), ("e2e_s", _f), ("tpot_s", _f), ("tok_s", _f),
    ("batch_wall_s", _f),  # the batch's wall time (the median of its runs under --timing-repeats)
    ("batch_walls_s", pa.list_(_f)),  # every timed run of the batch
    ("finished_at", pa.timestamp("us", tz="UTC")),
    # where the batch ran: timings compare only within one node and device (report.paired_batches)
    ("node", _s), ("accelerator", _s),
    # scoring
    ("correct", _b), ("extracted", _s), ("grade_status", _s), ("grade_detail", _s),
    ("grade_extra", _s),  # JSON: per-suite grader outputs (extractor used, exec time, ...)
])
# Columns that legitimately differ between two runs of the same sweep.
TIMING_COLUMNS = ("step_s", "ttft_s", "e2e_s", "tpot_s", "tok_s", "batch_wall_s", "batch_walls_s", "finished_at")
RUN_COLUMNS = ("run_id", "session", "batch_id", "node", "accelerator")

CELL_SCHEMA = pa.schema([
    ("run_id", _s), ("cell_hash", _s), ("cell_name", _s), ("model", _s), ("decoder", _s),
    ("decoder_params", _s), ("suite", _s), ("batch_size", _i), ("repeat", _i), ("status", _s),
    ("n_rows", _i), ("n_tokens", _i), ("n_batches", _i), ("threads", _i), ("wall_s", _f), ("warmup_s", _f), ("started_at", _s),
    ("ended_at", _s),
    # GPU (NVML, harness/telemetry.py)
    ("gpu_util_mean", _f), ("gpu_util_p50", _f), ("gpu_util_max", _f), ("mem_used_max_mib", _f),
    ("power_w_mean", _f), ("energy_j", _f), ("torch_peak_mem_mib", _f), ("telemetry_hz", _f),
    ("sm_clock_mhz_min", _f), ("sm_clock_mhz_mean", _f), ("throttle_reasons", _f), ("gpu_other_procs", _f),
    # noise: spread of the decode forwards' times, and the machine's load (harness/load.py): weighted by
    # batch wall time (_mean) and the worst batch (_max)
    ("forward_cv", _f), ("forward_p99_p50", _f), ("steal_frac_mean", _f), ("steal_frac_max", _f),
    ("other_cpu_frac_mean", _f), ("other_cpu_frac_max", _f), ("loadavg_max", _f),
    ("node", _s), ("accelerator", _s),  # where this (cell, repeat) ran in this session
])

FAILURE_SCHEMA = pa.schema([
    ("run_id", _s), ("cell_hash", _s), ("cell_name", _s), ("repeat", _i), ("stage", _s),
    ("error_type", _s), ("message", _s), ("traceback", _s), ("failed_at", _s),
])


def samples_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "samples"


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:  # the rename must not land before the data does
        os.fsync(f.fileno())
    os.replace(tmp, path)


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> a table of exactly `schema` (raises on a missing column or a wrong type)."""
    missing = [n for n in schema.names if rows and n not in rows[0]]
    if missing:
        raise KeyError(f"rows lack declared columns: {missing}")
    extra = [k for k in (rows[0] if rows else {}) if k not in schema.names]
    if extra:
        raise KeyError(f"rows have undeclared columns: {extra}")
    return pa.Table.from_pylist(rows, schema=schema)


def append_samples(run_dir: Path, rows: list[dict[str, Any]]) -> Path | None:
    return append_sample_table(run_dir, to_table(rows, SAMPLE_SCHEMA)) if rows else None


def append_sample_table(run_dir: Path, table: pa.Table) -> Path | None:
    """One batch as one part file (a table of SAMPLE_SCHEMA, e.g. built by a Ray worker)."""
    if not table.num_rows:
        return None
    if not table.schema.equals(SAMPLE_SCHEMA):
        raise TypeError(f"sample table does not have the store's schema:\n{table.schema}")
    out = samples_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"part-{pd.Timestamp.now('UTC').strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    _write_atomic(table, path)
    return path


def _live_files(run_dir: Path) -> list[Path]:
    """Part and compact files, minus parts that a compact file already holds."""
    folder = samples_dir(run_dir)
    if not folder.exists():
        return []
    compacts = sorted(folder.glob("compact-*.parquet"))
    replaced: set[str] = set()
    for c in compacts:
        meta = pq.read_schema(c).metadata or {}
        replaced.update(json.loads(meta.get(b"pdbench_replaces", b"[]")))
    parts = sorted(folder.glob("part-*.parquet"))
    return [p for p in compacts + parts if p.name not in replaced]


def read_samples(run_dir: Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    files = _live_files(run_dir)
    cols = list(columns) if columns is not None else None
    if not files:
        schema = SAMPLE_SCHEMA if cols is None else pa.schema([SAMPLE_SCHEMA.field(c) for c in cols])
        return schema.empty_table().to_pandas()
    return pa.concat_tables([pq.read_table(f, columns=cols, schema=SAMPLE_SCHEMA) for f in files]).to_pandas()


def stored_keys(run_dir: Path) -> set[tuple[str, str, int]]:
    df = read_samples(run_dir, columns=KEY)
    return set(zip(df["cell_hash"], df["sample_id"], df["repeat"].astype(int)))


def compact(run_dir: Path) -> Path | None:
    """Merge the live files into one compact file. Crash-safe: files are deleted only after the
    compact file naming them exists, and readers skip named files, so no row is counted twice."""
    folder = samples_dir(run_dir)
    every = sorted(folder.glob("part-*.parquet")) + sorted(folder.glob("compact-*.parquet")) if folder.exists() else []
    live = _live_files(run_dir)
    if len(every) < 2:
        return None
    table = pa.concat_tables([pq.read_table(p, schema=SAMPLE_SCHEMA) for p in live])
    meta = {b"pdbench_replaces": json.dumps([p.name for p in every]).encode()}
    path = folder / f"compact-{pd.Timestamp.now('UTC').strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    _write_atomic(table.replace_schema_metadata(meta), path)
    for p in every:
        p.unlink(missing_ok=True)
    return path


def _append_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    """Small side tables: read, append, rewrite atomically."""
    if not rows:
        return
    new = to_table(rows, schema)
    if path.exists():
        new = pa.concat_tables([pq.read_table(path, schema=schema), new])
    _write_atomic(new, path)


def append_cells(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    _append_table(Path(run_dir) / "cells.parquet", rows, CELL_SCHEMA)


def append_failures(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    _append_table(Path(run_dir) / "failures.parquet", rows, FAILURE_SCHEMA)


def read_table(run_dir: Path, name: str) -> pd.DataFrame:
    schema = {"cells": CELL_SCHEMA, "failures": FAILURE_SCHEMA}[name]
    path = Path(run_dir) / f"{name}.parquet"
    if not path.exists():
        return schema.empty_table().to_pandas()
    return pq.read_table(path, schema=schema).to_pandas()
