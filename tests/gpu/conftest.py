"""Fixtures of the cuda-marked tests: the device, and the tiny models of tests/conftest.py on it in
fp32 or bf16 (built once per session)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import cuda_tests_on_cpu, make_adapter, make_binary_adapter

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@pytest.fixture(scope="session")
def device() -> torch.device:
    if torch.cuda.is_available() and not cuda_tests_on_cpu():
        # exact fp32 comparisons need true fp32 matmuls: TF32 rounds inputs to 10 mantissa bits
        torch.backends.cuda.matmul.allow_tf32 = False
        return torch.device("cuda")
    if cuda_tests_on_cpu():
        return torch.device("cpu")
    pytest.skip("needs a CUDA GPU")


@pytest.fixture(scope="session")
def models(device):
    """models(kind, dtype) -> adapter; kind: qwen2 | llama | binary (tests/conftest.py)."""
    built = {}

    def get(kind: str, dtype: str):
        if (kind, dtype) not in built:
            make = make_binary_adapter if kind == "binary" else make_adapter
            built[kind, dtype] = make("qwen2" if kind == "binary" else kind, device=device, dtype=DTYPES[dtype])
        return built[kind, dtype]

    return get
