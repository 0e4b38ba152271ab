"""`pdbench bench`: decoder speed against the memory-bandwidth floor.

Decoding is bandwidth bound: each forward reads every weight once, so the floor for a forward is
weight bytes / memory bandwidth. This measures, for a model and batch sizes, `model.generate` and
each pdbench decoder: ms per decode forward, tokens/s, tokens per forward, peak memory, GPU util,
J/token, and the roofline fraction (floor / measured ms per forward), with the bandwidth measured by
a large device-to-device copy in the same run. Generation length is fixed (EOS ignored), so random
weights time exactly like trained ones: `--model arch:qwen2.5-3b` needs no download.
Writes bench.parquet and bench.md under --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import pandas as pd
import torch

import decoders
from harness.models import HFModelAdapter, load_model, pick_device_dtype
from harness.telemetry import GpuSampler

# Qwen2.5 architectures (config.json of the public checkpoints); weights are random here.
ARCHS = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}
# What `--methods` runs by default: HF generate, then pdbench decoders as NAME[:param=value,...]; any
# registered decoder can be given the same way.
DEFAULT_METHODS = ("generate", "ar", "sdlm-conf:block_size=4,threshold=0.9", "sdlm-ssd:block_size=4",
                   "block-diffusion:block_size=4,threshold=0.9")


def parse_method(text: str) -> tuple[str, dict]:
    """"sdlm-conf:block_size=4,threshold=0.9" -> ("sdlm-conf", {...}); values read as TOML literals.
    Raises ValueError on an unknown decoder or parameter (decoders' own messages)."""
    import tomllib

    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, raw = item.partition("=")
        try:
            params[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            params[key.strip()] = raw
    if name != "generate":
        decoders.get(name, **params)  # validate now, before the model loads
    return name, params


class FixedLength:
    """An adapter seen without its EOS ids, so every row generates exactly max_new_tokens and random
    weights time like trained ones. A view: the caller's adapter is not changed."""

    eos_ids: tuple[int, ...] = ()

    def __init__(self, adapter: HFModelAdapter):
        self._adapter = adapter

    def __getattr__(self, name):
        return getattr(self._adapter, name)


def random_arch_model(arch: str, device: str | None, dtype: str | None) -> HFModelAdapter:
    from transformers import AutoModelForCausalLM, Qwen2Config

    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; accepted: {', '.join(ARCHS)}")
    dev, torch_dtype = pick_device_dtype(device, dtype)
    cfg = Qwen2Config(**ARCHS[arch], max_position_embeddings=32768, rope_theta=1e6, eos_token_id=151645,
                      pad_token_id=151643, text_mask_token_id=151665)
    with torch.device(dev):  # initialise on the device: a 7B model built on the CPU first takes minutes
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype, attn_implementation="sdpa")
    return HFModelAdapter(model.eval(), None, name=f"arch:{arch}")


def measure_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes/s of a device-to-device copy (read + write), best of 5."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def weight_bytes(adapter: HFModelAdapter) -> int:
    seen = {}
    for p in adapter.hf_model.parameters():  # tied embeddings are one tensor, read once
        seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())


def run_generate(adapter: HFModelAdapter, prompts: list[list[int]], new: int) -> tuple[int, float, float, float]:
    """-> (tokens, seconds, ms per decode forward, tokens per forward) for HF generate, EOS ignored."""
    ids = torch.tensor(prompts, device=adapter.device)
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=adapter.pad_id)

    def timed(n: int) -> float:
        sync(adapter.device)
        t0 = time.perf_counter()
        adapter.hf_model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        sync(adapter.device)
        return time.perf_counter() - t0

    prefill = timed(1)
    total = timed(new)
    return new * len(prompts), total, 1000 * (total - prefill) / (new - 1), 1.0


def run_decoder(adapter, name: str, params: dict, prompts, new: int, engine: str = "dynamic"):
    """-> (tokens, seconds, ms per decode forward (the adapter's own times, prefill left out), TPF)."""
    sync(adapter.device)
    first = adapter.n_forward
    t0 = time.perf_counter()
    results = decoders.get(name, engine=engine, **params).generate(adapter, prompts, new)
    sync(adapter.device)
    seconds = time.perf_counter() - t0
    decode = adapter.forward_seconds(first + 1, adapter.n_forward)
    tokens = sum(r.n_tokens for r in results)
    return tokens, seconds, 1000 * sum(decode) / max(len(decode), 1), tokens / sum(r.n_forward for r in results)


