"""manifest.json: what ran, where, with which software. One entry per session (a resume appends one),
so a run directory says how it was produced even when it took several invocations."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.cells import package_version
from harness.telemetry import gpu_inventory

REPO = Path(__file__).resolve().parents[1]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_sha() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"git_sha": sha, "git_dirty": bool(status) if status is not None else None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    import torch

    return {
        "pdbench_version": package_version("pdbench"),
        **git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "transformers": package_version("transformers"),
        "numpy": package_version("numpy"),
        "pyarrow": package_version("pyarrow"),
        "math_verify": package_version("math-verify"),
        **gpu_inventory(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
    }


def start_session(run_dir: Path, *, argv: list[str], sweep_file: str | None, cells: list, seeds: list[int],
                  data_dir: str | None, notes: dict[str, Any] | None = None) -> int:
    """Write (or extend) manifest.json at the start of a session; returns the session index."""
    path = Path(run_dir) / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {"run_id": Path(run_dir).name, "sessions": []}
    manifest["sessions"].append({
        "command_line": argv,
        "sweep_file": sweep_file,
        "n_cells": len(cells),
        "seeds": sorted(set(seeds)),
        "data_dir": data_dir,
        "started_at": now(),
        "ended_at": None,
        "status": "running",
        **environment(),
        **(notes or {}),
    })
    _write(path, manifest)
    return len(manifest["sessions"]) - 1


def record_model(run_dir: Path, index: int, description: dict[str, Any]) -> None:
    """Add a loaded model's description (architecture, dtype, mask and EOS ids, model family, weights
    fingerprint) to the session, once per model: what the cell hashes were computed from."""
    path = Path(run_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    models = manifest["sessions"][index].setdefault("models", [])
    if description not in models:
        models.append(description)
        _write(path, manifest)


def end_session(run_dir: Path, index: int, status: str, **extra: Any) -> None:
    path = Path(run_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["sessions"][index].update(ended_at=now(), status=status, **extra)
    _write(path, manifest)


def _write(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, path)
