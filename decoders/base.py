"""What every decoder sees and returns.

`ModelAdapter` is the protocol implemented by `harness.models.HFModelAdapter`; it lives here so that
decoders depend on nothing in `harness`. `DecodeResult` is the per-prompt contract of DESIGN.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from decoders.family import ModelFamily


@dataclass
class DecodeResult:
    tokens: list[int]  # committed ids, cut after the first EOS and at max_new_tokens
    accepted: list[int]  # tokens committed at each forward this row took part in (prefill included)
    finish: str  # "eos" | "length"
    step_s: list[float]  # wall time of each of those forwards
    ttft_s: float  # wall time from the start of generate() to the first committed token
    e2e_s: float  # wall time from the start of generate() to the last committed token

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_forward(self) -> int:
        return len(self.accepted)

    @property
    def tpf(self) -> float:
        return self.n_tokens / self.n_forward if self.accepted else float("nan")

    def check_bookkeeping(self) -> None:
        """DESIGN.md's identities; raises AssertionError naming the broken one."""
        assert sum(self.accepted) == len(self.tokens), (
            f"sum(accepted)={sum(self.accepted)} != n_tokens={len(self.tokens)}"
        )
        assert len(self.accepted) == len(self.step_s), (
            f"len(accepted)={len(self.accepted)} != len(step_s)={len(self.step_s)}"
        )
        assert self.finish in ("eos", "length"), f"finish={self.finish!r}"


@runtime_checkable
class ModelAdapter(Protocol):
    """The only thing that runs the network. See harness/models.py for the implementation."""

    mask_id: int | None  # None when the model has no mask token (decoders that need one raise)
    eos_ids: tuple[int, ...]
    pad_id: int
    device: torch.device
    dtype: torch.dtype
    n_forward: int  # forwards run since the adapter was made
    family: "ModelFamily"  # decoders/family.py: attention, logit alignment, mask id, block alignment

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, q] long
        position_ids: torch.Tensor,  # [B, q] long
        visible: torch.Tensor,  # [B, q, kv] bool: query i may attend key j (kv = cache + q)
        cache,  # a transformers Cache or None
        logits_to_keep,  # int: only the last N positions get logits; 1-D LongTensor: those positions
    ) -> torch.Tensor:  # [B, logits_to_keep, V] float32
        ...

    def new_cache(self): ...

    def new_static_cache(self, batch_size: int, length: int):
        """A fixed-shape cache whose `write_slots` [B, q] says where each query's KV goes."""
        ...

    def crop_cache(self, cache, length: int) -> None: ...

    def select_cache_rows(self, cache, rows: torch.Tensor) -> None: ...

    def slice_cache(self, cache, rows: torch.Tensor | None = None, positions=None):
        """A new cache with `cache`'s KV for batch `rows` and key `positions` (slice or 1-D LongTensor)."""
        ...

    def forward_seconds(self, first: int, stop: int) -> list[float]:
        """Wall time of forwards number first..stop-1 (counted from adapter creation)."""
        ...

    def synchronize(self) -> None: ...


class DecoderConfigError(ValueError):
    """A decoder parameter is unknown or out of range. Raised before any forward pass."""


@dataclass
class Decoder:
    """Base of every decoder: sampling and cache switches shared by all strategies.

    Subclasses are dataclasses whose fields are their hyper-parameters; `validate()` is called from
    `__post_init__` and raises `DecoderConfigError` naming the parameter, the value and what is allowed.
    """

    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int = 0  # seeds the torch.Generator used when temperature > 0
    use_cache: bool = True  # False = full recompute every forward (the reference slow path)
    engine: str = "dynamic"  # dynamic: growing DynamicCache | static: fixed-shape slot cache (decoders/static.py)

    name = "decoder"  # set by @register
    needs_mask_token = False
    runs_bidirectional = False  # True: the decoder handles models whose family attention is bidirectional

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check(self, "temperature", self.temperature >= 0, ">= 0")
        check(self, "top_p", 0 < self.top_p <= 1, "in (0, 1]")
        check(self, "top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an int >= 0 (0 = off)")
        check(self, "seed", isinstance(self.seed, int), "an int")
        check(self, "use_cache", isinstance(self.use_cache, bool), "true or false")
        check(self, "engine", self.engine in ("dynamic", "static"), "'dynamic' or 'static'")
        check(self, "engine", self.use_cache or self.engine == "dynamic",
              "'dynamic' when use_cache is false (the static engine is a cache)")

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def check_model(self, model: ModelAdapter) -> None:
        """Called before the first forward: raise if this model cannot run this decoder."""
        family = getattr(model, "family", None)  # decoders/family.py; adapters without one are causal LMs
        if family is not None and family.attention == "bidirectional" and not self.runs_bidirectional:
            raise DecoderConfigError(
                f"decoder {self.name!r} decodes causal models, and this model's family {family.name!r} has "
                "bidirectional attention (LLaDA, Dream): use block-diffusion, or override the family (--family)"
            )
        if self.needs_mask_token and model.mask_id is None:
            raise DecoderConfigError(
                f"decoder {self.name!r} needs a mask token, and this model has none "
                "(no config.text_mask_token_id, config.mask_token_id or tokenizer mask token); "
                "load it with add_mask_token=True (CLI: --add-mask-token) to add one"
            )

    def generate(
        self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int
    ) -> list[DecodeResult]:
        raise NotImplementedError


def check(decoder, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise DecoderConfigError(
            f"{type(decoder).__name__}: parameter {name}={getattr(decoder, name)!r} is invalid; allowed: {allowed}"
        )
