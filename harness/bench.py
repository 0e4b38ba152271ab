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
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

import decoders
from harness.adapter import HFModelAdapter
from harness.models import load_model, pick_device_dtype
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
ENGINES = ("dynamic", "static")
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
    if "engine" in params:
        raise ValueError(f"method {text!r}: the engine is chosen by --engine, not inside a method")
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
    """Bytes/s of a device-to-device copy (read + write), best of 5. On GPU each copy is timed by CUDA
    events around it (device time), not by host clocks around a synchronize, whose latency is a few
    percent of a ~1 ms copy. The buffers are freed before the model runs."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: allocation and clocks ramping up are not timed
    best = float("inf")
    for _ in range(5):
        if device.type == "cuda":
            stream = torch.cuda.current_stream(device)  # the copy's stream, whichever device is current
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            dst.copy_(src)
            end.record(stream)
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000.0
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            seconds = time.perf_counter() - t0
        best = min(best, seconds)
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * nbytes / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def weight_bytes(adapter: HFModelAdapter) -> int:
    """Bytes of weights one decode forward reads: every parameter once (tied embeddings are one
    tensor), except an input embedding table of its own, of which a forward reads only the rows of its
    tokens (151936 x 3584 bf16 = 1.1 GB of Qwen2.5-7B that no decode step streams)."""
    model = adapter.hf_model
    emb_in, emb_out = model.get_input_embeddings(), model.get_output_embeddings()
    lookup_only = set()
    if emb_in is not None and (emb_out is None or emb_in.weight.data_ptr() != emb_out.weight.data_ptr()):
        lookup_only.add(emb_in.weight.data_ptr())
    seen = {}
    for p in model.parameters():
        if p.data_ptr() not in lookup_only:
            seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())


def decode_ms(adapter, first: int) -> float:
    """Mean device time (ms) of the forwards after number `first` (its prefill), from the adapter's
    hooks: CUDA events on GPU, so host overhead between forwards is left out, as for every method.
    NaN when the run had no decode forward."""
    times = adapter.forward_seconds(first + 1, adapter.n_forward)
    return 1000 * sum(times) / len(times) if times else float("nan")


def run_generate(adapter: HFModelAdapter, prompts: list[list[int]], new: int) -> tuple[int, float, float, float, int]:
    """-> (tokens, seconds, ms per decode forward, TPF, forwards) for HF generate, EOS ignored. generate()
    runs the same hooked model, so its forwards are counted and timed exactly like the decoders'."""
    ids = torch.tensor(prompts, device=adapter.device)
    sync(adapter.device)
    first = adapter.n_forward
    t0 = time.perf_counter()
    out = adapter.hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                    pad_token_id=adapter.pad_id, max_new_tokens=new, min_new_tokens=new)
    sync(adapter.device)
    seconds = time.perf_counter() - t0
    if out.shape[1] - ids.shape[1] != new:
        raise RuntimeError(f"generate returned {out.shape[1] - ids.shape[1]} new tokens, asked for exactly {new}")
    forwards = adapter.n_forward - first  # every row takes part in every forward of generate()
    return new * len(prompts), seconds, decode_ms(adapter, first), new / forwards, forwards


def run_decoder(adapter, name: str, params: dict, prompts, new: int, engine: str = "dynamic"):
    """-> (tokens, seconds, ms per decode forward (the adapter's own times, prefill left out), TPF
    (sum of tokens / sum of the rows' forwards, as DESIGN defines it), forwards the adapter ran)."""
    sync(adapter.device)
    first = adapter.n_forward
    t0 = time.perf_counter()
    results = decoders.get(name, **{**params, "engine": engine}).generate(adapter, prompts, new)
    sync(adapter.device)
    seconds = time.perf_counter() - t0
    tokens = sum(r.n_tokens for r in results)
    tpf = tokens / sum(r.n_forward for r in results)
    return tokens, seconds, decode_ms(adapter, first), tpf, adapter.n_forward - first


