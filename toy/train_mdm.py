"""Train the toy masked-diffusion model (pdbench-toy-mdm): a bidirectional diffusion LM on the
synthetic suites, CPU, seeded. Run from the repo root:

    python -m toy.train_mdm --out /tmp/mdm            # the shipped recipe (all defaults)
    python -m toy.train_mdm --out /tmp/mdm --steps 300 --eval-n 20
    python -m toy.train_mdm --out /tmp/mdm --init "" --logits in-place   # LLaDA from scratch (fails here)

Objective: LLaDA's (specs/block_diffusion.md §3.1). Each example is the rendered prompt and an answer
region of exactly --gen-len slots: the response, <|im_end|>, then <|endoftext|> filler, as the
decoder's canvas will hold it. A ratio t ~ U(1e-3, 1] is drawn per example (stratified across
examples, see `ratios`), each answer slot is replaced by the mask token with probability t, and the
loss is the cross-entropy on the masked slots, weighted 1/t, summed and divided by the answer length
per example (LLaDA's SFT form). A share --prompt-mask-frac of the examples noise the prompt as well and
divide by the whole length (LLaDA's pre-training form). Attention is fully bidirectional inside an
example (packed rows get a block-diagonal mask, positions restart per example).

Initialisation (--init): Dream's recipe at toy scale. The model starts from the causal pdbench-toy
(same tokenizer and chat template) and keeps its next-token head, so logits are read shifted (row p-1
scores slot p: the Dream family). From random weights (--init "", LLaDA's in-place logits) three runs
of up to 5000 steps learned the answer templates but never copied names or numbers from the prompt
(0 % on toy-code; toy/TRAINING-mdm.md); from the causal toy, 1000 steps reach 90 %.

The checkpoint's config says `pdbench_family` ("dream" or "llada"; the harness reads the family from
it) and `mask_token_id`. Writes the checkpoint, train_log.jsonl (loss, time, and every --probe-every
steps `copy_acc`: copying from the prompt, see `copy_probe`) and run.json (command, config, wall and
process CPU time, size) into --out; nothing here writes into the package.
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
    steps: int = 2500
    rows: int = 2  # packed rows per step
    row_len: int = 512
    gen_len: int = 64  # answer slots per example = the decoder's max_new_tokens
    seed: int = 0
    arith_weight: float = 0.5  # share of arith problems (the rest: toy-code)
    prompt_mask_frac: float = 0.3  # share of examples whose prompt is masked too (LLaDA's pre-training form)
    init: str = "pdbench-toy"  # start from this causal checkpoint (Dream's recipe); "" = random init (LLaDA's)
    logits: str = "shifted"  # shifted (row i-1 scores slot i: Dream, keeps an AR init's head) | in-place (LLaDA)
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
    probe_every: int = 500  # log copy_acc (see copy_probe) every N steps; 0 = never
    compile: bool = True  # as toy/train.py: faster steps, different rounding
    fused_adamw: bool = True


def load_toy_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from harness.models import TOY_CHECKPOINT

    return PreTrainedTokenizerFast.from_pretrained(TOY_CHECKPOINT)


def make_model(cfg: MDMConfig, tokenizer):
    if cfg.init:
        return adapt_model(cfg, tokenizer)
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = tokenizer.convert_tokens_to_ids
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, intermediate_size=cfg.intermediate,
        max_position_embeddings=1024, rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-6,
        bos_token_id=None, eos_token_id=ids(IM_END), pad_token_id=ids(PAD), attn_implementation="sdpa",
    )
    config.mask_token_id = tokenizer.mask_token_id  # the adapter and decoders read it from here
    config.pdbench_family = family_of(cfg)  # harness/families.py: bidirectional attention + the alignment
    return LlamaForCausalLM(config)


def family_of(cfg: MDMConfig) -> str:
    return "dream" if cfg.logits == "shifted" else "llada"


def adapt_model(cfg: MDMConfig, tokenizer):
    """Dream's recipe at toy scale: the causal toy's weights (same tokenizer), trained on from here with
    bidirectional attention. Its config loses the SDLM fields and says which family it now is."""
    from transformers import AutoModelForCausalLM

    from harness.models import resolve_model

    path, _ = resolve_model(cfg.init)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    config = model.config
    for key in ("text_mask_token_id", "text_mask_token", "block_size", "causal_attn"):
        if hasattr(config, key):
            delattr(config, key)
    config.mask_token_id = tokenizer.mask_token_id
    config.pdbench_family = family_of(cfg)
    return model


def encode(tokenizer, problem, gen_len: int) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids of exactly gen_len: response, <|im_end|>, <|endoftext|> filler)."""
    messages = chat_messages(problem)
    prompt = list(render_ids(messages, tokenizer, plain_from_messages(messages)))
    ids = tokenizer.convert_tokens_to_ids
    answer = tokenizer.encode(problem.solution, add_special_tokens=False)[: gen_len - 1] + [ids(IM_END)]
    return prompt, answer + [ids(PAD)] * (gen_len - len(answer))


