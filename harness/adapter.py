"""The ModelAdapter (decoders/base.py) every decoder runs the network through.

The adapter is the only code that calls the model. Hooks on the model count and time every forward
(CUDA events on GPU, perf_counter on CPU), whoever calls it, so that no decoder can misreport its
cost. It turns the decoders' boolean visibility into the additive 4D mask stock transformers models
accept as-is, manages the caches (crop back to the committed length, select batch rows, the static
slot cache), and knows the model's special tokens and family (decoders/family.py).
"""

from __future__ import annotations

import inspect
import time

import torch

MASK_TOKEN = "<|mask|>"
NATIVE_ONLY = {"DiffusionGemmaForBlockDiffusion"}  # only a decoder running their own generate() can use them



def cache_argument(hf_model) -> str:
    """The name of the forward's KV-cache argument: transformers 5.24 renamed `past_key_values` to
    `cache` (the old name warns on every call and goes in 5.40); 5.17-5.23 know only the old one."""
    return "cache" if "cache" in inspect.signature(type(hf_model).forward).parameters else "past_key_values"


def timed_spans(hf_model) -> list[tuple]:
    """(first module, last module) of each network call the adapter counts and times: the model
    itself, or, for DiffusionGemma (whose generate() calls its encoder and its own forward() directly,
    so hooks on the top module never fire), the encoder, and the decoder through the LM head."""
    if type(hf_model).__name__ == "DiffusionGemmaForBlockDiffusion":
        inner = hf_model.model
        return [(inner.encoder, inner.encoder), (inner.decoder, hf_model.lm_head)]
    return [(hf_model, hf_model)]


def _as_list(x) -> list[int]:
    if x is None:
        return []
    return [int(v) for v in (x if isinstance(x, (list, tuple)) else [x])]


