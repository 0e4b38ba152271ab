"""Train the toy masked-diffusion model (pdbench-toy-mdm): a bidirectional LLaDA-style model on the
synthetic suites, CPU, seeded. Run from the repo root:

    python -m toy.train_mdm --out /tmp/mdm            # the shipped recipe (all defaults)
    python -m toy.train_mdm --out /tmp/mdm --steps 300 --eval-n 20

Objective: LLaDA's (specs/block_diffusion.md §3.1). Each example is the rendered prompt and an answer
region of exactly --gen-len slots: the response, <|im_end|>, then <|endoftext|> filler, as the
decoder's canvas will hold it. A ratio t ~ U(1e-3, 1] is drawn per example, each answer slot is replaced
by the mask token with probability t, and the loss is the cross-entropy on the masked slots, weighted
1/t, summed and divided by the answer length per example (LLaDA's SFT form). A share --prompt-mask-frac
of the examples noise the prompt as well and divide by the whole length (LLaDA's pre-training form):
predicting a masked prompt name from the answer trains the same copying that the answer needs.
Attention is fully bidirectional inside an example (packed rows get a block-diagonal mask, positions
restart per example); logits are read in place (the row of a slot scores that slot).

The checkpoint is a stock LlamaForCausalLM whose config says `pdbench_family = "llada"` (the harness
reads the family from it: bidirectional, in place) and `mask_token_id`. The tokenizer is the shipped
pdbench-toy's (the same ids and chat template). Writes the checkpoint, train_log.jsonl and run.json
(command, config, wall and process CPU time, size) into --out; nothing here writes into the package.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see toy/train.py

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from suites.prompts import plain_from_messages, render_ids  # noqa: E402
from toy.data import chat_messages, train_stream  # noqa: E402
from toy.tokenizer import IM_END, PAD, save_tokenizer  # noqa: E402
from toy.train import check_compiler, lr_at  # noqa: E402

IGNORE = -100
T_EPS = 1e-3  # LLaDA's lower bound on the masking ratio


@dataclass
class MDMConfig:
    out: str = ""  # required: the run directory
    steps: int = 3000
    rows: int = 2  # packed rows per step
    row_len: int = 512
    gen_len: int = 64  # answer slots per example = the decoder's max_new_tokens
    seed: int = 0
    arith_weight: float = 0.5  # share of arith problems (the rest: toy-code)
    prompt_mask_frac: float = 0.3  # share of examples whose prompt is masked too (LLaDA's pre-training form)
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
    eval_n: int = 0  # after training: accuracy of the canvas decoder on N test problems per suite
    compile: bool = True  # as toy/train.py: faster steps, different rounding
    fused_adamw: bool = True


def load_toy_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from harness.models import TOY_CHECKPOINT

    return PreTrainedTokenizerFast.from_pretrained(TOY_CHECKPOINT)


def make_model(cfg: MDMConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = tokenizer.convert_tokens_to_ids
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, intermediate_size=cfg.intermediate,
        max_position_embeddings=1024, rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-6,
        bos_token_id=None, eos_token_id=ids(IM_END), pad_token_id=ids(PAD), attn_implementation="sdpa",
    )
    config.mask_token_id = tokenizer.mask_token_id  # the adapter and decoders read it from here
    config.pdbench_family = "llada"  # harness/families.py: bidirectional attention, logits in place
    return LlamaForCausalLM(config)


def encode(tokenizer, problem, gen_len: int) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids of exactly gen_len: response, <|im_end|>, <|endoftext|> filler)."""
    messages = chat_messages(problem)
    prompt = list(render_ids(messages, tokenizer, plain_from_messages(messages)))
    ids = tokenizer.convert_tokens_to_ids
    answer = tokenizer.encode(problem.solution, add_special_tokens=False)[: gen_len - 1] + [ids(IM_END)]
    return prompt, answer + [ids(PAD)] * (gen_len - len(answer))