def ratios(rng: random.Random, group: int = 16):
    """Endless masking ratios t ~ U(T_EPS, 1], stratified: each run of `group` draws has one value in
    each of `group` equal bins, in random order. Every t is still uniform (the objective is unchanged);
    a step is far less often dominated by one tiny t whose 1/t weight swamps the rest."""
    while True:
        u = rng.random()
        strata = [(i + u) / group for i in range(group)]
        rng.shuffle(strata)
        for x in strata:
            yield (1 - T_EPS) * x + T_EPS


def batches(cfg: MDMConfig, tokenizer):
    """Endless packed batches: (input_ids, position_ids, additive mask, labels, weights) per step."""
    rng = random.Random(f"mdm-mask/{cfg.seed}")
    shift = cfg.logits == "shifted"
    t_stream = ratios(random.Random(f"mdm-ratio/{cfg.seed}"))
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
                t = next(t_stream)
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
                if whole and shift:  # an example's first token has no row of its own before it
                    noisy[0] = clean[0]
                    ids[r, first] = clean[0]
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


def probe_set(cfg: MDMConfig, tokenizer, n: int = 32) -> list[tuple[list[int], list[int]]]:
    """Held-out training-split problems (a stream the run never draws) for copy_probe."""
    stream = train_stream(cfg.seed + 1000, {"arith": cfg.arith_weight, "code": 1.0 - cfg.arith_weight})
    return [encode(tokenizer, next(stream), cfg.gen_len) for _ in range(n)]


@torch.no_grad()
def copy_probe(model, examples, mask_id: int, wordlike: set[int], shift: int = 0) -> float:
    """Share of the answer's word-like tokens (names, arguments, digits) that also occur in the prompt
    predicted right when exactly those are masked and the rest of the answer is visible: whether copying
    from the prompt has formed, long before greedy accuracy moves."""
    hit = total = 0
    for prompt, answer in examples:
        copied = [j for j, a in enumerate(answer) if a in wordlike and a in set(prompt)]
        if not copied:
            continue
        ids = prompt + [mask_id if j in copied else a for j, a in enumerate(answer)]
        logits = model(input_ids=torch.tensor([ids]), attention_mask=torch.zeros(1, 1, len(ids), len(ids))).logits[0]
        pred = logits[[len(prompt) + j - shift for j in copied]].argmax(-1).tolist()
        hit += sum(int(p == answer[j]) for p, j in zip(pred, copied))
        total += len(copied)
    return hit / max(1, total)


def loss_fn(model, ids, pos, mask, labels, weights, n_examples: torch.Tensor, gen_len: int,
            shift: bool = False) -> torch.Tensor:
    logits = model(input_ids=ids, position_ids=pos, attention_mask=mask).logits
    if shift:  # row p-1 scores slot p (Dream): drop the last row, and the labels of each row's first slot
        logits, labels, weights = logits[:, :-1], labels[:, 1:], weights[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE,
                         reduction="none")
    return (ce * weights.reshape(-1)).sum() / (gen_len * n_examples)


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
    probes = probe_set(cfg, tokenizer) if cfg.probe_every else []
    wordlike = {i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip().isalnum()}
    log = (out / "train_log.jsonl").open("w")
    t0, cpu0, data = time.perf_counter(), time.process_time(), batches(cfg, tokenizer)
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        ids, pos, mask, labels, weights, n_examples = next(data)
        loss = step_loss(model, ids, pos, mask, labels, weights, n_examples, cfg.gen_len, cfg.logits == "shifted")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "lr": round(lr_at(step, cfg), 6), "loss": round(loss.item(), 4),
                   "masked": int((labels != IGNORE).sum()), "elapsed_s": round(time.perf_counter() - t0, 1),
                   "cpu_s": round(time.process_time() - cpu0, 1)}
            if cfg.probe_every and (step % cfg.probe_every == 0 or step == cfg.steps - 1):
                model.eval()
                row["copy_acc"] = round(copy_probe(model, probes, tokenizer.mask_token_id, wordlike,
                                                        int(cfg.logits == "shifted")), 3)
                model.train()
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
        names = ("toy-code",) if cfg.arith_weight == 0 else ("toy-code", "arith")
        print(json.dumps(evaluate(out, cfg.eval_n, cfg.gen_len, names), indent=1))
    return out


def evaluate(path: Path, n: int, gen_len: int, suite_names=("toy-code", "arith")) -> dict:
    """One token per forward (LLaDA's schedule, steps = block size) and Fast-dLLM threshold 0.9."""
    from toy.evaluate import evaluate_decoders

    B = min(16, gen_len)
    preset = [("block-diffusion", dict(block_size=B, policy="steps", max_steps_per_block=B)),
              ("block-diffusion", dict(block_size=B, policy="threshold", threshold=0.9))]
    return evaluate_decoders(str(path), n, gen_len, batch_size=16, preset=preset, suite_names=suite_names)


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