def bench(adapter: HFModelAdapter, batch_sizes: list[int], methods: list[str], prompt_len: int, new: int,
          repeats: int, bandwidth_bytes: int, engine: str = "dynamic") -> pd.DataFrame:
    """`methods`: "generate" or NAME[:param=value,...] of any registered decoder."""
    parsed = {m: parse_method(m) for m in methods}
    fixed = FixedLength(adapter)  # fixed-length generation: EOS never stops a row
    bandwidth = measure_bandwidth(adapter.device, bandwidth_bytes)
    wbytes = weight_bytes(adapter)
    floor_ms = 1000 * wbytes / bandwidth
    vocab = adapter.hf_model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    rows = []
    for batch in batch_sizes:
        prompts = torch.randint(0, min(vocab, 150000), (batch, prompt_len), generator=gen).tolist()
        for method in methods:
            name, params = parsed[method]

            def once(n):
                if name == "generate":
                    return run_generate(adapter, prompts, n)
                return run_decoder(fixed, name, params, prompts, n, engine)

            once(min(new, 8))  # warm-up (kernels, allocator)
            for rep in range(repeats):
                with GpuSampler(cuda_device=adapter.device, enabled=adapter.device.type == "cuda") as sampler:
                    tokens, seconds, ms_fwd, tpf = once(new)
                tele = sampler.result()
                rows.append(dict(
                    model=adapter.name, dtype=str(adapter.dtype).removeprefix("torch."), device=str(adapter.device),
                    method=method, engine="hf" if name == "generate" else engine, batch_size=batch, prompt_len=prompt_len, new_tokens=new, repeat=rep,
                    tokens=tokens, seconds=seconds, tok_s=tokens / seconds, ms_per_forward=ms_fwd, tpf=tpf,
                    weight_gb=wbytes / 1e9, bandwidth_gb_s=bandwidth / 1e9, floor_ms=floor_ms,
                    roofline_fraction=floor_ms / ms_fwd, peak_mem_mib=tele["torch_peak_mem_mib"],
                    gpu_util_mean=tele["gpu_util_mean"], energy_j=tele["energy_j"],
                    j_per_token=tele["energy_j"] / tokens,
                ))
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    agg = df.groupby(["model", "batch_size", "method", "engine"], sort=False).median(numeric_only=True).reset_index()
    gen = agg[agg.method == "generate"].set_index("batch_size")["tok_s"]
    head = ("| model | batch | method | engine | ms/forward | floor ms | roofline | tokens/s | vs generate | TPF | "
            "peak MiB | GPU util % | J/token |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in agg.itertuples():
        vs = r.tok_s / gen[r.batch_size] if r.batch_size in gen.index else float("nan")
        lines.append(f"| {r.model} | {r.batch_size} | {r.method} | {r.engine} | {r.ms_per_forward:.2f} | {r.floor_ms:.2f} | "
                     f"{r.roofline_fraction:.2f} | {r.tok_s:.1f} | {vs:.2f} | {r.tpf:.2f} | {r.peak_mem_mib:.0f} | "
                     f"{r.gpu_util_mean:.0f} | {r.j_per_token:.3g} |")
    first = df.iloc[0]
    lines.append(f"\nmedian of {df.repeat.max() + 1} runs; bandwidth {first.bandwidth_gb_s:.1f} GB/s measured by "
                 f"a device copy; weights {first.weight_gb:.3f} GB; prompt {first.prompt_len} tokens, "
                 f"{first.new_tokens} new tokens, EOS ignored.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(prog="pdbench bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random-qwen2",
                    help="HF id, local dir, .gguf, alias, or arch:NAME for random weights (" + ", ".join(ARCHS) + ")")
    ap.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    ap.add_argument("--methods", default=";".join(DEFAULT_METHODS),
                    help="';'-separated: generate, or any decoder as NAME[:param=value,...] (default: %(default)s)")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine", default="dynamic", choices=["dynamic", "static"],
                    help="pdbench decode path: growing DynamicCache or fixed-shape slot cache")
    ap.add_argument("--device")
    ap.add_argument("--dtype")
    ap.add_argument("--bandwidth-mib", type=int, default=0, help="copy size for the bandwidth probe (0: 2048 on GPU, 256 on CPU)")
    ap.add_argument("--out", default=None, help="output directory (default results/bench-<time>)")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(";") if m]
    for m in methods:
        try:
            parse_method(m)
        except (KeyError, ValueError) as e:
            ap.error(f"--methods {m!r}: {e.args[0] if isinstance(e, KeyError) else e}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.new_tokens < 2:
        ap.error("--new-tokens must be >= 2")
    if args.model.startswith("arch:"):
        adapter = random_arch_model(args.model[5:], args.device, args.dtype)
    else:
        adapter = load_model(args.model, device=args.device, dtype=args.dtype)
    mib = args.bandwidth_mib or (2048 if adapter.device.type == "cuda" else 256)
    df = bench(adapter, batch_sizes, methods, args.prompt_len, args.new_tokens, args.repeats, mib * 2**20, args.engine)
    out = Path(args.out or f"results/bench-{dt.datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / "bench.parquet", index=False)
    table = markdown(df)
    (out / "bench.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {out / 'bench.parquet'} and {out / 'bench.md'}")
    return df


if __name__ == "__main__":
    main()
