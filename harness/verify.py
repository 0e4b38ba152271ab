"""`pdbench verify MODEL`: DESIGN.md's invariants on a user's own model.

    cache        KV-cached and uncached runs emit the same tokens (every decoder)
    lossless     sdlm-ssd == sdlm-conf at τ = 1 (first token only), same block size; hf-generate and
                 prompt-lookup == ar
    ar-vs-hf     the AR decoder == model.generate(do_sample=False), token for token
    batch        one batch of all prompts == one prompt at a time (exact only in fp32)
    static       the static-shape path (fixed-size slot cache) == the dynamic-cache path
    bookkeeping  sum(accepted) == n_tokens, len(accepted) == len(step_s), and a batch-1 run's
                 n_forward == the adapter's own forward count

It first prints the model family (decoders/family.py) the checks run under; decoders that cannot run
the family (causal decoders on a bidirectional model) are SKIPped with the reason, and a checkpoint
without a tokenizer gets seeded random id prompts.

Threshold decoders on a real model may differ where a confidence sits within ~1e-4 of τ (a knife
edge, DESIGN.md); such a FAIL names the first diverging position so it can be inspected.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "Question: Tom has 12 apples and buys 7 more. How many apples does he have?\nAnswer:",
    "Once upon a time, in a small village by the sea,",
]


@dataclass
class Check:
    name: str
    subject: str
    status: str  # PASS | FAIL | SKIP
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:4}  {self.name:11}  {self.subject:28}  {self.detail}"


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (a length difference counts), or None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _compare(name: str, subject: str, got: list[list[int]], want: list[list[int]], label: str) -> Check:
    for k, (g, w) in enumerate(zip(got, want)):
        pos = first_divergence(g, w)
        if pos is not None:
            gv = g[pos] if pos < len(g) else "<end>"
            wv = w[pos] if pos < len(w) else "<end>"
            return Check(name, subject, "FAIL", f"prompt {k}: first divergence at position {pos}: {gv} vs {wv} ({label})")
    return Check(name, subject, "PASS", f"{len(got)} prompts identical ({label})")


def _tokens(decoder, adapter, prompts, max_new_tokens) -> list[list[int]]:
    return [list(r.tokens) for r in decoder.generate(adapter, prompts, max_new_tokens)]


def _configs(block_size: int, names: list[str] | None) -> list[tuple[str, dict]]:
    import decoders

    out = []
    for name in names or decoders.available():
        params = {"block_size": block_size} if "block_size" in {f for f in decoders.get_class(name).__dataclass_fields__} else {}
        out.append((name, params))
    return out


def run_checks(adapter, prompts: list[list[int]], max_new_tokens: int = 32, block_size: int = 4,
               decoder_names: list[str] | None = None) -> list[Check]:
    import decoders

    checks: list[Check] = []
    runnable = []
    for name, params in _configs(block_size, decoder_names):
        subject = name + (f"[D={block_size}]" if params else "")
        try:  # a decoder that needs a parameter with no default (draft-spec's drafter) is skipped
            dec = decoders.get(name, **params)
            dec.check_model(adapter)
        except Exception as e:
            checks.append(Check("all", subject, "SKIP", str(e).split(";")[0]))
            continue
        runnable.append((name, params, subject))
        try:  # bookkeeping and the adapter's own count, batch 1
            rows, ok = [], True
            for p in prompts:
                before = adapter.n_forward
                (res,) = dec.generate(adapter, [p], max_new_tokens)
                res.check_bookkeeping()
                if res.n_forward != adapter.n_forward - before:
                    checks.append(Check("bookkeeping", subject, "FAIL",
                                        f"n_forward={res.n_forward} but the adapter ran {adapter.n_forward - before}"))
                    ok = False
                    break
                rows.append(list(res.tokens))
            if ok:
                checks.append(Check("bookkeeping", subject, "PASS", "identities hold; n_forward == adapter count"))
        except AssertionError as e:
            checks.append(Check("bookkeeping", subject, "FAIL", str(e)))
            continue
        uncached = _variant(name, params, adapter, use_cache=False)
        checks.append(_compare("cache", subject, rows, [_tokens(uncached, adapter, [p], max_new_tokens)[0] for p in prompts],
                               "cached vs uncached") if uncached else Check("cache", subject, "SKIP", "no uncached mode"))
        checks.append(_compare("batch", subject, _tokens(dec, adapter, prompts, max_new_tokens), rows,
                               f"batch of {len(prompts)} vs one at a time"))
        static = _variant(name, params, adapter, engine="static")
        checks.append(_compare("static", subject, _tokens(static, adapter, prompts, max_new_tokens),
                               _tokens(dec, adapter, prompts, max_new_tokens), "static-shape vs dynamic cache")
                      if static else Check("static", subject, "SKIP", "no static engine"))
        if name == "ar":
            checks.append(_compare("ar-vs-hf", subject, rows, _hf_greedy(adapter, prompts, max_new_tokens),
                                   "AR decoder vs HF generate"))
    names = {n for n, _, _ in runnable}
    if {"sdlm-ssd", "sdlm-conf"} <= names:
        ssd = decoders.get("sdlm-ssd", block_size=block_size)
        conf = decoders.get("sdlm-conf", block_size=block_size, threshold=1.0)
        checks.append(_compare("lossless", f"sdlm-ssd[D={block_size}]", _tokens(ssd, adapter, prompts, max_new_tokens),
                               _tokens(conf, adapter, prompts, max_new_tokens), "ssd vs conf τ=1"))
    lossless_vs_ar = sorted(names & {"hf-generate", "prompt-lookup"})
    if "ar" in names and lossless_vs_ar:
        ar_tokens = _tokens(decoders.get("ar"), adapter, prompts, max_new_tokens)
        for other in lossless_vs_ar:
            checks.append(_compare("lossless", other, _tokens(decoders.get(other), adapter, prompts, max_new_tokens),
                                   ar_tokens, f"{other} vs ar"))
    return checks


def _variant(name: str, params: dict, adapter, **changes):
    """The decoder with `changes`, or None when it does not offer them (diffusion-gemma uncached) or not
    on this model (the canvas engine of bidirectional models has no static path)."""
    import decoders

    try:
        variant = decoders.get(name, **params, **changes)
        variant.check_model(adapter)
    except decoders.DecoderConfigError:
        return None
    return variant


def _hf_greedy(adapter, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """HF generate, one prompt at a time (no padding), cut after the first EOS like DecodeResult."""
    import torch

    out = []
    for p in prompts:
        ids = torch.tensor([p], device=adapter.device)
        gen = adapter.hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                        max_new_tokens=max_new_tokens, eos_token_id=list(adapter.eos_ids),
                                        pad_token_id=adapter.pad_id)
        toks = gen[0, len(p):].tolist()
        for i, t in enumerate(toks):
            if t in adapter.eos_ids:
                toks = toks[: i + 1]
                break
        out.append(toks)
    return out


def encode_prompts(adapter, texts: list[str]) -> list[list[int]]:
    return [list(adapter.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def id_prompts(adapter, lengths=(5, 14, 9, 1)) -> list[list[int]]:
    """Seeded random id prompts for a checkpoint that ships no tokenizer (mask and EOS ids avoided)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    vocab = adapter.hf_model.get_input_embeddings().weight.shape[0]
    special = {adapter.mask_id, *adapter.eos_ids, adapter.pad_id}
    out = []
    for n in lengths:
        ids = torch.randint(0, vocab, (4 * n,), generator=gen).tolist()
        out.append([i for i in ids if i not in special][:n])
    return out


