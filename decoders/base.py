"""What every decoder sees and returns.

`ModelAdapter` is the protocol implemented by `harness.adapter.HFModelAdapter`; it lives here so that
decoders depend on nothing in `harness`. `DecodeResult` is the per-prompt contract of DESIGN.md.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from decoders.family import ModelFamily


FINISH_REASONS = ("eos", "length", "nfe_cap")


@dataclass
class DecodeResult:
    tokens: list[int]  # committed ids, cut after the first EOS and at max_new_tokens
    accepted: list[int]  # tokens committed at each target forward this row took part in (prefill included)
    finish: str  # "eos" | "length" | "nfe_cap" (took part in Decoder.max_nfe forwards)
    step_s: list[float]  # wall time of each of those forwards
    ttft_s: float  # wall time from the start of generate() to the first committed token
    e2e_s: float  # wall time from the start of generate() to the last committed token
    n_draft_forward: int = 0  # forwards of a separate drafter model (draft-spec); never in n_forward
    # Decoder.trace only: per target forward, {"pos": [...], "conf": [...]}: the output positions it
    # committed (0 = first new token) and the decoder's confidence in each (None where it has none)
    trace: list[dict] | None = None

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
        assert self.finish in FINISH_REASONS, f"finish={self.finish!r}"
        if self.trace is not None:
            assert len(self.trace) == len(self.accepted), (
                f"len(trace)={len(self.trace)} != len(accepted)={len(self.accepted)}"
            )


@runtime_checkable
class ModelAdapter(Protocol):
    """The only thing that runs the network. See harness/adapter.py for the implementation."""

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
        write_slots: torch.Tensor | None = None,  # [B, q] slot-cache positions (static engine only)
    ) -> torch.Tensor:  # [B, logits_to_keep, V] float32
        ...

    def new_cache(self): ...

    def new_static_cache(self, batch_size: int, length: int):
        """A fixed-shape cache; each forward's `write_slots` [B, q] say where each query's KV goes."""
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

    # Optional members, used only by the decoders that need them (check with getattr):
    #   hf_model                the wrapped transformers module, for decoders that run the model's own
    #                           generate() (hf-generate, diffusion-gemma); its forwards are still counted
    #                           and timed by the adapter's hooks
    #   load_companion(name)    -> ModelAdapter: a second model (alias, id or path) on the same device and
    #                           dtype, loaded once and cached, e.g. draft-spec's drafter. The harness
    #                           implements it, so decoders never import harness.
    #   native_only             True for a model that forward() cannot drive (DiffusionGemma's encoder-
    #                           decoder): only a decoder that runs its own generate() accepts it


class DecoderConfigError(ValueError):
    """A decoder parameter is unknown or out of range. Raised before any forward pass. `param` names
    the parameter (None when the problem is not one parameter's), so callers can point at it."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def param(default, allowed: str = "", choices: tuple = ()):
    """A decoder hyper-parameter with what it accepts, stated once: `choices` are checked by
    Decoder.validate() and, like `allowed`, shown by `pdbench list`."""
    return field(default=default, metadata={"allowed": allowed or " | ".join(map(str, choices)),
                                            "choices": tuple(choices)})


@dataclass
class Decoder:
    """Base of every decoder: sampling and cache switches shared by all strategies.

    Subclasses are dataclasses whose fields are their hyper-parameters; `validate()` is called from
    `__post_init__` and raises `DecoderConfigError` naming the parameter, the value and what is allowed.
    """

    temperature: float = param(0.0, ">= 0 (0 = greedy)")
    top_p: float = param(1.0, "in (0, 1]")
    top_k: int = param(0, "an int >= 0 (0 = off)")
    seed: int = param(0, "an int (seeds sampling when temperature > 0)")
    use_cache: bool = param(True, "true | false (false = full recompute every forward)")
    # dynamic: growing DynamicCache | static: fixed-shape slot cache (decoders/static.py)
    engine: str = param("dynamic", choices=("dynamic", "static"))
    max_nfe: int = param(0, "an int >= 0: a row ends (finish 'nfe_cap') after this many forwards; 0 = no cap")
    trace: bool = param(False, "true | false: record per forward the positions committed and their confidence")

    name = "decoder"  # set by @register
    source = ""  # one line: the paper or system the strategy comes from (shown by `pdbench list`)
    needs_mask_token = False
    runs_bidirectional = False  # True: the decoder handles models whose family attention is bidirectional

    @classmethod
    def build(cls, **params) -> "Decoder":
        """The decoder with these parameters; an unknown name raises DecoderConfigError with a hint."""
        allowed = [f.name for f in fields(cls)]
        for key in params:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise DecoderConfigError(
                    f"decoder {cls.name!r} has no parameter {key!r}{hint}; its parameters are: {', '.join(allowed)}",
                    param=key)
        return cls(**params)

    @classmethod
    def allowed_values(cls) -> dict[str, str]:
        """parameter -> what it accepts, for `pdbench list`."""
        return {f.name: f.metadata.get("allowed", "") for f in fields(cls)}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices:
                check(self, f.name, getattr(self, f.name) in choices, " | ".join(map(repr, choices)))
        check(self, "temperature", self.temperature >= 0, ">= 0")
        check(self, "top_p", 0 < self.top_p <= 1, "in (0, 1]")
        check(self, "top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an int >= 0 (0 = off)")
        check(self, "seed", isinstance(self.seed, int), "an int")
        check(self, "use_cache", isinstance(self.use_cache, bool), "true or false")
        check(self, "engine", self.use_cache or self.engine == "dynamic",
              "'dynamic' when use_cache is false (the static engine is a cache)")
        check(self, "max_nfe", isinstance(self.max_nfe, int) and not isinstance(self.max_nfe, bool)
              and self.max_nfe >= 0, "an int >= 0 (0 = no cap)")
        check(self, "trace", isinstance(self.trace, bool), "true or false")

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def check_model(self, model: ModelAdapter) -> None:
        """Called before the first forward: raise if this model cannot run this decoder."""
        if getattr(model, "native_only", False):
            raise DecoderConfigError(
                f"decoder {self.name!r} runs the network through the adapter's forward(), which this model "
                f"({type(getattr(model, 'hf_model', model)).__name__}) does not support; use a decoder that "
                "runs the model's own generate() (diffusion-gemma)")
        family = getattr(model, "family", None)  # decoders/family.py; adapters without one are causal LMs
        if family is not None and family.attention == "bidirectional" and not self.runs_bidirectional:
            raise DecoderConfigError(
                f"decoder {self.name!r} decodes causal models, and this model's family {family.name!r} has "
                "bidirectional attention (LLaDA, Dream): use block-diffusion or one of its unmasking policies "
                "(eb-sampler, credit-threshold, sub-block, margin-threshold), or override the family (--family)"
            )
        canvas = family is not None and family.attention == "bidirectional" and self.runs_bidirectional
        if family is not None and not family.shifted and not canvas:
            # every engine but the canvas one reads the logit at position i-1 for token i
            raise DecoderConfigError(
                f"decoder {self.name!r} reads shifted logits (position i-1 scores token i), and this model's "
                f"family {family.name!r} has logits={family.logits!r}; only the canvas engine (bidirectional "
                "models) reads in-place logits; override the family (--family) if the model is shifted")
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
            f"{type(decoder).__name__}: parameter {name}={getattr(decoder, name)!r} is invalid; allowed: {allowed}",
            param=name)
