"""Shared fixtures: tiny random-weight Qwen2 / Llama models (built from a config, seconds to make) and
prompts of different lengths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from harness.models import HFModelAdapter
from harness.tiny import tiny_model, tiny_tokenizer

# Tiny models are dispatch-bound: one intra-op thread is faster than two fighting over the cores
# (and the sandbox and graders run their own processes beside the tests).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

PROMPT_TEXTS = [
    "Natalia sold clips to 48 of her friends in April, and then half as many in May.",
    "def f(x):",
    "Q",
]


def make_adapter(arch: str = "qwen2", attn: str = "sdpa", seed: int = 0) -> HFModelAdapter:
    return HFModelAdapter(tiny_model(arch, seed=seed, attn_implementation=attn), tiny_tokenizer(), name=f"tiny-{arch}")


def make_binary_adapter(arch: str = "qwen2", seed: int = 0) -> HFModelAdapter:
    """A tiny model whose argmax is always one of two tokens (lm_head rows w and -w, all others 0),
    so mask-slot drafts often agree with block-head predictions and self-speculative decoding
    accepts several tokens per forward: the accept path gets exercised, not only the reject path."""
    adapter = make_adapter(arch, seed=seed)
    head = adapter.hf_model.get_output_embeddings().weight
    with torch.no_grad():
        w = head[65].clone() * 4  # tokens 'b' and 'c' of the byte alphabet
        head.zero_()
        head[65], head[66] = w, -w
    return adapter


@pytest.fixture(scope="session")
def tiny_qwen2() -> HFModelAdapter:
    return make_adapter("qwen2")


@pytest.fixture(scope="session")
def tiny_llama() -> HFModelAdapter:
    return make_adapter("llama")


@pytest.fixture(scope="session", params=["qwen2", "llama"])
def tiny_any(request) -> HFModelAdapter:
    return make_adapter(request.param)


@pytest.fixture(scope="session")
def binary_qwen2() -> HFModelAdapter:
    return make_binary_adapter("qwen2")


@pytest.fixture(scope="session")
def prompts(tiny_qwen2) -> list[list[int]]:
    tok = tiny_qwen2.tokenizer
    return [tok.encode(t) for t in PROMPT_TEXTS]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("PDBENCH_DATA", SHARED_DATA))
    if not path.exists():
        pytest.skip(f"shared data directory {path} is absent")
    return path


# The reference-format diffusion fixtures (LLaDA / Dream, no tokenizer) live in ../shared/fixtures beside
# the repository in CI; $PDBENCH_FIXTURES points elsewhere, else they sit beside $PDBENCH_DATA (the same
# shared folder). Tests that need them skip with the reason when they are absent.
FIXTURES = Path(os.environ.get("PDBENCH_FIXTURES") or (
    Path(os.environ["PDBENCH_DATA"]).parent / "fixtures" if os.environ.get("PDBENCH_DATA")
    else REPO.parent / "shared" / "fixtures"))


def refmodel_dir(name: str) -> Path:
    path = FIXTURES / "refmodels" / name
    if not (path / "config.json").exists():
        pytest.skip(f"reference fixture {path} is absent (set PDBENCH_FIXTURES)")
    return path


@pytest.fixture(scope="session")
def llada_tiny():
    from harness.models import load_model

    return load_model(str(refmodel_dir("llada-tiny")), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def dream_tiny():
    from harness.models import load_model

    return load_model(str(refmodel_dir("dream-tiny")), device="cpu", dtype="float32")
