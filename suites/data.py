"""Find, read and validate a suite's records; subset them with `limit` and a seeded `shuffle`.

Lookup order for a suite's data (the first that works wins):
  1. the `data_dir` argument: a directory holding one of the suite's file names, or the file itself;
  2. the PDBENCH_DATA environment variable, the same way;
  3. the Hugging Face hub through `datasets.load_dataset(hub_id, config, split=...)` (a default
     dependency: it shows a download bar and caches under ~/.cache/huggingface), skipped when
     HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set.
Local files are JSONL in the original formats (gzip allowed, e.g. HumanEval.jsonl.gz). The hub rows
and the JSONL records have the same fields, so both give the same samples and ids.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class DataError(ValueError):
    """The data could not be found, or a record is malformed."""


@dataclass(frozen=True)
class DataSpec:
    filenames: tuple[str, ...]  # accepted local file names, first preferred
    fields: tuple[str, ...]  # every record must have these
    hub_id: str
    hub_config: str | None
    hub_split: str


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """Read JSON lines, requiring `fields` in every record; errors name the file, line and field."""
    records = []
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            missing = [name for name in fields if name not in record]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field {missing[0]!r}"
                                + (f" (also {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""))
            records.append(record)
    if not records:
        raise DataError(f"{path}: no records")
    return records


def _local_file(root: str | os.PathLike, spec: DataSpec) -> Path | None:
    root = Path(root).expanduser()
    if root.is_file():
        return root
    for name in spec.filenames:
        if (root / name).is_file():
            return root / name
    return None


def hub_reachable(timeout_s: float = 5.0) -> str | None:
    """None if the hub's host answers a TCP connect, else why not. `datasets` itself retries for a
    minute or more before giving up on a machine without network; this answers in seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout_s).close()
    except OSError as e:
        return f"{url.hostname} is not reachable ({e.__class__.__name__}: {e})"
    return None


def hub_load(spec: DataSpec):
    """The hub split as a `datasets.Dataset` (download bar and cache are datasets' own)."""
    import datasets

    why_not = hub_reachable()
    if why_not:
        raise ConnectionError(why_not)
    return datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.hub_split)


def _from_hub(spec: DataSpec, loader) -> tuple[list[dict] | None, str]:
    """(records, "") from the hub, or (None, why not)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0"):
        return None, "offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
    try:
        rows = loader(spec)
    except Exception as e:  # noqa: BLE001 - no network, no such revision, ...: say why in the error
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return [dict(row) for row in rows], ""


def load_records(suite_name: str, spec: DataSpec, data_dir=None, hub_loader=None) -> tuple[list[dict], str]:
    """Records in file order and where they came from (a path or 'hf:<id>'). `hub_loader(spec)` fetches
    the hub split (tests give one that reads a local JSON file through `datasets`)."""
    tried = []
    for origin, root in (("data_dir", data_dir), ("PDBENCH_DATA", os.environ.get("PDBENCH_DATA"))):
        if not root:
            tried.append(f"{origin} not given")
            continue
        if not Path(root).expanduser().exists():  # a typo must not quietly fall through to other data
            raise DataError(f"{'--data-dir' if origin == 'data_dir' else origin} {root}: no such file or directory")
        path = _local_file(root, spec)
        if path is not None:
            return read_jsonl(path, spec.fields), str(path)
        tried.append(f"{origin}={root} has none of {', '.join(spec.filenames)}")
    rows, why_not = _from_hub(spec, hub_loader or hub_load)
    if rows is not None:
        for i, row in enumerate(rows):
            missing = [name for name in spec.fields if name not in row]
            if missing:
                raise DataError(f"hf:{spec.hub_id} row {i}: missing field {missing[0]!r}")
        return rows, f"hf:{spec.hub_id}"
    tried.append(f"Hugging Face hub {spec.hub_id!r}: {why_not}")
    raise DataError(
        f"no data for suite {suite_name!r}. Give it one of three ways: (1) data_dir=... / --data-dir pointing at "
        f"a directory with {spec.filenames[0]}, (2) the PDBENCH_DATA environment variable, or (3) a reachable "
        f"Hugging Face hub for {spec.hub_id!r} with `datasets` installed. Tried: " + "; ".join(tried) + ".")


def subset(records: list, limit: int | None = None, shuffle: bool = False, seed: int = 0) -> list:
    """Seeded shuffle first, then the first `limit`: a shuffled subset is a random sample."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    out = list(records)
    if shuffle:
        random.Random(seed).shuffle(out)
    return out if limit is None else out[:limit]
