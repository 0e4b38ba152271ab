"""Telemetry: a fake NVML proves the sampler's rate and aggregates; no NVML degrades to NaN + 1 warning."""

import math
import sys
import time
import types
import warnings

import pytest

from harness import telemetry


def fake_nvml(fail_init=False):
    m = types.ModuleType("pynvml")
    state = {"energy_mj": 1_000_000, "calls": 0}

    class NVMLError(Exception):
        pass

    def init():
        if fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    def util(h):
        state["calls"] += 1
        return types.SimpleNamespace(gpu=40 + 20 * (state["calls"] % 2))  # 40, 60, 40, ...

    def energy(h):
        state["energy_mj"] += 5_000  # +5 J per read
        return state["energy_mj"]

    m.NVMLError = NVMLError
    m.nvmlInit = init
    m.nvmlDeviceGetCount = lambda: 1
    m.nvmlDeviceGetHandleByIndex = lambda i: object()
    m.nvmlDeviceGetUtilizationRates = util
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=3 * 2**30)
    m.nvmlDeviceGetPowerUsage = lambda h: 150_000  # mW
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetName = lambda h: b"Fake GPU"
    m.nvmlSystemGetDriverVersion = lambda: "999.1"
    return m


def test_sampler_rate_and_aggregates(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    with telemetry.GpuSampler(index=0) as s:
        time.sleep(0.6)
    r = s.result()
    assert r["telemetry_hz"] >= 10, r
    assert len(s.samples) >= 7
    assert 40 <= r["gpu_util_mean"] <= 60 and r["gpu_util_max"] == 60
    assert r["mem_used_max_mib"] == 3 * 1024 and r["power_w_mean"] == 150
    assert r["energy_j"] == pytest.approx(5.0)  # counter delta, start to stop
    assert math.isnan(r["torch_peak_mem_mib"])  # CPU: no torch.cuda
    assert telemetry.gpu_inventory() == {"gpu_count": 1, "gpu_names": ["Fake GPU"], "gpu_driver": "999.1"}


def test_without_nvml_nan_columns_and_one_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(fail_init=True))
    monkeypatch.setattr(telemetry, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            with telemetry.GpuSampler() as s:
                pass
            r = s.result()
            assert set(r) == set(telemetry.COLUMNS) and all(math.isnan(v) for v in r.values())
        assert telemetry.gpu_inventory()["gpu_count"] == 0
    assert [str(w.message) for w in caught if "NVML" in str(w.message)].__len__() == 1


def test_without_pynvml_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    monkeypatch.setattr(telemetry, "_warned", False)
    with pytest.warns(RuntimeWarning, match="NVML unavailable"):
        with telemetry.GpuSampler() as s:
            pass
    assert math.isnan(s.result()["energy_j"])


def test_contention_readings_from_nvml(monkeypatch):
    """The GPU side of the noise flags: SM clock, throttle reasons (idle and app-clock bits are not
    throttling) and processes of others on the device, from the fake NVML."""
    import os

    nv = fake_nvml()
    clocks = iter([1980, 1410, 1980, 1980] * 100)
    nv.NVML_CLOCK_SM = 1
    nv.nvmlDeviceGetClockInfo = lambda h, kind: next(clocks)
    nv.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0x1 | 0x20  # idle + SW thermal slowdown
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [types.SimpleNamespace(pid=os.getpid()),
                                                        types.SimpleNamespace(pid=1)]
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    with telemetry.GpuSampler(index=0) as s:
        time.sleep(0.2)
    r = s.result()
    assert r["sm_clock_mhz_min"] == 1410 and 1410 < r["sm_clock_mhz_mean"] < 1980
    assert r["throttle_reasons"] == 0x20 and r["gpu_other_procs"] == 1


def test_a_cpu_cell_touches_no_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(telemetry, "_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "NVML unavailable" warning for a CPU cell or the manifest
        with telemetry.GpuSampler(enabled=False) as s:
            pass
        assert telemetry.gpu_inventory()["gpu_count"] == 0
    assert all(math.isnan(s.result()[k]) for k in ("energy_j", "gpu_util_mean"))


def test_cpu_load_from_proc_stat_deltas():
    """Two seconds on two cores: 2 s busy, of which this process used 1 s, 1 s idle, 1 s stolen."""
    from harness import load

    hz = load.HZ
    start = load.CpuSnapshot([100, 0, 50, 1000, 0, 0, 0, 0], own_cpu_s=1.0, wall=0.0)
    end = load.CpuSnapshot([100 + int(1.5 * hz), 0, 50 + int(0.5 * hz), 1000 + hz, 0, 0, 0, hz], own_cpu_s=2.0,
                           wall=2.0)
    got = load.cpu_load(start, end)
    assert got["steal_frac"] == pytest.approx(0.25) and got["other_cpu_frac"] == pytest.approx(0.25)
    assert math.isnan(load.cpu_load(load.CpuSnapshot(None, 0, 0), end)["steal_frac"])  # no /proc: no verdict
    real = load.cpu_load(load.snapshot(), load.snapshot())
    assert real["loadavg"] >= 0


def test_sampler_reads_the_gpu_holding_the_torch_device(monkeypatch):
    """NVML index 0 need not be CUDA device 0 (CUDA_VISIBLE_DEVICES, fastest-first order): the sampler
    finds the GPU by the torch device's UUID, and falls back to its index when there is none."""
    import torch

    nv = fake_nvml()
    nv.nvmlDeviceGetHandleByIndex = lambda i: f"index-{i}"
    nv.nvmlDeviceGetHandleByUUID = lambda u: {"GPU-1234-abcd": "by-uuid"}[u]
    nv.nvmlDeviceGetPowerUsage = lambda h: {"by-uuid": 300_000, "index-0": 60_000}[h]
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 2**20)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: types.SimpleNamespace(uuid="1234-abcd"))
    with telemetry.GpuSampler(cuda_device=torch.device("cuda", 0)) as s:
        pass
    assert s.result()["power_w_mean"] == 300

    def no_uuid(d):
        raise AttributeError("uuid")

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_uuid)
    with telemetry.GpuSampler(cuda_device=torch.device("cuda", 0)) as s:
        pass
    assert s.result()["power_w_mean"] == 60
