"""A small, self-contained greedy evaluator for the toy model (development and the post-training check).

Independent of `decoders/` on purpose: it is the reference the training was validated with. Both
decoders recompute the whole sequence each forward (no cache), batch 1, fp32:
  * `ar_decode`: plain causal next-token decoding;
  * `sdlm_decode`: SDLM confidence decoding (sdlm.md §3.2): the window [x_{n-1}, M x (D-1)] at
    positions n-1.. sees the prefix before x_{n-1} and itself; accept the longest prefix with
    p > threshold (at least 1); threshold >= 1 is first-token-only decoding.

    python -m toy.evaluate harness/checkpoints/pdbench-toy --n 100
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import suites
from harness.models import TOY_CHECKPOINT


def load(path: str | Path):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    return model, tokenizer


def eos_ids(model) -> set[int]:
    ids = model.generation_config.eos_token_id
    return set(ids if isinstance(ids, list) else [ids])


def _additive(visible: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(visible.shape, dtype=torch.float32)
    return mask.masked_fill_(~visible, torch.finfo(torch.float32).min)[None, None]


@torch.no_grad()
def ar_decode(model, prompt: list[int], max_new: int) -> tuple[list[int], int]:
    x, out, stops = list(prompt), [], eos_ids(model)
    while len(out) < max_new:
        logits = model(input_ids=torch.tensor([x]), logits_to_keep=1).logits[0, -1]
        token = int(logits.argmax())
        out.append(token)
        x.append(token)
        if token in stops:
            break
    return out, len(out)


def window_mask(n: int, D: int) -> torch.Tensor:
    """[n-1+D, n-1+D] bool: causal prefix x[0..n-1), then the window (head + D-1 masks) that sees
    that prefix and itself."""
    L = n - 1 + D
    visible = torch.ones(L, L, dtype=torch.bool).tril()
    visible[n - 1:, n - 1:] = True
    return visible


@torch.no_grad()
def sdlm_decode(model, prompt: list[int], max_new: int, threshold: float,
                block_size: int | None = None) -> tuple[list[int], int]:
    D = block_size or model.config.block_size
    mask_id, stops = model.config.text_mask_token_id, eos_ids(model)
    x, out, forwards = list(prompt), [], 0
    while len(out) < max_new:
        n = len(x)
        ids = torch.tensor([x + [mask_id] * (D - 1)])
        logits = model(input_ids=ids, position_ids=torch.arange(n - 1 + D)[None],
                       attention_mask=_additive(window_mask(n, D)), logits_to_keep=D).logits[0]
        forwards += 1
        probs = logits.softmax(-1)
        conf, tokens = probs.max(-1)
        accept = 1
        while accept < D and conf[accept] > threshold and conf[:accept].gt(threshold).all():
            accept += 1
        for token in tokens[:accept].tolist()[: max_new - len(out)]:
            out.append(token)
            x.append(token)
            if token in stops:
                return out, forwards
    return out, forwards


def evaluate(model, tokenizer, n: int, thresholds=(1.0, 0.9), max_new: int = 96,
             suite_names=("arith", "toy-code")) -> dict:
    results = {}
    for name in suite_names:
        suite = suites.get(name, limit=n, allow_code_exec=True)
        samples = list(suite.samples())
        methods = {"ar": lambda p: ar_decode(model, p, max_new)}
        for tau in thresholds:
            methods[f"sdlm@{tau}"] = lambda p, tau=tau: sdlm_decode(model, p, max_new, tau)
        for method, run in methods.items():
            t0, correct, tokens, forwards = time.perf_counter(), 0, 0, 0
            for sample in samples:
                out, nf = run(suite.render(sample, tokenizer))
                correct += suite.grade(sample, tokenizer.decode(out, skip_special_tokens=True)).correct
                tokens, forwards = tokens + len(out), forwards + nf
            results[f"{name}/{method}"] = {"acc": round(correct / len(samples), 3),
                                           "tpf": round(tokens / forwards, 2),
                                           "s": round(time.perf_counter() - t0, 1)}
    return results


def toy_preset_decoders() -> list[tuple[str, dict]]:
    """The decoders of harness/presets/toy.toml (what `pdbench run` compares), in its order, plus
    first-token-only `sdlm-conf` (τ = 1.0), the reference that `sdlm-ssd` must reproduce."""
    from harness.sweep import load_sweep, preset_path

    out: list[tuple[str, dict]] = []
    for cell in load_sweep(preset_path("toy")).cells:
        if (cell.decoder, cell.params) not in out:
            out.append((cell.decoder, cell.params))
    first_token_only = ("sdlm-conf", {**next(p for d, p in out if d == "sdlm-conf"), "threshold": 1.0})
    return out + [first_token_only]


def decode_and_grade(adapter, suite, samples, prompts, decoder, max_new: int, batch_size: int | None = None):
    """Decode `prompts` with a real decoder (decoders/), `batch_size` at a time (default: one batch),
    and grade the texts: (DecodeResults, accuracy, tokens per forward)."""
    step = batch_size or len(prompts)
    results = []
    for i in range(0, len(prompts), step):
        results += decoder.generate(adapter, prompts[i:i + step], max_new)
    texts = [adapter.tokenizer.decode(r.tokens, skip_special_tokens=True) for r in results]
    grades = suite.grade_many(list(zip(samples, texts)))
    accuracy = sum(g.correct for g in grades) / len(grades)
    tpf = sum(r.n_tokens for r in results) / sum(r.n_forward for r in results)
    return results, accuracy, tpf


def evaluate_decoders(model: str = "pdbench-toy", n: int = 100, max_new: int = 96, batch_size: int = 16,
                      preset=None, suite_names=("arith", "toy-code")) -> dict:
    """Accuracy and tokens per forward of the real decoders (decoders/) through the harness's model
    adapter, batched: the numbers `pdbench run` reports, without the runner."""
    import decoders
    from harness.models import load_model

    adapter = load_model(model)
    preset = toy_preset_decoders() if preset is None else preset
    results = {}
    for name in suite_names:
        suite = suites.get(name, limit=n, allow_code_exec=True)
        samples = list(suite.samples())
        prompts = [suite.render(s, adapter.tokenizer) for s in samples]
        for decoder_name, params in preset:
            t0 = time.perf_counter()
            _, accuracy, tpf = decode_and_grade(adapter, suite, samples, prompts, decoders.get(decoder_name, **params),
                                                max_new, batch_size)
            label = decoder_name + (f"({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
            results[f"{name}/{label}"] = {"acc": round(accuracy, 3), "tpf": round(tpf, 2),
                                          "s": round(time.perf_counter() - t0, 1)}
    return results


def evaluate_dir(path: str | Path, n: int, **kwargs) -> dict:
    model, tokenizer = load(path)
    return evaluate(model, tokenizer, n, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="greedy AR / SDLM accuracy of a toy checkpoint")
    parser.add_argument("path", nargs="?", default=str(TOY_CHECKPOINT))
    parser.add_argument("--n", type=int, default=100, help="test problems per suite")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[1.0, 0.9])
    parser.add_argument("--decoders", action="store_true",
                        help="run the toy preset's decoders (decoders/) instead of this file's reference loops")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.decoders:
        print(json.dumps(evaluate_decoders(args.path, args.n), indent=1))
    else:
        print(json.dumps(evaluate_dir(args.path, args.n, thresholds=tuple(args.thresholds)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
