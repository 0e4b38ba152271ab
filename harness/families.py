"""Which model family a checkpoint belongs to (decoders/family.py has the facts), read from its config.

Detection, first match wins:
    config.pdbench_family                        set by harness/convert.py and by pdbench's own toys
    model_type "llada" / LLaDAModelLM            llada
    model_type "dream" / DreamModel              dream
    "fast_dllm" in model_type or architectures   fast-dllm-v2 (trained block: config.bd_size, else 32)
    model_type "sdar" / SDAR* architectures      sdar (trained block: config.block_size)
    config.text_mask_token_id and block_size     sdlm (SDLM-style: pdbench-toy, SDLM-3B)
    anything else                                ar
The user overrides any fact with `--family` (decoders.family.apply_override).
"""

from __future__ import annotations

from decoders.family import ModelFamily, apply_override, known_family


def detect_name(config) -> tuple[str, int | None]:
    """-> (family name, trained block size or None) for a transformers config."""
    get = lambda key: getattr(config, key, None)  # noqa: E731
    model_type = str(get("model_type") or "").lower()
    archs = [str(a) for a in (get("architectures") or [])]
    if get("pdbench_family"):
        return str(get("pdbench_family")), get("block_size")
    if model_type == "llada" or "LLaDAModelLM" in archs:
        return "llada", None
    if model_type == "dream" or "DreamModel" in archs:
        return "dream", None
    if "fast_dllm" in model_type or any("fast_dllm" in a.lower() for a in archs):
        return "fast-dllm-v2", get("bd_size") or 32
    if model_type == "sdar" or any(a.startswith("SDAR") for a in archs):
        return "sdar", get("block_size")
    if get("text_mask_token_id") is not None and get("block_size"):
        return "sdlm", get("block_size")
    return "ar", None


def detect_family(config, mask_id: int | None, override: str | None = None) -> ModelFamily:
    name, block_size = detect_name(config)
    family = known_family(name, mask_id, block_size)
    return apply_override(family, override) if override else family
