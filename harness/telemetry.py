"""GPU telemetry around a cell: an NVML sampler thread and the NVML energy counter.

NVML "utilization" is the fraction of time *any* kernel ran, not SM occupancy; it is reported as is
and labelled so. Energy comes from the total-energy counter (mJ since driver load) read at start and
stop, which is exact over the window, unlike integrating sampled power; very short windows can still
read 0 J on some boards. Contention is sampled too: the SM clock (its minimum shows throttling),
the throttle reasons seen (a bit mask, OR-ed over samples; idle and the application-clock setting are
not throttling and are left out), and how many *other* processes held the GPU. A CPU-only cell
passes `enabled=False` and touches no NVML at all; where a GPU run finds no NVML (no driver, no
pynvml) every column is NaN and one warning is issued per process.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from dataclasses import dataclass, field

NAN = float("nan")
COLUMNS = ("gpu_util_mean", "gpu_util_p50", "gpu_util_max", "mem_used_max_mib", "power_w_mean",
           "energy_j", "torch_peak_mem_mib", "telemetry_hz", "sm_clock_mhz_min", "sm_clock_mhz_mean",
           "throttle_reasons", "gpu_other_procs")
# NVML clock-event reason bits that are not throttling: GPU idle (0x1), application clocks setting (0x2)
NOT_THROTTLING = 0x1 | 0x2
_warned = False


def _nvml(warn: bool = True):
    """The pynvml module, initialised, or None (with one warning per process when `warn`)."""
    global _warned
    try:
        import pynvml

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() < 1:
            raise RuntimeError("NVML reports no GPU")
        return pynvml
    except Exception as e:  # ImportError, NVMLError (no driver / library), no device
        if warn and not _warned:
            _warned = True
            warnings.warn(f"GPU telemetry disabled, columns will be NaN: NVML unavailable ({e})", RuntimeWarning,
                          stacklevel=3)
        return None


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return NAN if not n else (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)


@dataclass
class GpuSampler:
    """`with GpuSampler(cuda_device=dev) as s: ...` then `s.result()`. The GPU read is the one holding
    `cuda_device` (by UUID); `index` (an NVML index) is the fallback, and the only choice without torch."""

    index: int = 0
    period_s: float = 0.05  # 20 Hz: comfortably above the 10 Hz floor even with a slow NVML call
    cuda_device: object = None  # torch device for torch.cuda peak memory, or None
    enabled: bool = True  # False: a CPU cell, no NVML (and no warning)
    samples: list[tuple[float, float, float, float, float]] = field(default_factory=list)  # t, util %, MiB, W, SM MHz
    throttle: int = 0  # OR of the throttle-reason bits seen
    other_procs: int = 0  # most processes other than this one seen on the GPU
    _nv: object = None
    _handle: object = None
    _energy0: float = NAN
    _energy1: float = NAN
    _t0: float = 0.0
    _t1: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "GpuSampler":
        self._nv = _nvml() if self.enabled else None
        self._t0 = time.perf_counter()
        if self._cuda():
            import torch

            torch.cuda.reset_peak_memory_stats(self.cuda_device)
        if self._nv is not None:
            self._handle = self._nvml_handle()
            self._energy0 = self._energy()
            self._sample()  # one sample even for windows shorter than a period
            self._thread = threading.Thread(target=self._loop, name="pdbench-nvml", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._nv is not None:
            self._sample()
            self._energy1 = self._energy()
        self._t1 = time.perf_counter()

    def _cuda(self) -> bool:
        if self.cuda_device is None or getattr(self.cuda_device, "type", str(self.cuda_device)) != "cuda":
            return False
        import torch

        return torch.cuda.is_available()

    def _nvml_handle(self):
        """The NVML handle of the GPU being measured. NVML numbers GPUs by PCI bus, CUDA fastest first
        and after CUDA_VISIBLE_DEVICES, so an ordinal can name another GPU: match the torch device's
        UUID when there is one, else fall back to `index`."""
        if self._cuda():
            import torch

            try:
                uuid = str(torch.cuda.get_device_properties(self.cuda_device).uuid)
                return self._nv.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
            except Exception:  # older torch without .uuid, a MIG slice NVML does not resolve
                pass
        return self._nv.nvmlDeviceGetHandleByIndex(self.index)

    def _energy(self) -> float:
        try:
            return self._nv.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0  # mJ -> J
        except Exception:  # pre-Volta boards have no energy counter
            return NAN

    def _sample(self) -> None:
        nv, h = self._nv, self._handle
        try:
            util = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
        except Exception:
            util = NAN
        try:
            mem = nv.nvmlDeviceGetMemoryInfo(h).used / 2**20
        except Exception:
            mem = NAN
        try:
            power = nv.nvmlDeviceGetPowerUsage(h) / 1000.0  # mW -> W
        except Exception:
            power = NAN
        try:
            sm = float(nv.nvmlDeviceGetClockInfo(h, getattr(nv, "NVML_CLOCK_SM", 1)))
        except Exception:
            sm = NAN
        reasons = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        try:
            self.throttle |= int(reasons(h)) & ~NOT_THROTTLING
        except Exception:
            pass
        try:
            pids = {p.pid for p in nv.nvmlDeviceGetComputeRunningProcesses(h)}
            others = len(pids - {os.getpid()})
            if os.getpid() not in pids and self._cuda():
                # in a container NVML lists host pids, so our own context shows under a pid we cannot
                # match: count one of them as this process
                others = max(0, others - 1)
            self.other_procs = max(self.other_procs, others)
        except Exception:
            pass
        self.samples.append((time.perf_counter(), util, mem, power, sm))

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def result(self) -> dict[str, float]:
        out = dict.fromkeys(COLUMNS, NAN)
        if self._cuda():
            import torch

            out["torch_peak_mem_mib"] = torch.cuda.max_memory_allocated(self.cuda_device) / 2**20
        if self._nv is None or not self.samples:
            return out
        util = [s[1] for s in self.samples if not math.isnan(s[1])]
        mem = [s[2] for s in self.samples if not math.isnan(s[2])]
        power = [s[3] for s in self.samples if not math.isnan(s[3])]
        sm = [s[4] for s in self.samples if not math.isnan(s[4])]
        span = self.samples[-1][0] - self.samples[0][0]
        out.update(
            gpu_util_mean=sum(util) / len(util) if util else NAN,
            gpu_util_p50=_median(util),
            gpu_util_max=max(util) if util else NAN,
            mem_used_max_mib=max(mem) if mem else NAN,
            power_w_mean=sum(power) / len(power) if power else NAN,
            energy_j=self._energy1 - self._energy0,
            telemetry_hz=(len(self.samples) - 1) / span if span > 0 else NAN,
            sm_clock_mhz_min=min(sm) if sm else NAN,
            sm_clock_mhz_mean=sum(sm) / len(sm) if sm else NAN,
            throttle_reasons=float(self.throttle),
            gpu_other_procs=float(self.other_procs),
        )
        return out


def gpu_inventory() -> dict:
    """GPU names, driver and count for the manifest (empty values without NVML, silently: a CPU
    machine has no GPU to report)."""
    nv = _nvml(warn=False)
    if nv is None:
        return {"gpu_count": 0, "gpu_names": [], "gpu_driver": None}
    def text(x):
        return x.decode() if isinstance(x, bytes) else str(x)
    n = nv.nvmlDeviceGetCount()
    return {
        "gpu_count": n,
        "gpu_names": [text(nv.nvmlDeviceGetName(nv.nvmlDeviceGetHandleByIndex(i))) for i in range(n)],
        "gpu_driver": text(nv.nvmlSystemGetDriverVersion()),
    }


def _cuda_uuid(device) -> str | None:
    """The UUID ("GPU-...") of a torch CUDA device, as NVML spells it, or None."""
    try:
        import torch

        raw = str(torch.cuda.get_device_properties(device).uuid)
    except Exception:
        return None
    return raw if raw.startswith(("GPU-", "MIG-")) else f"GPU-{raw}"


def nvml_index(device) -> int:
    """The NVML index of a torch CUDA device. They differ whenever CUDA_VISIBLE_DEVICES renumbers the
    devices (Ray sets it for every task that holds a GPU: the task's GPU is cuda:0 but may be NVML's
    3), so the device is found by UUID; the torch ordinal when NVML cannot tell."""
    ordinal = getattr(device, "index", None) or 0
    uuid, nv = _cuda_uuid(device), _nvml(warn=False)
    if uuid is None or nv is None:
        return ordinal
    try:
        for i in range(nv.nvmlDeviceGetCount()):
            found = nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))
            if (found.decode() if isinstance(found, bytes) else str(found)) == uuid:
                return i
    except Exception:
        pass
    return ordinal


def placement(device) -> dict[str, str]:
    """Where a batch runs: the node (host name) and the physical accelerator — "cpu", or the GPU's
    name and UUID (an ordinal like cuda:0 names a different GPU in every Ray task)."""
    import platform

    accelerator = "cpu"
    if getattr(device, "type", str(device)) == "cuda":
        try:
            import torch

            accelerator = f"{torch.cuda.get_device_name(device)} {_cuda_uuid(device) or str(device)}"
        except Exception:
            accelerator = str(device)
    elif getattr(device, "type", str(device)) != "cpu":
        accelerator = str(device)
    return {"node": platform.node(), "accelerator": accelerator}
