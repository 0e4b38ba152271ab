"""SDLM training layout and loop: mask geometry, packed == inference-style forwards, loss goes down."""

from __future__ import annotations

import itertools
import json
import re

import pytest
import torch

from harness.models import TOY_CHECKPOINT
from toy.layout import IGNORE, build_example, pack, visibility
from toy.train import TrainConfig, losses, make_model, parse_args, train

M = 99  # mask id in the hand-made layouts


class FixedRandom:
    """Stands in for random.Random in build_example: returns the given values in order."""

    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def picture(visible) -> list[str]:
    return ["".join("x" if v else "." for v in row) for row in visible.tolist()]


def test_full_block_layout_and_mask_picture():
    # x0 = prompt [10 11 12] + response [13 14] (14 plays EOS); D = 3; heads at positions 2 and 3
    ex = build_example([10, 11, 12, 13, 14], response_start=3, block_size=3, mask_id=M)
    assert ex.input_ids == [10, 11, 12, 13, 14, 12, M, M, 13, M, M]
    assert ex.position_ids == [0, 1, 2, 3, 4, 2, 3, 4, 3, 4, 5]
    # plain next-token loss on the response only (the row before each response token)
    assert ex.ar_labels == [IGNORE, IGNORE, 13, 14, IGNORE] + [IGNORE] * 6
    assert ex.prompt_labels == [11, 12, IGNORE, IGNORE, IGNORE] + [IGNORE] * 6  # inside the prompt only
    # row j of the block headed at p predicts x[p+1+j]; nothing past the end
    assert ex.block_labels[5:] == [13, 14, IGNORE, 14, IGNORE, IGNORE]
    assert picture(visibility(ex)) == [
        # clean x0: causal; never sees a block
        "x..........",
        "xx.........",
        "xxx........",
        "xxxx.......",
        "xxxxx......",
        # block at p=2: clean positions < 2, then itself (bidirectional); not its clean twin x2
        "xx...xxx...",
        "xx...xxx...",
        "xx...xxx...",
        # block at p=3: clean positions < 3, then itself; never the other block
        "xxx.....xxx",
        "xxx.....xxx",
        "xxx.....xxx",
    ]


def test_partial_block_reveals_slots_and_drops_their_loss():
    x0 = [10, 11, 12, 13, 14, 15, 16]
    # one block at p=2 (D=4): partial (0.0 < frac), reveal prob 0.5, slots 1..3 shown/hidden/shown
    rng = FixedRandom([0.0, 0.5, 0.1, 0.9, 0.2])
    ex = build_example(x0, response_start=3, block_size=4, mask_id=M, rng=rng, partial_frac=0.5, heads=[2])
    assert ex.input_ids[7:] == [12, 13, M, 15]
    assert ex.position_ids[7:] == [2, 3, 4, 5]
    # rows predict x3 x4 x5 x6; x3 and x5 are visible inputs, so only x4 and x6 carry a loss
    assert ex.block_labels[7:] == [IGNORE, 14, IGNORE, 16]
    assert ex.block_offset[7:] == [0, 1, 2, 3]


def test_packing_is_block_diagonal_and_filler_sees_itself():
    a = build_example([10, 11, 12, 13], 2, 2, M)
    b = build_example([20, 21, 22], 2, 2, M)
    batch = pack([[a, b]], length=len(a) + len(b) + 2, pad_id=0)
    vis = batch.visible[0]
    na = len(a)
    assert not vis[:na, na:].any() and not vis[na:, :na].any()
    assert torch.equal(vis[:na, :na], torch.from_numpy(visibility(a)))
    assert vis[-1, -1] and vis[-1].sum() == 1 and batch.input_ids[0, -1] == 0
    assert (batch.additive_mask()[0, 0][vis] == 0).all()
    assert (batch.additive_mask()[0, 0][~vis] == torch.finfo(torch.float32).min).all()


