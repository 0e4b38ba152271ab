"""One timed batch: warm-up, the timed generate() (K times under --timing-repeats, the median kept and
the outputs required to repeat), the bookkeeping checks, GPU telemetry and machine load around it, and
its rows; and how many CPU threads a model runs with."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness import load
from harness.rows import BookkeepingError, check_batch, sample_row
from harness.telemetry import GpuSampler, nvml_index

if TYPE_CHECKING:
    from harness.runner import Job, RunOptions

WARMUP_TOKENS = 8


def timed_generate(decoder, adapter, prompts: list[list[int]], max_new_tokens: int) -> tuple[list, float, int]:
    """-> (results, wall seconds, index of the first forward). On CUDA the wall time is measured
    with events around the call, so it is device time, not host time."""
    adapter.synchronize()
    first = adapter.n_forward
    if adapter.device.type == "cuda":
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        results = decoder.generate(adapter, prompts, max_new_tokens)
        end.record()
        end.synchronize()
        return results, start.elapsed_time(end) / 1000.0, first
    t0 = time.perf_counter()
    results = decoder.generate(adapter, prompts, max_new_tokens)
    return results, time.perf_counter() - t0, first


@dataclass
class Decoded:
    """A timed batch: its checked results, rows (grades empty) and what the machine did meanwhile."""
    job: Job
    rows: list[dict]
    wall_s: float
    gpu: dict
    cpu: dict
    forward_s: list[float]
    warmup_s: float = float("nan")
    started_at: str = ""


def run_job(job: Job, adapter, run_id: str, session: int, rendered: dict, warm_up: bool,
            opts: RunOptions) -> Decoded:
    cell, decoder = job.p.cell, job.p.decoder
    prompts = [rendered[str(s.id)] for s in job.samples]
    warmup_s = float("nan")
    if warm_up:
        # first-call costs (allocator, kernels, caches) stay out of the timed rows: the batch's prefill
        # and a few decode steps hit the same kernels as the timed run, at a fraction of its cost
        t0 = time.perf_counter()
        decoder.generate(adapter, prompts, min(cell.max_new_tokens, WARMUP_TOKENS))
        adapter.synchronize()
        warmup_s = time.perf_counter() - t0
    runs = []
    with GpuSampler(index=nvml_index(adapter.device) if adapter.device.type == "cuda" else 0, cuda_device=adapter.device,
                    enabled=adapter.device.type == "cuda") as gpu:
        before = load.snapshot()
        for _ in range(opts.timing_repeats):
            results, wall, first = timed_generate(decoder, adapter, prompts, cell.max_new_tokens)
            check_batch(results, len(prompts), adapter.n_forward - first)
            if runs and [r.tokens for r in results] != [r.tokens for r in runs[0][0]]:
                raise BookkeepingError("--timing-repeats: the same batch decoded twice gave different outputs")
            runs.append((results, wall, first, adapter.n_forward))
        cpu = load.cpu_load(before, load.snapshot())
    walls = [w for _, w, _, _ in runs]
    results, wall, first, stop = sorted(runs, key=lambda r: r[1])[(len(runs) - 1) // 2]  # the median run
    base = {
        "run_id": run_id, "session": session, "cell_hash": job.p.hash, "cell_name": cell.name, "model": cell.model,
        **job.p.model_fields, "decoder": cell.decoder, "decoder_params": job.p.params_json, "suite": cell.suite,
        "suite_version": str(job.p.suite.version), "prompt_hash": job.p.suite.prompt_hash, "repeat": job.repeat,
        "seed": int(decoder.params().get("seed", cell.seed)), "batch_size": cell.batch_size,
        "max_new_tokens": cell.max_new_tokens, "batch_id": f"{job.p.hash}-{job.repeat}-{time.time_ns()}",
        "batch_index": job.index, "batch_wall_s": wall, "batch_walls_s": walls,
    }
    tokenizer, eos = adapter.tokenizer, set(adapter.eos_ids)
    rows = [sample_row(base, s, prompt, res, tokenizer, eos, pos)
            for pos, (s, prompt, res) in enumerate(zip(job.samples, prompts, results))]
    gpu_reading = gpu.result()
    # the sampler spans all K timed runs: rates (util, power, clocks) hold for each, energy is their sum,
    # so a batch's energy is the mean over its K runs (the counter cannot be split at the median run)
    gpu_reading["energy_j"] = gpu_reading["energy_j"] / len(runs)
    return Decoded(job, rows, wall, gpu_reading, cpu, adapter.forward_seconds(first + 1, stop), warmup_s)


SMALL_MODEL_PARAMS = 1_000_000_000
FEW_CORES = 4


def choose_threads(requested: int | str, adapter) -> int:
    """torch's intra-op threads for this model: as requested, or for "auto" one thread for a model
    under 1 B parameters on a CPU of at most 4 cores (its forwards are too small to split, and
    OpenMP threads that spin-wait for a descheduled peer made the same AR cell 2-7x slower on a shared
    2-core machine), else torch's default."""
    import torch

    if requested != "auto":
        return int(requested)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_params = sum(p.numel() for p in adapter.hf_model.parameters()) if getattr(adapter, "hf_model", None) else 0
    if adapter.device.type == "cpu" and cores <= FEW_CORES and n_params < SMALL_MODEL_PARAMS:
        return 1
    return torch.get_num_threads()
