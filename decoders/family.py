"""What a decoder must know about a model beyond its forward: the model family's facts
(specs/block_diffusion.md §2.1, §4.1, §5.1).

    attention        causal         a causal LM; SDLM-style checkpoints add a bidirectional window of
                                    `block_size` slots at the end (the pdbench-toy, SDLM-3B)
                     block-causal   a key is visible iff block(key) <= block(query) (Fast-dLLM v2, SDAR)
                     bidirectional  every position sees every position (LLaDA, Dream)
    logits           in-place       the logit at position i scores token i (LLaDA, SDAR)
                     shifted        the logit at position i-1 scores token i, as in AR (Dream, SDLM, v2)
    mask_id          the id written into undecoded slots (None: the model has none)
    block_alignment  after-prompt   blocks start right after the prompt (LLaDA, Dream, Fast-dLLM v1)
                     absolute       blocks at multiples of B from position 0 (Fast-dLLM v2, SDAR)
                     sliding        the window starts wherever decoding is (SDLM)
    block_size       the block size the model was trained with (None: any)

The harness detects the family from a checkpoint's config (harness/families.py) and the user may
override any fact (`--family`); the loaded adapter exposes it as `model.family`. This module imports
nothing from `harness`, so decoders can read the facts without depending on how they were found.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

ATTENTION = ("causal", "block-causal", "bidirectional")
LOGITS = ("in-place", "shifted")
ALIGNMENT = ("after-prompt", "absolute", "sliding")


class FamilyError(ValueError):
    """An unknown family name, fact or value (raised before any model loads)."""


@dataclass(frozen=True)
class ModelFamily:
    name: str
    attention: str
    logits: str
    mask_id: int | None
    block_alignment: str
    block_size: int | None = None

    def __post_init__(self) -> None:
        for key, allowed in (("attention", ATTENTION), ("logits", LOGITS), ("block_alignment", ALIGNMENT)):
            if getattr(self, key) not in allowed:
                raise FamilyError(f"model family {key}={getattr(self, key)!r}; accepted: {', '.join(allowed)}")

    @property
    def shifted(self) -> bool:
        return self.logits == "shifted"

    def to_dict(self) -> dict:
        return asdict(self)


# Facts per known family; the mask id and trained block size come from the checkpoint's config.
KNOWN: dict[str, dict] = {
    "ar": dict(attention="causal", logits="shifted", block_alignment="after-prompt"),
    "sdlm": dict(attention="causal", logits="shifted", block_alignment="sliding"),
    "fast-dllm-v2": dict(attention="block-causal", logits="shifted", block_alignment="absolute"),
    "sdar": dict(attention="block-causal", logits="in-place", block_alignment="absolute"),
    "llada": dict(attention="bidirectional", logits="in-place", block_alignment="after-prompt"),
    "dream": dict(attention="bidirectional", logits="shifted", block_alignment="after-prompt"),
}


def known_family(name: str, mask_id: int | None = None, block_size: int | None = None) -> ModelFamily:
    if name not in KNOWN:
        raise FamilyError(f"unknown model family {name!r}; known: {', '.join(KNOWN)}")
    return ModelFamily(name=name, mask_id=mask_id, block_size=block_size, **KNOWN[name])


def override_error(spec: str) -> str | None:
    """Why `spec` is not a valid override (None if it is): checked before any model loads."""
    try:
        apply_override(known_family("ar"), spec)
    except FamilyError as e:
        return str(e)
    return None


def apply_override(family: ModelFamily, spec: str) -> ModelFamily:
    """`spec` is a known family name, `key=value` pairs, or both, comma-separated:
    "llada", "dream,mask_id=151666", "attention=bidirectional,logits=in-place". A name replaces the
    facts (keeping the detected mask id and block size); pairs then replace single facts."""
    out = family
    names = {f.name for f in fields(ModelFamily)}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if "=" not in part:
            out = known_family(part, out.mask_id, out.block_size)
            continue
        key, value = (s.strip() for s in part.split("=", 1))
        key = key.replace("-", "_")
        if key not in names:
            raise FamilyError(f"unknown model family fact {key!r} in {spec!r}; facts: {', '.join(sorted(names))}")
        if key in ("mask_id", "block_size"):
            try:
                value = None if value.lower() in ("none", "") else int(value)
            except ValueError:
                raise FamilyError(f"model family {key}={value!r}: expected an int or none") from None
        out = replace(out, **{key: value})
    return out