def tiny_config(**kw) -> TrainConfig:
    return TrainConfig(**{"hidden": 32, "layers": 2, "heads": 2, "kv_heads": 1, "intermediate": 64, "compile": False,
                          **kw})


@pytest.fixture(scope="module")
def tokenizer():
    from toy.tokenizer import build_tokenizer

    if (TOY_CHECKPOINT / "tokenizer.json").exists():
        from harness.models import load_tokenizer

        return load_tokenizer(str(TOY_CHECKPOINT))
    return build_tokenizer()


def inference_block_logits(model, x0: list[int], p: int, D: int, mask_id: int) -> torch.Tensor:
    """What the decoders do: KV cache of x0[:p] (plain causal), then the window [x_p, M x (D-1)] at
    positions p..p+D-1 that sees the whole cache and itself."""
    from transformers import DynamicCache

    from harness.adapter import cache_argument

    cache = DynamicCache(config=model.config)
    kv = {cache_argument(model): cache}
    model(input_ids=torch.tensor([x0[:p]]), use_cache=True, **kv)
    window = torch.tensor([[x0[p]] + [mask_id] * (D - 1)])
    mask = torch.zeros(1, 1, D, p + D)
    out = model(input_ids=window, position_ids=torch.arange(p, p + D)[None], attention_mask=mask,
                use_cache=True, **kv)
    return out.logits[0]


def check_packed_equals_inference(model, x0s, D: int, mask_id: int, n_heads: int = 4):
    examples = [build_example(x0, start, D, mask_id) for x0, start in x0s]
    batch = pack([examples], sum(len(e) for e in examples) + 3, pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                       attention_mask=batch.additive_mask()).logits[0]
        offset = 0
        for ex, (x0, start) in zip(examples, x0s):
            n0 = len(x0)
            causal = model(input_ids=torch.tensor([x0])).logits[0]  # the clean rows are plain AR
            torch.testing.assert_close(packed[offset:offset + n0], causal, atol=1e-4, rtol=1e-4)
            heads = list(range(start - 1, n0 - 1))
            for b in list(range(n_heads)) + [len(heads) - 1]:
                rows = slice(offset + n0 + b * D, offset + n0 + (b + 1) * D)
                expected = inference_block_logits(model, x0, heads[b], D, mask_id)
                torch.testing.assert_close(packed[rows], expected, atol=1e-4, rtol=1e-4)
            offset += len(ex)


def encoded_problems(tokenizer, n=2):
    from toy.train import encode
    from suites.synthetic import problem_at

    return [encode(tokenizer, problem_at(kind, "test", i)) for i in range(n) for kind in ("arith", "code")]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_training_layout_equals_inference_forward_tiny(tokenizer, attn):
    torch.manual_seed(0)
    model = make_model(tiny_config(), tokenizer).eval()
    model.config._attn_implementation = attn
    check_packed_equals_inference(model, encoded_problems(tokenizer), 4, tokenizer.mask_token_id)


@pytest.mark.skipif(not (TOY_CHECKPOINT / "model.safetensors").exists(), reason="no shipped checkpoint")
def test_packed_training_layout_equals_inference_forward_shipped(tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(TOY_CHECKPOINT, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    check_packed_equals_inference(model, encoded_problems(tokenizer), model.config.block_size,
                                  model.config.text_mask_token_id)


def test_a_few_steps_reduce_the_loss_deterministically(tokenizer, tmp_path):
    from toy.train import batches

    cfg = tiny_config(steps=25, rows=2, row_len=320, lr=3e-3, warmup=5, threads=1)
    torch.manual_seed(0)
    model = make_model(cfg, tokenizer)
    held_out = next(batches(cfg, tokenizer))  # the first batch, scored before and after
    with torch.no_grad():
        before = losses(model, held_out, cfg.block_size)
    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tok_dir)
    runs, threads = [], torch.get_num_threads()
    for name in ("a", "b"):
        out = train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / name), "tokenizer": str(tok_dir)}), ["--x"])
        runs.append(timeless_log(out))
    torch.set_num_threads(threads)
    assert runs[0] == runs[1]  # same seed, same losses, bit for bit
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "a", dtype=torch.float32).eval()
    trained.config._attn_implementation = "eager"
    with torch.no_grad():
        after = losses(trained, held_out, cfg.block_size)
    assert after["ar"] < before["ar"] - 0.5 and after["block"] < before["block"] - 0.5
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["block_size"] == 4 and config["text_mask_token_id"] == tokenizer.mask_token_id
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert record["command"] == "python -m toy.train --x" and record["config"]["steps"] == cfg.steps


