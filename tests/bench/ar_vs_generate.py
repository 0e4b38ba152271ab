"""Tokens/s of pdbench's `ar` decoder against `model.generate(do_sample=False)` on the same model and
prompts (EOS ignored so both produce exactly max_new_tokens). Prints a table and the ratio.

    python tests/bench/ar_vs_generate.py [--model tiny-random-qwen2] [--batch 1] [--new 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import decoders
from harness.models import load_model


def time_generate(adapter, prompts, new_tokens):
    hf, pad = adapter.hf_model, adapter.pad_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=adapter.device)
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=adapter.device)
    adapter.synchronize()
    t0 = time.perf_counter()
    out = hf.generate(ids, attention_mask=attn, do_sample=False, max_new_tokens=new_tokens,
                      min_new_tokens=new_tokens, pad_token_id=pad)
    adapter.synchronize()
    return (out.shape[1] - width) * len(prompts), time.perf_counter() - t0


def time_ar(adapter, prompts, new_tokens):
    adapter.eos_ids = (-1,)  # ignore EOS: fixed-length generation, as min_new_tokens does for generate
    t0 = time.perf_counter()
    res = decoders.get("ar").generate(adapter, prompts, new_tokens)
    adapter.synchronize()
    return sum(r.n_tokens for r in res), time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random-qwen2")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    adapter = load_model(args.model)
    tok = adapter.tokenizer
    texts = ["Natalia sold clips to 48 of her friends in April", "def fib(n):", "The capital of France is"]
    prompts = [tok.encode(texts[i % len(texts)]) for i in range(args.batch)]
    rates = {"generate": [], "ar": []}
    for name, fn in (("generate", time_generate), ("ar", time_ar)):
        fn(adapter, prompts, 8)  # warm-up
        for _ in range(args.repeats):
            n, s = fn(adapter, prompts, args.new)
            rates[name].append(n / s)
    print(f"model={args.model} batch={args.batch} new_tokens={args.new} repeats={args.repeats} "
          f"threads={torch.get_num_threads()} device={adapter.device}")
    print("| method | tokens/s (median) | min | max |\n|---|---|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {statistics.median(r):.1f} | {min(r):.1f} | {max(r):.1f} |")
    ratio = statistics.median(rates["ar"]) / statistics.median(rates["generate"])
    print(f"ar / generate tokens/s ratio: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
