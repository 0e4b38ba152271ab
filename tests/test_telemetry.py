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