def clean_text(batch, tokenizer) -> str:
    """The clean rows of every example in a packed batch (block rows and filler left out), as text."""
    ids = batch.input_ids[batch.block_offset == -1]
    return tokenizer.decode(ids[ids != tokenizer.pad_token_id])


def timeless_log(out) -> list[dict]:
    """A run's train_log.jsonl without its wall and CPU times (the part that must repeat bit for bit)."""
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "cpu_s")} for r in rows]


STEP = r"(?:\d\*\d\d=[0-9+=]+|\d{3}[+-]\d{3}=\d{3})"
DRILL_CHAIN = rf"{STEP}(?:\. {STEP}){{4}}"  # five steps in a row: a drill (solutions have at most three)


@pytest.mark.slow
def test_compiled_training_matches_eager_and_repeats_bit_for_bit(tokenizer, tmp_path):
    """--compile (the shipped recipe) optimises the same objective as eager: the first step's losses
    agree to rounding; and two compiled runs log identical losses."""
    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tok_dir)
    threads, logs = torch.get_num_threads(), {}
    for name, compiled in (("eager", False), ("compiled", True), ("compiled-again", True)):
        cfg = tiny_config(steps=4, rows=2, row_len=320, warmup=2, threads=1, compile=compiled,
                          out=str(tmp_path / name), tokenizer=str(tok_dir), log_every=1)
        logs[name] = timeless_log(train(cfg, ["--x"]))
    torch.set_num_threads(threads)
    for key in ("ar", "block", "prompt"):
        assert logs["compiled"][0][key] == pytest.approx(logs["eager"][0][key], rel=1e-4)
    assert logs["compiled"] == logs["compiled-again"]


def test_drills_are_mixed_in_by_fraction(tokenizer):
    """--drill-frac: bare arithmetic text packed next to chat-rendered problems, at about that share."""
    from toy.train import batches

    def row_texts(frac):
        return clean_text(next(batches(tiny_config(rows=4, row_len=512, drill_frac=frac), tokenizer)), tokenizer)

    problems, drills, mixed = row_texts(0.0), row_texts(1.0), row_texts(0.5)
    assert "<|im_start|>" in problems and not re.search(DRILL_CHAIN, problems)
    assert "<|im_start|>" not in drills and len(re.findall(DRILL_CHAIN, drills)) >= 4
    assert "<|im_start|>" in mixed and re.search(DRILL_CHAIN, mixed)


def test_drills_start_at_drill_from(tokenizer):
    """--drill-from 0.5 of 4 steps, drill_frac 1: steps 0-1 hold only problems; from step 2 every new
    example is a drill (step 2 may still start with the problem that did not fit into step 1)."""
    from toy.train import batches

    cfg = tiny_config(steps=4, rows=2, row_len=512, drill_frac=1.0, drill_from=0.5)
    texts = [clean_text(batch, tokenizer) for batch in itertools.islice(batches(cfg, tokenizer), 4)]
    assert all("<|im_start|>" in t and not re.search(DRILL_CHAIN, t) for t in texts[:2])
    assert re.search(DRILL_CHAIN, texts[2]) and texts[2].count("<|im_start|>assistant") <= 1
    assert "<|im_start|>" not in texts[3] and re.search(DRILL_CHAIN, texts[3])


