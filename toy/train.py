"""Train the toy SDLM model, SDLM-style, on the synthetic suites (CPU, seeded). Run from the repo root:

    python -m toy.train --out /tmp/toy             # the shipped pdbench-toy recipe (all defaults, ~18 min on 2 cores)
    python -m toy.train --out /tmp/toy --steps 1200 --seed 1

Objective per packed batch (layout.py): plain next-token cross-entropy on the clean response (what
`ar` decodes with) + cross-entropy on the block rows (SDLM's next-sequence prediction, sdlm.md §4,
D = --block-size), where a fraction --partial-frac of blocks are partially revealed (what
`block-diffusion` sees after its first pass). A share --drill-frac of the packed examples are bare
arithmetic drills (toy/data.py arith_drill) instead of rendered problems. Deterministic on CPU
for a given seed and thread count: data comes from seeded streams, the model from torch.manual_seed.
Writes the checkpoint, tokenizer, train_log.jsonl (one line per --log-every steps) and run.json (the
command, config, wall time and size) into --out, which is required: nothing here writes into the
package. Shipping a run = copying its weights into harness/checkpoints/ and its log into toy/logs/.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# On a shared CPU, OpenMP threads that spin while waiting for a descheduled peer waste most of the
# time (measured 3x slower under load). Only effective if torch is not imported yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from toy.layout import IGNORE, Example, build_example, pack
from toy.tokenizer import IM_END, PAD, build_tokenizer, save_tokenizer
from suites.prompts import plain_from_messages, render_ids
from suites.synthetic import Problem
from toy.data import arith_drill, chat_messages, train_stream

@dataclass
class TrainConfig:
    out: str = ""  # required: the run directory
    steps: int = 4000
    rows: int = 2  # rows per step
    row_len: int = 512  # tokens per row (several examples packed per row)
    seed: int = 0
    block_size: int = 4
    partial_frac: float = 0.3
    block_frac: float = 0.5  # share of response positions that get a block (SDLM itself uses ~75%)
    prompt_loss: float = 0.25  # weight of the next-token loss on prompt text: repeated names and numbers
    # there teach copying (the first thing the model must learn) at no extra compute
    arith_weight: float = 0.7  # share of arith problems in the stream (the rest: toy-code)
    drill_frac: float = 0.1  # share of examples that are bare arithmetic drills (synthetic.arith_drill)
    drill_from: float = 0.0  # drills start after this fraction of the steps (before it: problems only)
    hidden: int = 192
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 768
    lr: float = 2e-3
    min_lr_frac: float = 0.05
    warmup: int = 50
    weight_decay: float = 0.01
    threads: int = 2
    log_every: int = 10
    tokenizer: str = ""  # reuse a saved tokenizer dir instead of building one
    eval_n: int = 0  # after training: greedy AR / SDLM accuracy on this many test problems per suite
    # Speed (measured per step on 2 cores: 0.32 s eager, 0.28 s + fused AdamW, 0.25 s + compile). Both
    # change the rounding, so --no-compile / --no-fused-adamw train a different model than the shipped one.
    compile: bool = True  # torch.compile the loss; inductor builds its CPU kernels with a C++ compiler
    fused_adamw: bool = True  # one fused AdamW kernel instead of a dozen ops per parameter group


def encode(tokenizer, problem: Problem) -> tuple[list[int], int]:
    """(x0, response_start): rendered prompt + response + <|im_end|>, as the harness renders prompts."""
    messages = chat_messages(problem)
    prompt = render_ids(messages, tokenizer, plain_from_messages(messages))  # exactly what the suites render
    response = tokenizer.encode(problem.solution, add_special_tokens=False)
    return list(prompt) + response + [tokenizer.convert_tokens_to_ids(IM_END)], len(prompt)


def make_model(cfg: TrainConfig, tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, intermediate_size=cfg.intermediate,
        max_position_embeddings=1024, rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-6,
        bos_token_id=None, eos_token_id=ids(IM_END), pad_token_id=ids(PAD),
        attn_implementation="eager",
    )
    # SDLM's config fields (sdlm.md §1): decoders read the mask id and trained block size from here.
    config.block_size = cfg.block_size
    config.causal_attn = False
    config.text_mask_token_id = tokenizer.mask_token_id
    config.text_mask_token = tokenizer.mask_token
    return Qwen2ForCausalLM(config)


def batches(cfg: TrainConfig, tokenizer):
    """Endless packed batches: problems in stream order, each row filled greedily until the next
    example would not fit (that example starts the next row, nothing is dropped)."""
    rng, drill_rng = random.Random(f"blocks/{cfg.seed}"), random.Random(f"drills/{cfg.seed}")
    mask_id = tokenizer.mask_token_id
    stream = train_stream(cfg.seed, {"arith": cfg.arith_weight, "code": 1.0 - cfg.arith_weight})

    def next_example(drill_frac: float) -> tuple[list[int], int]:
        if drill_rng.random() < drill_frac:  # bare text, all of it "response" (no EOS: it has no end)
            return tokenizer.encode(arith_drill(drill_rng), add_special_tokens=False), 1
        return encode(tokenizer, next(stream))

    carry: Example | None = None
    first_drill_step = int(cfg.drill_from * cfg.steps)
    for step in itertools.count():
        drill_frac = cfg.drill_frac if step >= first_drill_step else 0.0
        rows = []
        for _ in range(cfg.rows):
            row, used = [], 0
            while True:
                if carry is None:
                    x0, start = next_example(drill_frac)
                    heads = [p for p in range(start - 1, len(x0) - 1) if rng.random() < cfg.block_frac]
                    carry = build_example(x0, start, cfg.block_size, mask_id, rng, cfg.partial_frac, heads)
                if used + len(carry) > cfg.row_len:
                    if not row:
                        raise ValueError(f"an example of {len(carry)} tokens exceeds row_len={cfg.row_len}")
                    break
                row.append(carry)
                used += len(carry)
                carry = None
            rows.append(row)
        yield pack(rows, cfg.row_len, tokenizer.pad_token_id)


def losses(model, batch, block_size: int, prompt_weight: float = 0.0) -> dict[str, torch.Tensor]:
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                   attention_mask=batch.additive_mask()).logits
    flat = logits.view(-1, logits.shape[-1])
    ar = F.cross_entropy(flat, batch.ar_labels.view(-1), ignore_index=IGNORE)
    per_row = F.cross_entropy(flat, batch.block_labels.view(-1), ignore_index=IGNORE, reduction="none")
    has = batch.block_labels.view(-1) != IGNORE
    block = per_row[has].mean()
    prompt = F.cross_entropy(flat, batch.prompt_labels.view(-1), ignore_index=IGNORE)
    out = {"loss": ar + block + prompt_weight * prompt, "ar": ar, "block": block, "prompt": prompt}
    offsets = batch.block_offset.view(-1)
    for j in range(block_size):  # per-offset block losses (SDLM logs loss_pos_1..D the same way)
        sel = has & (offsets == j)
        if sel.any():
            out[f"pos{j + 1}"] = per_row[sel].mean()
    return out


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(model, tokenizer, out: Path) -> None:
    from transformers import GenerationConfig

    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)
    ids = tokenizer.convert_tokens_to_ids
    GenerationConfig(eos_token_id=[ids(IM_END), ids(PAD)], pad_token_id=ids(PAD), do_sample=False,
                     max_new_tokens=96).save_pretrained(out)


def check_compiler(cfg: TrainConfig) -> None:
    """--compile fails deep inside inductor, after the model is built, without a C++ compiler: say so first."""
    candidates = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    if cfg.compile and not any(c and shutil.which(c) for c in candidates):
        raise SystemExit("toy.train --compile needs a C++ compiler (torch.compile builds its CPU kernels with one); "
                         "none found as $CXX, g++, c++ or clang++. Install one, or pass --no-compile (which trains "
                         "a model that differs from the shipped checkpoint in rounding).")


def train(cfg: TrainConfig, argv: list[str] | None = None) -> Path:
    from tqdm import tqdm
    from transformers import PreTrainedTokenizerFast

    check_compiler(cfg)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(cfg.tokenizer) if cfg.tokenizer else build_tokenizer()
    model = make_model(cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98),
                            fused=cfg.fused_adamw or None)
    # Shapes are fixed (rows x row_len), so the compiled graph is built once (~30 s) and reused.
    loss_fn = torch.compile(losses) if cfg.compile else losses
    log_path = out / "train_log.jsonl"
    log = log_path.open("w")
    t0, cpu0, tokens, data = time.perf_counter(), time.process_time(), 0, batches(cfg, tokenizer)
    model.train()
    bar = tqdm(range(cfg.steps), desc=f"toy.train {n_params / 1e6:.1f}M", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = next(data)
        parts = loss_fn(model, batch, cfg.block_size, cfg.prompt_loss)
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int((batch.input_ids != tokenizer.pad_token_id).sum())
        bar.set_postfix(loss=f"{parts['loss'].item():.3f}", ar=f"{parts['ar'].item():.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "lr": round(lr_at(step, cfg), 6), "tokens": tokens,
                   "elapsed_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
                   **{k: round(v.item(), 4) for k, v in parts.items()}}
            log.write(json.dumps(row) + "\n")
            log.flush()
    log.close()
    wall = time.perf_counter() - t0
    model.eval()
    save_checkpoint(model, tokenizer, out)
    command = "python -m toy.train " + shlex.join(argv if argv is not None else sys.argv[1:])
    write_run_record(out, cfg, command, wall, n_params, tokens)
    if cfg.eval_n:
        from toy.evaluate import evaluate_dir

        print(json.dumps(evaluate_dir(out, cfg.eval_n), indent=1))
    return out


def write_run_record(out: Path, cfg: TrainConfig, command: str, wall: float, n_params: int, tokens: int) -> None:
    """run.json: enough to reproduce and compare the run (the hand-written history is toy/TRAINING.md)."""
    record = {"command": command, "wall_s": round(wall, 1), "threads": cfg.threads, "torch": torch.__version__,
              "n_params": n_params, "tokens": tokens, "config": asdict(cfg)}
    (out / "run.json").write_text(json.dumps(record, indent=1) + "\n")


def parse_args(argv: list[str] | None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m toy.train", description=__doc__.split("\n\n")[0])
    helps = {
        "out": "run directory for the checkpoint, its log and run.json (required)",
        "steps": "optimizer steps (the schedule is fixed by this, so runs are reproducible)",
        "rows": "packed rows per step", "row_len": "tokens per packed row", "seed": "data + init seed",
        "block_size": "SDLM block size D", "partial_frac": "share of partially revealed blocks",
        "drill_frac": "share of examples that are bare arithmetic drills",
        "drill_from": "drills start after this fraction of the steps",
        "hidden": "model width", "layers": "decoder layers", "intermediate": "MLP width",
        "threads": "torch CPU threads", "tokenizer": "reuse this saved tokenizer directory",
        "eval_n": "evaluate on N test problems per suite after training (0 = skip)",
        "compile": "torch.compile the loss: faster steps, different rounding, so different weights",
        "fused_adamw": "fused AdamW update: faster steps, different rounding, so different weights",
    }
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        help_text = helps.get(name, name.replace("_", " ")) + f" (default {value!r})"
        if name == "out":
            parser.add_argument(flag, required=True, help=helps["out"])
        elif isinstance(value, bool):  # --compile / --no-compile (type=bool would read "False" as True)
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=help_text)
        else:
            parser.add_argument(flag, type=type(value), default=value, help=help_text)
    return TrainConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train(parse_args(argv), argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