class HFModelAdapter:
    """Wraps a transformers causal LM + tokenizer behind decoders.base.ModelAdapter."""

    def __init__(self, hf_model, tokenizer, *, name: str = "model", add_mask_token: bool = False,
                 gguf_file: str | None = None, family: str | None = None):
        from harness.families import detect_family

        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.name = name
        self.gguf_file = gguf_file
        self.device = next(hf_model.parameters()).device
        self.dtype = next(hf_model.parameters()).dtype
        self.mask_added = False
        self.mask_id = self._find_mask_id()
        if self.mask_id is None and add_mask_token:
            self.mask_id = self._add_mask_token()
        # What decoders need to know beyond the forward (attention, logit alignment, mask id, blocks);
        # first, since an override may set the mask id, which EOS and padding must then avoid
        self.family = detect_family(hf_model.config, self.mask_id, family)
        self.mask_id = self.family.mask_id
        self.eos_ids = self._find_eos_ids()
        pad = tokenizer.pad_token_id if tokenizer is not None else None
        self.pad_id = int(pad) if pad is not None and pad != self.mask_id else self.eos_ids[0]
        if tokenizer is None:
            from harness.convert import MissingTokenizer

            self.tokenizer = MissingTokenizer(name)
        # Every call of the wrapped model is counted and timed by hooks on it, so a decoder that runs
        # the model's own generate() is measured exactly like one that calls forward() here.
        self._times: list = []  # per forward: seconds (CPU) or a (start, end) CUDA event pair
        self._open = None  # the running forward's start (perf_counter value or CUDA event)
        for first, last in timed_spans(hf_model):
            first.register_forward_pre_hook(self._start_timer, with_kwargs=True)
            last.register_forward_hook(self._stop_timer, with_kwargs=True)
        self.native_only = type(hf_model).__name__ in NATIVE_ONLY
        self._companions: dict[str, HFModelAdapter] = {}
        self._cache_kwarg = cache_argument(hf_model)

    def load_companion(self, name: str) -> "HFModelAdapter":
        """A second model (alias, id or path) on this one's device and dtype, e.g. draft-spec's
        drafter; loaded once per adapter. It must share this model's vocabulary."""
        if name not in self._companions:
            from harness.models import load_model  # loading builds adapters: imported when first needed

            other = load_model(name, device=str(self.device), dtype=str(self.dtype).removeprefix("torch."))
            if self.tokenizer is not None and other.tokenizer is not None \
                    and other.tokenizer.get_vocab() != self.tokenizer.get_vocab():
                raise ValueError(f"model {name!r} does not share the vocabulary of {self.name!r}; "
                                 "a companion (drafter) must use the same tokenizer")
            rows = lambda a: a.hf_model.get_output_embeddings().weight.shape[0]  # noqa: E731
            if rows(other) > rows(self):  # it could propose ids this model cannot embed
                raise ValueError(f"model {name!r} predicts {rows(other)} token ids, more than the {rows(self)} "
                                 f"of {self.name!r}")
            self._companions[name] = other
        return self._companions[name]

    # -- special tokens -------------------------------------------------------------------------
    def _find_mask_id(self) -> int | None:
        cfg = self.hf_model.config
        for key in ("text_mask_token_id", "mask_token_id"):
            if getattr(cfg, key, None) is not None:
                return int(getattr(cfg, key))
        tok = self.tokenizer
        if tok is not None and getattr(tok, "mask_token_id", None) is not None:
            return int(tok.mask_token_id)
        if tok is not None:
            for text in ("<|mask|>", "<text_mask>", "<|text_mask|>"):
                tid = tok.convert_tokens_to_ids(text)
                if isinstance(tid, int) and tid != tok.unk_token_id and tid >= 0:
                    return tid
        return None

    def _add_mask_token(self) -> int:
        """Add a mask token whose embedding is the mean row, as SDLM training initialises it."""
        tok = self.tokenizer
        tok.add_special_tokens({"mask_token": MASK_TOKEN})
        mask_id = int(tok.convert_tokens_to_ids(MASK_TOKEN))
        emb_in = self.hf_model.get_input_embeddings()
        if mask_id >= emb_in.weight.shape[0]:
            self.hf_model.resize_token_embeddings(mask_id + 1, mean_resizing=False)
        with torch.no_grad():
            for emb in {id(e): e for e in (self.hf_model.get_input_embeddings(),
                                           self.hf_model.get_output_embeddings()) if e is not None}.values():
                emb.weight[mask_id] = emb.weight[:mask_id].float().mean(0).to(emb.weight.dtype)
        self.hf_model.config.mask_token_id = mask_id
        self.mask_added = True
        return mask_id

    def _find_eos_ids(self) -> tuple[int, ...]:
        ids: list[int] = []
        gen = getattr(self.hf_model, "generation_config", None)
        ids += _as_list(getattr(gen, "eos_token_id", None))
        ids += _as_list(getattr(self.hf_model.config, "eos_token_id", None))
        if self.tokenizer is not None:
            ids += _as_list(self.tokenizer.eos_token_id)
        out = tuple(dict.fromkeys(i for i in ids if i != self.mask_id))
        if not out:
            raise ValueError(f"model {self.name!r} declares no EOS token (generation config, config, tokenizer)")
        return out

    # -- the forward ------------------------------------------------------------------------------
    def _start_timer(self, module, args, kwargs) -> None:
        if self.device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            start.record(torch.cuda.current_stream(self.device))  # the model's GPU, not the current one
            self._open = start
        else:
            self._open = time.perf_counter()

    def _stop_timer(self, module, args, kwargs, output) -> None:
        if self.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record(torch.cuda.current_stream(self.device))
            self._times.append((self._open, end))
        else:
            self._times.append(time.perf_counter() - self._open)

    @property
    def n_forward(self) -> int:
        """Forwards of the wrapped model since the adapter was made, whoever called them."""
        return len(self._times)

    @torch.no_grad()
    def forward(self, input_ids, position_ids, visible, cache, logits_to_keep,
                write_slots: torch.Tensor | None = None) -> torch.Tensor:
        """One forward. `visible` [B, q, kv] bool becomes an additive mask in the model dtype
        (0 / finfo.min: finfo.min, not -inf, so a fully hidden filler row gives no NaN). Bidirectional
        models get their all-visible mask the same way: with no mask transformers builds a causal one.
        `logits_to_keep`: the last N positions (int) or the positions listed (1-D LongTensor).
        `write_slots` [B, q]: where a slot cache stores each query's key/value (static engine)."""
        if write_slots is not None:
            cache.write_next(write_slots)
        if isinstance(logits_to_keep, torch.Tensor):
            logits_to_keep = logits_to_keep.to(self.device)
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~visible.to(self.device), torch.finfo(self.dtype).min)
        out = self.hf_model(
            input_ids=input_ids.to(self.device),
            position_ids=position_ids.to(self.device),
            attention_mask=mask[:, None],
            use_cache=cache is not None,
            logits_to_keep=logits_to_keep,
            **{self._cache_kwarg: cache},
        )
        return out.logits.float()

    def forward_seconds(self, first: int, stop: int) -> list[float]:
        out = []
        for t in self._times[first:stop]:
            if isinstance(t, tuple):
                t[1].synchronize()
                t = t[0].elapsed_time(t[1]) / 1000.0
            out.append(float(t))
        return out

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- cache ------------------------------------------------------------------------------------
    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.hf_model.config)

    def new_static_cache(self, batch_size: int, length: int):
        from harness.slot_cache import SlotCache

        return SlotCache(self.hf_model.config, batch_size, length, self.dtype, self.device)

    def crop_cache(self, cache, length: int) -> None:
        # Cropped through the layers' tensors: DynamicCache.crop's argument changed meaning across
        # transformers 5.x releases (absolute length vs tokens to remove).
        for layer in cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys = layer.keys[..., :length, :]
                layer.values = layer.values[..., :length, :]

    def slice_cache(self, cache, rows: torch.Tensor | None = None, positions=None):
        """A new cache holding `cache`'s KV for batch `rows` and key `positions` (a slice or a 1-D
        LongTensor); `cache` itself is left as it is, so a frozen cache can serve many forwards."""
        out = self.new_cache()
        for i, layer in enumerate(cache.layers):
            keys, values = layer.keys, layer.values
            if rows is not None:
                keys, values = keys[rows.to(self.device)], values[rows.to(self.device)]
            if positions is not None:
                index = positions.to(self.device) if isinstance(positions, torch.Tensor) else positions
                keys, values = keys[:, :, index], values[:, :, index]
            out.update(keys, values, i)
        return out

    def select_cache_rows(self, cache, rows: torch.Tensor) -> None:
        rows = rows.to(self.device)
        for layer in cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys = layer.keys[rows]
                layer.values = layer.values[rows]

    # -- description (cell hashing, manifest) ------------------------------------------------------
    def describe(self) -> dict:
        cfg = self.hf_model.config
        return {
            "model": self.name,
            "gguf_file": self.gguf_file,
            "architecture": type(self.hf_model).__name__,
            "revision": getattr(cfg, "_commit_hash", None),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "attn_implementation": getattr(cfg, "_attn_implementation", None),
            "n_params": sum(p.numel() for p in self.hf_model.parameters()),
            "mask_id": self.mask_id,
            "mask_added": self.mask_added,
            "eos_ids": list(self.eos_ids),
            "family": self.family.to_dict(),
        }
