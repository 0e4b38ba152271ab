"""GPU telemetry around a cell: an NVML sampler thread and the NVML energy counter.

NVML "utilization" is the fraction of time *any* kernel ran, not SM occupancy; it is reported as is
and labelled so. Energy comes from the total-energy counter (mJ since driver load) read at start and
stop, which is exact over the window, unlike integrating sampled power; very short windows can still
read 0 J on some boards. Without NVML (CPU runs, no driver, no GPU) every column is NaN and one
warning is issued per process.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass, field

NAN = float("nan")
COLUMNS = ("gpu_util_mean", "gpu_util_p50", "gpu_util_max", "mem_used_max_mib", "power_w_mean",
           "energy_j", "torch_peak_mem_mib", "telemetry_hz")
_warned = False


def _nvml():
    """The pynvml module, initialised, or None (with one warning per process)."""
    global _warned
    try:
        import pynvml

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() < 1:
            raise RuntimeError("NVML reports no GPU")
        return pynvml
    except Exception as e:  # ImportError, NVMLError (no driver / library), no device
        if not _warned:
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
    """`with GpuSampler(index) as s: ...` then `s.result()`; index is the CUDA device ordinal."""

    index: int = 0
    period_s: float = 0.05  # 20 Hz: comfortably above the 10 Hz floor even with a slow NVML call
    cuda_device: object = None  # torch device for torch.cuda peak memory, or None
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)  # t, util %, MiB, W
    _nv: object = None
    _handle: object = None
    _energy0: float = NAN
    _energy1: float = NAN
    _t0: float = 0.0
    _t1: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "GpuSampler":
        self._nv = _nvml()
        self._t0 = time.perf_counter()
        if self._cuda():
            import torch

            torch.cuda.reset_peak_memory_stats(self.cuda_device)
        if self._nv is not None:
            self._handle = self._nv.nvmlDeviceGetHandleByIndex(self.index)
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
        self.samples.append((time.perf_counter(), util, mem, power))

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
        span = self.samples[-1][0] - self.samples[0][0]
        out.update(
            gpu_util_mean=sum(util) / len(util) if util else NAN,
            gpu_util_p50=_median(util),
            gpu_util_max=max(util) if util else NAN,
            mem_used_max_mib=max(mem) if mem else NAN,
            power_w_mean=sum(power) / len(power) if power else NAN,
            energy_j=self._energy1 - self._energy0,
            telemetry_hz=(len(self.samples) - 1) / span if span > 0 else NAN,
        )
        return out


def gpu_inventory() -> dict:
    """GPU names, driver and count for the manifest (empty values without NVML)."""
    nv = _nvml()
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