def batches(cfg: MDMConfig, tokenizer):
    """Endless packed batches: (input_ids, position_ids, additive mask, labels, weights) per step."""
    rng = random.Random(f"mdm-mask/{cfg.seed}")
    stream = train_stream(cfg.seed, {"arith": cfg.arith_weight, "code": 1.0 - cfg.arith_weight})
    mask_id, pad_id = tokenizer.mask_token_id, tokenizer.pad_token_id
    carry = None
    while True:
        R, L = cfg.rows, cfg.row_len
        ids = torch.full((R, L), pad_id, dtype=torch.long)
        pos = torch.zeros((R, L), dtype=torch.long)
        labels = torch.full((R, L), IGNORE, dtype=torch.long)
        weights = torch.zeros((R, L))
        visible = torch.zeros((R, L, L), dtype=torch.bool)
        for r in range(R):
            used = 0
            while True:
                if carry is None:
                    carry = encode(tokenizer, next(stream), cfg.gen_len)
                prompt, answer = carry
                n = len(prompt) + len(answer)
                if used + n > L:
                    break
                t = (1 - T_EPS) * rng.random() + T_EPS
                whole = rng.random() < cfg.prompt_mask_frac  # pre-training form: the prompt is noised too
                clean = answer if not whole else prompt + answer
                noisy = [mask_id if rng.random() < t else a for a in clean]
                first = s = used  # first: where the noised span starts
                if not whole:
                    first = s + len(prompt)
                    ids[r, s:first] = torch.tensor(prompt)
                ids[r, first:s + n] = torch.tensor(noisy)
                pos[r, s:s + n] = torch.arange(n)
                visible[r, s:s + n, s:s + n] = True  # bidirectional inside the example only
                for j, (a, z) in enumerate(zip(clean, noisy)):
                    if z == mask_id:  # normalised by the noised length (LLaDA: answer length in SFT)
                        labels[r, first + j] = a
                        weights[r, first + j] = cfg.gen_len / (t * len(clean))
                used += n
                carry = None
            visible[r, used:, used:] = torch.eye(L - used, dtype=torch.bool)  # filler rows see themselves
        mask = torch.zeros((R, 1, L, L)).masked_fill_(~visible[:, None], torch.finfo(torch.float32).min)
        n_examples = (pos == 0).logical_and(ids != pad_id).sum().float()  # a tensor: no recompiles
        yield ids, pos, mask, labels, weights, n_examples


def loss_fn(model, ids, pos, mask, labels, weights, n_examples: torch.Tensor, gen_len: int) -> torch.Tensor:
    logits = model(input_ids=ids, position_ids=pos, attention_mask=mask).logits
    ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=IGNORE, reduction="none")
    return (ce * weights.view(-1)).sum() / (gen_len * n_examples)


def train(cfg: MDMConfig, argv: list[str] | None = None) -> Path:
    from transformers import GenerationConfig

    check_compiler(cfg)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_toy_tokenizer()
    model = make_model(cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98),
                            fused=cfg.fused_adamw or None)
    step_loss = torch.compile(loss_fn) if cfg.compile else loss_fn
    log = (out / "train_log.jsonl").open("w")
    t0, cpu0, data = time.perf_counter(), time.process_time(), batches(cfg, tokenizer)
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        ids, pos, mask, labels, weights, n_examples = next(data)
        loss = step_loss(model, ids, pos, mask, labels, weights, n_examples, cfg.gen_len)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "lr": round(lr_at(step, cfg), 6), "loss": round(loss.item(), 4),
                   "masked": int((labels != IGNORE).sum()), "elapsed_s": round(time.perf_counter() - t0, 1),
                   "cpu_s": round(time.process_time() - cpu0, 1)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(json.dumps(row), flush=True)
    log.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)
    ids = tokenizer.convert_tokens_to_ids
    GenerationConfig(eos_token_id=[ids(IM_END), ids(PAD)], pad_token_id=ids(PAD), do_sample=False,
                     max_new_tokens=cfg.gen_len).save_pretrained(out)
    command = "python -m toy.train_mdm " + shlex.join(argv if argv is not None else sys.argv[1:])
    record = {"command": command, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "threads": cfg.threads,
              "torch": torch.__version__, "n_params": n_params,
              "size_mb": round((out / "model.safetensors").stat().st_size / 1e6, 1), "config": asdict(cfg)}
    (out / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    if cfg.eval_n:
        print(json.dumps(evaluate(out, cfg.eval_n, cfg.gen_len), indent=1))
    return out


def evaluate(path: Path, n: int, gen_len: int) -> dict:
    """One token per forward (LLaDA's schedule, steps = block size) and Fast-dLLM threshold 0.9."""
    from toy.evaluate import evaluate_decoders

    preset = [("block-diffusion", dict(block_size=16, policy="steps", max_steps_per_block=16)),
              ("block-diffusion", dict(block_size=16, policy="threshold", threshold=0.9))]
    return evaluate_decoders(str(path), n, gen_len, batch_size=16, preset=preset)


def parse_args(argv: list[str] | None) -> MDMConfig:
    defaults = MDMConfig()
    parser = argparse.ArgumentParser(prog="python -m toy.train_mdm", description=__doc__.split("\n\n")[0])
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if name == "out":
            parser.add_argument(flag, required=True, help="run directory for the checkpoint, log and run.json")
        elif isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=f"(default {value})")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"(default {value!r})")
    return MDMConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train(parse_args(argv), argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
