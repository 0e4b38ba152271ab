"""Step 1 of the GPU check: what ran where. Prints the environment (GPU, driver, CUDA, torch,
transformers, the packages each later step needs, pdbench's git sha) and writes env.json, which the
driver reads to choose between the GPU check and the CPU dry run.

    python -m tests.gpu.env_info --out DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata, util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# distribution -> (module, the steps that need it): a machine without a package registry must carry
# what is missing, so say up front which step will fail for want of it (torch: this step itself)
NEEDED = {
    "transformers": ("transformers", "all"), "tokenizers": ("tokenizers", "tests"),
    "numpy": ("numpy", "all"), "safetensors": ("safetensors", "all"), "pandas": ("pandas", "bench"),
    "pyarrow": ("pyarrow", "bench"), "pytest": ("pytest", "tests"), "nvidia-ml-py": ("pynvml", "nvml, bench telemetry"),
}


def source_digest() -> str:
    """sha256 of the Python sources that run here (harness, decoders, suites, the registry, tests/gpu),
    12 hex digits: names the code even where the checkout came without .git."""
    h = hashlib.sha256()
    files = [REPO / "pdbench_registry.py"] + [p for d in ("harness", "decoders", "suites", "tests/gpu")
                                              for p in (REPO / d).rglob("*.py")]
    for p in sorted(files):
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def git_info() -> dict:
    from harness.manifest import git_sha

    info = git_sha()
    if info["git_sha"] is None and os.environ.get("PDBENCH_GIT_SHA"):
        info = {"git_sha": os.environ["PDBENCH_GIT_SHA"], "git_dirty": None, "git_sha_from": "$PDBENCH_GIT_SHA"}
    return info


def packages() -> dict:
    out = {}
    for dist, (module, steps) in NEEDED.items():
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "present" if util.find_spec(module) else None
        out[dist] = {"version": version, "needed_by": steps}
    return out


def nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = "name,driver_version,pstate,power.limit,clocks.max.sm,memory.total,mig.mode.current,compute_mode"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi failed: {e}"
    return (out.stdout or out.stderr).strip()


def collect() -> dict:
    import torch

    from harness.manifest import cpu_model
    from harness.telemetry import gpu_inventory

    env = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **git_info(), "source_digest": source_digest(),
        "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "cuda_device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": [], **gpu_inventory(), "nvidia_smi": nvidia_smi(), "packages": packages(),
    }
    for i in range(env["cuda_device_count"]):
        p = torch.cuda.get_device_properties(i)
        env["gpus"].append({"index": i, "name": p.name, "capability": f"sm_{p.major}{p.minor}",
                            "memory_gib": round(p.total_memory / 2**30, 1), "sms": p.multi_processor_count})
    return env


def render(env: dict) -> str:
    sha = env["git_sha"] or "unknown (no git checkout; set PDBENCH_GIT_SHA)"
    dirty = {True: ", uncommitted changes", False: "", None: ""}[env["git_dirty"]]
    lines = [
        f"pdbench GPU check: environment, {env['time_utc']}",
        f"  pdbench       git {sha}{dirty}{' (' + env['git_sha_from'] + ')' if env.get('git_sha_from') else ''}; "
        f"source digest {env['source_digest']}",
        f"  python        {env['python']} ({env['executable']}); {env['platform']}",
        f"  cpu           {env['cpu']} x {env['cpu_count']}",
        f"  torch         {env['torch']}, CUDA {env['torch_cuda']}, cuDNN {env['cudnn']}",
        f"  CUDA          {'available, ' + str(env['cuda_device_count']) + ' device(s)' if env['cuda_available'] else 'not available'}"
        f"{', CUDA_VISIBLE_DEVICES=' + env['cuda_visible_devices'] if env['cuda_visible_devices'] is not None else ''}",
    ]
    for g in env["gpus"]:
        lines.append(f"  GPU {g['index']}         {g['name']}, {g['capability']}, {g['memory_gib']} GiB, {g['sms']} SMs")
    lines.append(f"  NVML          driver {env['gpu_driver'] or '-'}; GPUs {', '.join(env['gpu_names']) or 'none'}")
    if env["nvidia_smi"]:
        lines += ["  nvidia-smi    " + line for line in env["nvidia_smi"].splitlines()]
    for dist, p in env["packages"].items():
        state = p["version"] or f"MISSING: the {p['needed_by']} step(s) will fail"
        lines.append(f"  {dist:13} {state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    env = collect()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "env.json").write_text(json.dumps(env, indent=2, default=str) + "\n")
    print(render(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