def test_train_toy_flags_parse():
    """Boolean options take --x / --no-x (argparse's type=bool would read "False" as True)."""
    cfg = parse_args(["--out", "x", "--compile", "--no-fused-adamw", "--drill-from", "0.25", "--steps", "7"])
    assert cfg.compile is True and cfg.fused_adamw is False and cfg.drill_from == 0.25 and cfg.steps == 7
    assert parse_args(["--out", "x"]) == TrainConfig(out="x")


def test_out_is_required(capsys):
    """Training never writes into the package by default: the run directory must be named."""
    with pytest.raises(SystemExit):
        parse_args(["--steps", "7"])
    assert "--out" in capsys.readouterr().err


def test_compile_without_a_cxx_compiler_fails_before_training(monkeypatch, tmp_path):
    import toy.train as train_module

    monkeypatch.setattr(train_module.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="--no-compile"):
        train(tiny_config(compile=True, out=str(tmp_path / "never")))
    assert not (tmp_path / "never").exists()


def test_diagnose_roles_of_a_worked_solution():
    from toy.diagnose import char_roles

    prompt = "Gina has 138 pens. Gina buys 6 packs of 49 pens. How many pens does Gina have now?"
    solution = "6*49=240+054=294. 138+294=432. \\boxed{432}"
    roles = char_roles(prompt, solution)
    spans = {}
    for match in re.finditer(r"\d+", solution):
        spans.setdefault(roles[match.start()], []).append(match.group())
        assert len(set(roles[match.start():match.end()])) == 1  # a number has one role
    assert spans == {"copy_prompt": ["6", "49", "138"], "computed": ["240", "054", "294", "432", "432"],
                     "copy_step": ["294"]}
    assert {roles[i] for i, c in enumerate(solution) if not c.isdigit()} == {"other"}


@pytest.fixture(scope="module")
def random_model(tokenizer):
    torch.manual_seed(0)
    return make_model(tiny_config(), tokenizer).eval()


def test_diagnose_teacher_forced_counts_every_solution_token(tokenizer, random_model):
    """On a random-weight model the counts still cover each solution token (+ EOS) exactly once."""
    from toy.diagnose import teacher_forced_by_role
    from toy.train import encode
    from suites.synthetic import distinct_problems

    problems = distinct_problems("arith", "test", 3)
    counts = teacher_forced_by_role(random_model, tokenizer, problems)
    assert sum(t for _, t in counts.values()) == sum(len(encode(tokenizer, p)[0]) - encode(tokenizer, p)[1]
                                                     for p in problems)
    assert all(0 <= c <= t for c, t in counts.values())


def test_diagnose_prompt_copies_by_digit(tokenizer, random_model):
    """Each copied prompt number is counted once per digit, under its template, length and place."""
    from toy.diagnose import prompt_copies_by_digit, teacher_forced_by_role
    from suites.synthetic import distinct_problems

    buy = next(p for p in distinct_problems("arith", "test", 20) if p.meta["template"] == "buy")
    # `4*24=080+016=096. 487+096=583.` copies 4, 24 and 487 from the prompt
    counts = prompt_copies_by_digit(random_model, tokenizer, [buy])
    assert {key: t for key, (_, t) in counts.items()} == {
        "buy 1-digit #1": 1, "buy 2-digit #1": 1, "buy 2-digit #2": 1,
        "buy 3-digit #1": 1, "buy 3-digit #2": 1, "buy 3-digit #3": 1}
    problems = distinct_problems("arith", "test", 8)
    by_digit = prompt_copies_by_digit(random_model, tokenizer, problems)
    correct, total = teacher_forced_by_role(random_model, tokenizer, problems)["copy_prompt"]
    assert sum(c for c, _ in by_digit.values()) == correct and sum(t for _, t in by_digit.values()) == total
