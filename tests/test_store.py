"""The Parquet store: declared types, atomic parts, crash-safe compaction, the reuse key."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import store


def make_row(cell="h1", sample="s0", repeat=0, **kw):
    row = {name: None for name in store.SAMPLE_SCHEMA.names}
    row.update(run_id="r", session=0, cell_hash=cell, cell_name=f"name-{cell}", sample_id=sample, repeat=repeat,
               output_ids=[1, 2], accepted=[1, 1], step_s=[0.1, 0.1], n_tokens=2, n_forward=2, tpf=1.0,
               correct=True, batch_id=f"{cell}-{repeat}-b0", batch_size=1, batch_wall_s=0.2, e2e_s=0.2)
    row.update(kw)
    return row


def test_every_column_has_its_declared_type(tmp_path):
    store.append_samples(tmp_path, [make_row(), make_row(sample="s1")])
    (part,) = (tmp_path / "samples").glob("part-*.parquet")
    assert pq.read_schema(part).remove_metadata() == store.SAMPLE_SCHEMA
    df = store.read_samples(tmp_path)
    assert list(df.columns) == store.SAMPLE_SCHEMA.names and len(df) == 2


def test_rows_must_match_the_schema(tmp_path):
    with pytest.raises(KeyError, match="undeclared"):
        store.append_samples(tmp_path, [{**make_row(), "surprise": 1}])
    bad = make_row()
    del bad["tpf"]
    with pytest.raises(KeyError, match="lack"):
        store.append_samples(tmp_path, [bad])
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError)):
        store.append_samples(tmp_path, [make_row(n_tokens="two")])


def test_leftover_tmp_files_are_ignored(tmp_path):
    store.append_samples(tmp_path, [make_row()])
    (tmp_path / "samples" / ".part-x.parquet.1234.tmp").write_bytes(b"half a file")
    assert store.stored_keys(tmp_path) == {("h1", "s0", 0)}


def test_compaction_is_crash_safe(tmp_path):
    for i in range(3):
        store.append_samples(tmp_path, [make_row(sample=f"s{i}")])
    parts = sorted((tmp_path / "samples").glob("part-*.parquet"))
    # simulate a crash after the compact file landed but before the parts were deleted
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    meta = {b"pdbench_replaces": json.dumps([p.name for p in parts]).encode()}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "samples" / "compact-0.parquet")
    assert len(store.read_samples(tmp_path)) == 3  # parts named by the compact file are not read twice
    store.append_samples(tmp_path, [make_row(sample="s3")])
    store.compact(tmp_path)
    files = list((tmp_path / "samples").glob("*.parquet"))
    assert len(files) == 1 and files[0].name.startswith("compact-")
    assert sorted(store.read_samples(tmp_path)["sample_id"]) == ["s0", "s1", "s2", "s3"]


def test_side_tables_append(tmp_path):
    row = {n: None for n in store.FAILURE_SCHEMA.names} | {"cell_name": "c", "message": "boom"}
    store.append_failures(tmp_path, [row])
    store.append_failures(tmp_path, [row])
    df = store.read_table(tmp_path, "failures")
    assert len(df) == 2 and pq.read_schema(tmp_path / "failures.parquet") == store.FAILURE_SCHEMA
    assert store.read_table(tmp_path / "nowhere", "cells").empty
