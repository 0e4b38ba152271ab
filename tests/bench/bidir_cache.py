"""Fast-dLLM's approximate caches on bidirectional models: what they save and what they cost.

Table 1, speed: ms per forward of `block-diffusion` on the tiny LLaDA fixture and on the toy (CPU), canvas of
--contexts tokens (the prompt is the context minus --gen; blocks of --block), one slot decided per
forward (LLaDA's schedule with steps = block size), so every cache mode runs the same number of
forwards. `none` forwards the whole canvas; `prefix` / `dual` columns time the forwards that use the
cache (the block's first forward is a whole-canvas refresh, counted in the per-token column).

Table 2, accuracy: the toy masked-diffusion model (pdbench-toy-mdm) on the synthetic suites, cache
none / prefix / dual, LLaDA's schedule at one token per forward and Fast-dLLM's threshold.

    python tests/bench/bidir_cache.py [--contexts 128,256,512,1024] [--repeats 3] [--n 100] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import decoders  # noqa: E402
from harness.models import load_model  # noqa: E402
from tests.conftest import FIXTURES  # noqa: E402

MODES = ("none", "prefix", "dual")


def time_modes(adapter, context: int, gen: int, block: int, repeats: int) -> dict[str, dict[str, float]]:
    """-> mode -> {"step_ms": median ms of a cached (or, for none, any) forward, "token_ms": wall ms per token}."""
    gen_ids = torch.Generator().manual_seed(context)
    vocab = adapter.hf_model.get_input_embeddings().weight.shape[0]
    prompt = torch.randint(4, vocab, (context - gen,), generator=gen_ids).tolist()  # ids 0-3: specials
    out = {}
    for mode in MODES:
        dec = decoders.get("block-diffusion", block_size=block, policy="steps", max_steps_per_block=block,
                           cache=mode, stop_at_eos=False)
        dec.generate(adapter, [prompt], gen)  # warm-up
        steps, per_token = [], []
        for _ in range(repeats):
            first = adapter.n_forward
            t0 = time.perf_counter()
            (r,) = dec.generate(adapter, [prompt], gen)
            per_token.append((time.perf_counter() - t0) / gen * 1e3)
            seconds = adapter.forward_seconds(first, adapter.n_forward)
            # with a cache, forward 0 of every block is the whole-canvas refresh
            steps += [s for i, s in enumerate(seconds) if mode == "none" or i % block]
        out[mode] = {"step_ms": statistics.median(steps) * 1e3, "token_ms": statistics.median(per_token)}
    return out


def speed_table(model: str, contexts: list[int], gen: int, block: int, repeats: int) -> str:
    adapter = load_model(model, device="cpu", dtype="float32")
    lines = ["| context | none ms/fwd | prefix ms/fwd | dual ms/fwd | dual speedup | none / prefix / dual ms per token |",
             "|---|---|---|---|---|---|"]
    for ctx in contexts:
        t = time_modes(adapter, ctx, gen, block, repeats)
        lines.append(f"| {ctx} | {t['none']['step_ms']:.2f} | {t['prefix']['step_ms']:.2f} | {t['dual']['step_ms']:.2f} "
                     f"| {t['none']['step_ms'] / t['dual']['step_ms']:.1f}x | "
                     + " / ".join(f"{t[m]['token_ms']:.2f}" for m in MODES) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def accuracy_table(model: str, n: int, gen: int, batch: int) -> str:
    import suites
    from toy.evaluate import decode_and_grade

    adapter = load_model(model, device="cpu", dtype="float32")
    policies = [("steps (1 token/forward)", dict(policy="steps", max_steps_per_block=16)),
                ("threshold 0.9", dict(policy="threshold", threshold=0.9)),
                ("threshold 0.7", dict(policy="threshold", threshold=0.7))]
    lines = ["| suite | policy | " + " | ".join(f"{m} acc / tpf" for m in MODES) + " | max gap vs none |",
             "|---|---|---|---|---|---|"]
    for name in ("toy-code", "arith"):
        suite = suites.get(name, limit=n, allow_code_exec=True)
        samples = list(suite.samples())
        prompts = [suite.render(s, adapter.tokenizer) for s in samples]
        for label, params in policies:
            cells = {}
            for mode in MODES:
                dec = decoders.get("block-diffusion", block_size=16, cache=mode, **params)
                results, acc, _ = decode_and_grade(adapter, suite, samples, prompts, dec, gen, batch)
                cells[mode] = (acc, sum(r.tpf for r in results) / len(results))  # the report's TPF: a mean
            gap = max(abs(cells[m][0] - cells["none"][0]) for m in MODES) * 100
            lines.append(f"| {name} | {label} | " + " | ".join(f"{cells[m][0]:.2f} / {cells[m][1]:.2f}" for m in MODES)
                         + f" | {gap:.0f} pt |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", default="128,256,512,1024")
    ap.add_argument("--gen", type=int, default=64, help="generated slots (the rest of the context is prompt)")
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--toy", default="pdbench-toy-mdm", help="model for the accuracy table ('' to skip)")
    ap.add_argument("--n", type=int, default=100, help="problems per suite for the accuracy table (0: skip it)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", help="also write the tables to this markdown file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    contexts = [int(c) for c in args.contexts.split(",")]
    text = ""
    for label, model in (("the tiny LLaDA fixture (d 16, 2 layers, vocab 126k)", str(FIXTURES / "refmodels" / "llada-tiny")),
                         (f"{args.toy} (d 192, 4 layers, vocab 735)", args.toy)):
        if not model:
            continue
        speed = speed_table(model, contexts, args.gen, args.block, args.repeats)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        text += (f"## Dual cache vs no cache: {label}, CPU, {args.threads} thread(s), gen {args.gen}, "
                 f"block {args.block}, median of {args.repeats} (load average after: {load})\n\n{speed}\n\n")
    if args.toy and args.n:
        acc = accuracy_table(args.toy, args.n, 64, args.batch)
        text += f"## Cache modes on {args.toy}: {args.n} test problems per suite, block 16, gen 64\n\n{acc}\n"
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
