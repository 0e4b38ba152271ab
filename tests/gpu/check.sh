#!/usr/bin/env bash
# The prepared GPU check of pdbench (docs/gpu-check.md): environment, CUDA tests, NVML, bench, in one
# go, into one folder; a short CPU dry run where there is no GPU. `--help` for the options.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, not an installed copy
exec "${PYTHON:-python}" -m tests.gpu.check "$@"
