"""Shared fixtures: tiny random-weight Qwen2 / Llama models (built from a config, seconds to make) and
prompts of different lengths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from harness.adapter import HFModelAdapter
from harness.tiny import tiny_model, tiny_tokenizer

# Tiny models are dispatch-bound: one intra-op thread is faster than two fighting over the cores
# (and the sandbox and graders run their own processes beside the tests).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = Path(__file__).parent / "fixtures" / "data"  # a few records of each suite, in the repo

PROMPT_TEXTS = [
    "Natalia sold clips to 48 of her friends in April, and then half as many in May.",
    "def f(x):",
    "Q",
]


def make_adapter(arch: str = "qwen2", attn: str = "sdpa", seed: int = 0, device="cpu",
                 dtype=torch.float32) -> HFModelAdapter:
    model = tiny_model(arch, seed=seed, attn_implementation=attn).to(device, dtype)
    return HFModelAdapter(model, tiny_tokenizer(), name=f"tiny-{arch}")


def make_binary_adapter(arch: str = "qwen2", seed: int = 0, device="cpu", dtype=torch.float32) -> HFModelAdapter:
    """A tiny model whose argmax is always one of two tokens (lm_head rows w and -w, all others 0),
    so mask-slot drafts often agree with block-head predictions and self-speculative decoding
    accepts several tokens per forward: the accept path gets exercised, not only the reject path."""
    adapter = make_adapter(arch, seed=seed, device=device, dtype=dtype)
    head = adapter.hf_model.get_output_embeddings().weight
    with torch.no_grad():
        w = head[65].clone() * 4  # tokens 'b' and 'c' of the byte alphabet
        head.zero_()
        head[65], head[66] = w, -w
    return adapter


def cuda_tests_on_cpu() -> bool:
    """PDBENCH_CUDA_TESTS_ON_CPU=1 runs the cuda-marked tests on the CPU (fp32 and bf16), to check the
    tests' own code on a machine without a GPU; tests/gpu/conftest.py picks the device."""
    return os.environ.get("PDBENCH_CUDA_TESTS_ON_CPU", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() or cuda_tests_on_cpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


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


def full_data() -> Path | None:
    """The full evaluation files, from $PDBENCH_DATA (CI sets it); None when not given."""
    path = os.environ.get("PDBENCH_DATA")
    return Path(path) if path and Path(path).is_dir() else None


@pytest.fixture
def data_dir(monkeypatch) -> Path:
    """The full data sets (tests that count all 1319 GSM8K problems need them), never the hub."""
    path = full_data()
    if path is None:
        pytest.skip("set PDBENCH_DATA to a folder with the full suite files (gsm8k_test.jsonl, ...)")
    monkeypatch.setenv("PDBENCH_DATA", str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return path


@pytest.fixture
def sample_data(monkeypatch) -> Path:
    """The slices in tests/fixtures/data: always there, a few records per suite."""
    monkeypatch.setenv("PDBENCH_DATA", str(SAMPLE_DATA))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return SAMPLE_DATA


@pytest.fixture
def fake_suites():
    """The in-memory suites of tests/fakes.py, registered for one test and removed after it."""
    import suites
    from tests import fakes

    names = {"test-echo": fakes.EchoSuite, "test-code": fakes.SlowCodeSuite}
    for name, cls in names.items():
        suites.register(name)(cls)
    yield fakes
    for name in names:
        suites.unregister(name)


def tiny_diffusion_gemma(seed: int = 0, canvas_length: int = 8):
    """A random-weight DiffusionGemmaForBlockDiffusion (encoder-decoder block diffusion, MoE layers, a
    vision tower it needs but we never feed) over the tiny byte vocabulary: about a second to build."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    tok = tiny_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16, global_head_dim=16, sliding_window=16,
                layer_types=["sliding_attention", "full_attention"], pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, bos_token_id=tok.pad_token_id, num_experts=2, top_k_experts=1,
                moe_intermediate_size=16)
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=8)
    cfg = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas_length,
                               architectures=["DiffusionGemmaForBlockDiffusion"])
    torch.manual_seed(seed)
    return DiffusionGemmaForBlockDiffusion(cfg).eval()


@pytest.fixture(scope="session")
def tiny_dgemma() -> HFModelAdapter:
    return HFModelAdapter(tiny_diffusion_gemma(), tiny_tokenizer(), name="tiny-diffusion-gemma")


# The reference-format diffusion fixtures (LLaDA / Dream checkpoints written by the reference code, and
# the reference decoders' golden outputs) are not in the repository: $PDBENCH_FIXTURES names their
# folder, else they are looked for beside $PDBENCH_DATA (CI keeps both in one shared folder). Tests that
# need them skip with the reason when they are absent.
FIXTURES = Path(os.environ.get("PDBENCH_FIXTURES") or (
    Path(os.environ["PDBENCH_DATA"]).parent / "fixtures" if os.environ.get("PDBENCH_DATA") else "$PDBENCH_FIXTURES"))


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


def decode_checked(model, name: str, prompts, new: int, **params):
    """Decode with decoder `name` and check every result's own bookkeeping and the token budget."""
    import decoders

    results = decoders.get(name, **params).generate(model, prompts, new)
    for r in results:
        r.check_bookkeeping()
        assert len(r.tokens) <= new
    return results