def family_line(adapter) -> str:
    f = adapter.family
    return (f"family {f.name}: attention {f.attention}, logits {f.logits}, mask id {f.mask_id}, "
            f"blocks {f.block_alignment}" + (f", trained block {f.block_size}" if f.block_size else ""))


def verify(model: str, *, device=None, dtype=None, add_mask_token=False, max_new_tokens=32, block_size=4,
           prompts: list[str] | None = None, decoder_names: list[str] | None = None, echo=print,
           family: str | None = None) -> bool:
    import decoders
    from decoders.family import override_error
    from harness.convert import MissingTokenizer
    from harness.models import check_model_ref, load_model

    # everything that can be checked without the model, before it loads
    unknown = [n for n in decoder_names or [] if n not in decoders.available()]
    if unknown:
        raise ValueError(f"--decoder {', '.join(map(repr, unknown))}: unknown; accepted: {', '.join(decoders.available())}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"--block-size {block_size!r}: accepted: an int >= 1")
    if family and override_error(family):
        raise ValueError(f"--family {family!r}: {override_error(family)}")
    check_model_ref(model)
    adapter = load_model(model, device=device, dtype=dtype, add_mask_token=add_mask_token, family=family)
    echo(f"verifying {adapter.name} on {adapter.device} ({str(adapter.dtype).removeprefix('torch.')}), "
         f"{max_new_tokens} new tokens, block size {block_size}")
    echo(family_line(adapter))
    if str(adapter.dtype) != "torch.float32":
        echo("note: batch invariance is exact only in float32 (use --dtype float32)")
    if isinstance(adapter.tokenizer, MissingTokenizer):
        if prompts:
            raise ValueError(f"model {model!r} has no tokenizer: --prompt text cannot be encoded")
        echo("no tokenizer: seeded random id prompts")
        ids = id_prompts(adapter)
    else:
        ids = encode_prompts(adapter, prompts or DEFAULT_PROMPTS)
    checks = run_checks(adapter, ids, max_new_tokens, block_size, decoder_names)
    for c in checks:
        echo(c.line())
    failed = [c for c in checks if c.status == "FAIL"]
    echo(f"{sum(c.status == 'PASS' for c in checks)} passed, {len(failed)} failed, "
         f"{sum(c.status == 'SKIP' for c in checks)} skipped")
    return not failed