def bench(adapter: HFModelAdapter, batch_sizes: list[int], methods: list[str], prompt_len: int, new: int,
          repeats: int, bandwidth_bytes: int, engines: str | list[str] = "dynamic",
          on_rows: Callable[[pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """`methods`: "generate" or NAME[:param=value,...] of any registered decoder, each decoder run on
    every engine in `engines` ("generate" is HF's own loop: once). `on_rows` gets the table so far
    after every method x batch, so a run stopped by a time limit keeps what it measured."""
    engines = [engines] if isinstance(engines, str) else list(engines)
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
            for engine in (["hf"] if name == "generate" else engines):

                def once(n):
                    if name == "generate":
                        return run_generate(adapter, prompts, n)
                    return run_decoder(fixed, name, params, prompts, n, engine)

                once(min(new, 8))  # warm-up (kernels, allocator)
                for rep in range(repeats):
                    with GpuSampler(cuda_device=adapter.device, enabled=adapter.device.type == "cuda") as sampler:
                        tokens, seconds, ms_fwd, tpf, forwards = once(new)
                    tele = sampler.result()
                    rows.append(dict(
                        model=adapter.name, dtype=str(adapter.dtype).removeprefix("torch."),
                        device=str(adapter.device), method=method, engine=engine, batch_size=batch,
                        prompt_len=prompt_len, new_tokens=new, repeat=rep, tokens=tokens, seconds=seconds,
                        tok_s=tokens / seconds, forwards=forwards, ms_per_forward=ms_fwd,
                        wall_ms_per_forward=1000 * seconds / forwards, tpf=tpf, weight_gb=wbytes / 1e9,
                        bandwidth_gb_s=bandwidth / 1e9, floor_ms=floor_ms, roofline_fraction=floor_ms / ms_fwd,
                        peak_mem_mib=tele["torch_peak_mem_mib"], gpu_util_mean=tele["gpu_util_mean"],
                        energy_j=tele["energy_j"], j_per_token=tele["energy_j"] / tokens,
                    ))
                if on_rows is not None:
                    on_rows(pd.DataFrame(rows))
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    agg = (df.groupby(["model", "batch_size", "method", "engine"], sort=False).median(numeric_only=True)
           .reset_index().sort_values("batch_size", kind="stable"))
    gen = agg[agg.method == "generate"].set_index("batch_size")["tok_s"]
    head = ("| model | batch | method | engine | ms/forward | wall ms/step | floor ms | roofline | tokens/s | "
            "vs generate | TPF | peak MiB | GPU util % | J/token |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in agg.itertuples():
        vs = r.tok_s / gen[r.batch_size] if r.batch_size in gen.index else float("nan")
        lines.append(f"| {r.model} | {r.batch_size} | {r.method} | {r.engine} | {r.ms_per_forward:.2f} | "
                     f"{r.wall_ms_per_forward:.2f} | {r.floor_ms:.2f} | {r.roofline_fraction:.2f} | {r.tok_s:.1f} | "
                     f"{vs:.2f} | {r.tpf:.2f} | {r.peak_mem_mib:.0f} | {r.gpu_util_mean:.0f} | {r.j_per_token:.3g} |")
    first = df.iloc[0]
    name = first.get("device_name") or ""
    lines.append(f"\n{first['device']}{' ' + name if name else ''}, {first['dtype']}; median of {df.repeat.max() + 1} "
                 f"runs; ms/forward: device time of the decode forwards (prefill left out); wall ms/step: the "
                 f"run's wall time / its forwards (host overhead included); bandwidth {first.bandwidth_gb_s:.1f} GB/s "
                 f"measured by a device copy (read + write); weights read per forward {first.weight_gb:.3f} GB; "
                 f"prompt {first.prompt_len} tokens, {first.new_tokens} new tokens, EOS ignored.")
    return "\n".join(lines)


def write_outputs(df: pd.DataFrame, out: Path) -> None:
    """bench.parquet and bench.md, each replaced atomically: a run killed mid-write leaves the last
    complete table, never a torn file."""
    for name, write in (("bench.parquet", lambda f: df.to_parquet(f, index=False)),
                        ("bench.md", lambda f: f.write_text(markdown(df) + "\n"))):
        tmp = out / f".{name}.tmp"
        write(tmp)
        tmp.replace(out / name)


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
    ap.add_argument("--engine", default="dynamic",
                    help="pdbench decode path(s), comma-separated: dynamic (growing DynamicCache), static "
                         "(fixed-shape slot cache); each decoder runs on each (default %(default)s)")
    ap.add_argument("--device")
    ap.add_argument("--dtype")
    ap.add_argument("--bandwidth-mib", type=int, default=0, help="copy size for the bandwidth probe (0: 2048 on GPU, 256 on CPU)")
    ap.add_argument("--out", default=None, help="output directory (default results/bench-<time>); the table is "
                                                "rewritten after every method x batch, so a stopped run keeps its rows")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(";") if m]
    for m in methods:
        try:
            parse_method(m)
        except (KeyError, ValueError) as e:
            ap.error(f"--methods {m!r}: {e.args[0] if isinstance(e, KeyError) else e}")
    engines = [e for e in args.engine.split(",") if e]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        ap.error(f"--engine {args.engine!r}: accepted: {', '.join(ENGINES)} (comma-separated)")
    for m in methods:  # each method with each engine, before the model loads (not after the probe)
        name, params = parse_method(m)
        for engine in engines if name != "generate" else []:
            try:
                decoders.get(name, **{**params, "engine": engine})
            except (KeyError, ValueError) as e:
                ap.error(f"--methods {m!r} with --engine {engine}: {e.args[0] if isinstance(e, KeyError) else e}")
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        ap.error(f"--batch-sizes {args.batch_sizes!r}: accepted: ints >= 1, comma-separated (e.g. 1,8,32)")
    if args.new_tokens < 2:
        ap.error(f"--new-tokens {args.new_tokens}: accepted: an int >= 2")
    if args.repeats < 1:
        ap.error(f"--repeats {args.repeats}: accepted: an int >= 1")
    if args.bandwidth_mib < 0:
        ap.error(f"--bandwidth-mib {args.bandwidth_mib}: accepted: an int >= 0 (0: the default size)")
    out = Path(args.out or f"results/bench-{dt.datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    if args.model.startswith("arch:"):
        adapter = random_arch_model(args.model[5:], args.device, args.dtype)
    else:
        adapter = load_model(args.model, device=args.device, dtype=args.dtype)
    mib = args.bandwidth_mib or (2048 if adapter.device.type == "cuda" else 256)
    device_name = ""
    if adapter.device.type == "cuda":
        torch.cuda.set_device(adapter.device)  # --device cuda:1: kernels, events and syncs all on that GPU
        device_name = torch.cuda.get_device_name(adapter.device)

    def save(df: pd.DataFrame) -> None:
        write_outputs(df.assign(device_name=device_name), out)

    df = bench(adapter, batch_sizes, methods, args.prompt_len, args.new_tokens, args.repeats, mib * 2**20, engines,
               on_rows=save).assign(device_name=device_name)
    save(df)
    print(markdown(df))
    print(f"\nwrote {out / 'bench.parquet'} and {out / 'bench.md'}")
    return df


if __name__ == "__main__":
    main()
