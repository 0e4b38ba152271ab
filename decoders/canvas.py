"""The canvas engine of `block-diffusion`: fixed-block decoding on bidirectional models (LLaDA, Dream;
specs/block_diffusion.md §3.1-3.4, §5.3 layouts `inplace_fullseq` / `shift_fullseq`).

The canvas is the prompt plus max_new_tokens MASK slots. Blocks of B slots start right after the
prompt and are decoded left to right; each forward decides some open slots of the current block
(decoders/unmask.py) and a decided slot is final. The model sees the whole canvas, future masks
included, with full bidirectional attention. Logits are read in place (slot c <- row c) or shifted
(slot c <- row c-1), as the model family says.

Caches (`cache`; approximate, because in a bidirectional model every KV depends on every token):
    none    every forward is the whole canvas.
    prefix  a block's first forward is the whole canvas and keeps its KV ("refresh"); the block's later
            forwards feed [block start, canvas end) against the refresh's KV of everything before the
            block. Stale: that prefix KV was computed while the block was all masks.
    dual    as prefix, and the later forwards feed the block alone against the refresh's KV of the
            prefix and of the suffix after the block (Fast-dLLM v1 DualCache). Stale likewise.
Each block's refresh is one more full forward, so the caches pay off with several forwards per block.

Which open slots a forward decides is the decoder's policy, `dec.select(Step)` (decoders/unmask.py),
the same call the causal engine makes. Budget and trace, as decoders/batch.py gives the other engines:
a row that took part in `max_nfe` forwards with slots still open stops (finish "nfe_cap"; its output is
its decided prefix), and with `trace` each forward records the output positions it decided that made
it into the output, with the policy's confidence in each.
A shifted model whose block start may still be open feeds one more token on the left (the row that
scores the block's first slot), whose cached KV is then not used.

Batching: rows advance in lockstep, one block at a time: all refresh together, then a row takes part
in the block's forwards only while its block has open slots. Canvases are left-padded to a common
length (pad columns are invisible keys; per-row position ids), so the generated region and every
block sit at the same columns in every row: one window shape, one `logits_to_keep` for all rows.
A row's forwards, inputs and positions are exactly those it would have alone.

Reference quirk switches (both only cost forwards; the tokens never change):
    extra_forward  the cached LLaDA variants run one cached forward after a block's refresh even when
                   the refresh completed the block (it decides nothing).
    stop_at_eos    False: decode the whole canvas, as every reference does, and cut at the first EOS
                   afterwards; True: a row stops once it holds an EOS with no open slot before it.
`first_slot_ar` is Dream's block util: a block's refresh decides only the block's first slot (argmax).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from decoders import unmask
from decoders.base import DecodeResult, ModelAdapter
from decoders.sampling import make_generator


@dataclass
class CanvasRow:
    index: int  # position in the caller's prompt list
    prompt: list[int]
    slots: list[int]  # the generated region: token ids, mask id where open
    decided: list[int]  # per slot: the adapter's index of the forward that decided it, -1 while open
    conf: list[float]  # per slot: the policy's confidence when it was decided (nan while open)
    forwards: list[int] = field(default_factory=list)  # adapter indices of the forwards it took part in
    ended_s: list[float] = field(default_factory=list)  # per such forward: seconds since generate() began
    state: dict = field(default_factory=dict)  # the policy's (Step.state), kept for the whole generate()
    gen: torch.Generator | None = None  # the row's own random stream: a row draws the same alone or batched
    done: bool = False
    capped: bool = False  # stopped by max_nfe with slots still open
    ttft_s: float = float("nan")


class Layout:
    """Column geometry of a group of rows: canvas b occupies columns [pad_b, L), L = max prompt + G."""

    def __init__(self, rows: list[CanvasRow], G: int, pad_id: int):
        longest = max(len(r.prompt) for r in rows)
        self.g0, self.L = longest, longest + G  # generated slot j is column g0 + j in every row
        A = len(rows)
        self.ids = torch.full((A, self.L), pad_id, dtype=torch.long)
        self.pos = torch.zeros((A, self.L), dtype=torch.long)
        self.real = torch.zeros((A, self.L), dtype=torch.bool)  # False on left padding: never a visible key
        for a, r in enumerate(rows):
            pad = longest - len(r.prompt)
            self.ids[a, pad:] = torch.tensor(r.prompt + r.slots)
            self.pos[a, pad:] = torch.arange(self.L - pad)
            self.real[a, pad:] = True


def generate_canvas(dec, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int) -> list[DecodeResult]:
    """`dec` is a BlockEngine (decoders/block_diffusion.py); its fields are documented there."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    G, family = max_new_tokens, model.family
    B = min(dec.block_size, G)
    steps = dec.max_steps_per_block or B
    mode = dec.cache if dec.use_cache else "none"
    lead = 1 if family.shifted and not dec.first_slot_ar else 0  # see the module docstring
    shift = 1 if family.shifted else 0
    rows = [CanvasRow(i, list(p), [model.mask_id] * G, [-1] * G, [float("nan")] * G) for i, p in enumerate(prompts)]
    if dec.temperature > 0 or dec.confidence == "random":
        for r in rows:
            r.gen = make_generator(model.device, dec.seed)
    model.synchronize()
    t0 = time.perf_counter()

    for lo in range(0, G, B):
        hi = min(lo + B, G)
        group = [r for r in rows if not r.done]
        if not group:
            break
        lay = Layout(group, G, model.pad_id)
        members = list(range(len(group)))  # group indices of the rows still decoding this block
        frozen = None  # the refresh forward's KV cache (prefix / dual)
        step = 0  # forwards run on this block (the same for every member: lockstep)
        while members:
            idx = torch.tensor(members)
            open_ = torch.tensor([[d < 0 for d in group[m].decided[lo:hi]] for m in members])  # [A, n]
            # logits only for the block slots some member still has open (the lm_head on a 126k vocabulary
            # costs as much as the layers); Dream's refresh needs the first slot only
            scored = torch.tensor([0]) if dec.first_slot_ar and step == 0 else open_.any(0).nonzero().flatten()
            if scored.numel() == 0:  # the extra_forward quirk's forward: nothing left to score
                scored = torch.tensor([0])
            cols = lay.g0 + lo + scored - shift  # the rows that score those slots
            if mode == "none" or step == 0:  # the whole canvas
                cache = model.new_cache() if mode != "none" else None
                vis = lay.real[idx][:, None, :].expand(len(members), lay.L, lay.L)
                logits = model.forward(lay.ids[idx], lay.pos[idx], vis, cache, cols)
                frozen = cache
            else:  # the window against the refresh's KV: [w0, L) for prefix, [w0, block end) for dual
                w0 = lay.g0 + lo - lead
                w1 = lay.L if mode == "prefix" else lay.g0 + hi
                kv = torch.cat([torch.arange(w0), torch.arange(w1, lay.L)])
                cache = model.slice_cache(frozen, None if len(members) == len(group) else idx,
                                          slice(0, w0) if mode == "prefix" else kv)
                vis = torch.cat([lay.real[idx][:, kv], torch.ones(len(members), w1 - w0, dtype=torch.bool)], dim=1)
                # a shifted window that starts at the block (first_slot_ar) has no row for the block's
                # first slot; that slot is always decided by then, so row 0 stands in and is never read
                keep = (cols - w0).clamp_min(0)
                logits = model.forward(lay.ids[idx, w0:w1], lay.pos[idx, w0:w1],
                                       vis[:, None, :].expand(len(members), w1 - w0, vis.shape[1]), cache, keep)
            forward_index = model.n_forward - 1
            take, tokens, conf = _decide(dec, [group[m] for m in members], logits, open_, scored, step, steps, lo)
            now = time.perf_counter() - t0
            for a, m in enumerate(members):
                r = group[m]
                r.forwards.append(forward_index)
                r.ended_s.append(now)
                for j in take[a].nonzero().flatten().tolist():
                    r.slots[lo + j], r.decided[lo + j], r.conf[lo + j] = int(tokens[a, j]), forward_index, float(conf[a, j])
                    lay.ids[m, lay.g0 + lo + j] = int(tokens[a, j])
                    if lo + j == 0:
                        r.ttft_s = now
                if dec.stop_at_eos and _eos_prefix(r, model.eos_ids):
                    r.done = True
                elif dec.max_nfe and len(r.forwards) >= dec.max_nfe and any(d < 0 for d in r.decided):
                    r.done = r.capped = True  # the budget is spent with slots still open
            step += 1
            quirk = dec.extra_forward and mode != "none" and step == 1  # one cached forward after the refresh
            members = [m for m in members if not group[m].done
                       and (quirk or any(d < 0 for d in group[m].decided[lo:hi]))]
    return [_result(r, model, dec.trace) for r in rows]


def _decide(dec, rows: list[CanvasRow], logits: torch.Tensor, open_: torch.Tensor, scored: torch.Tensor,
            step: int, steps: int, lo: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits [A, len(scored), V] for block slots `scored`; open_ [A, n] -> (take, tokens, conf), each [A, n]."""
    A, n = open_.shape
    # proposals for open slots only (a softmax over a 126k vocabulary costs as much as the forward)
    tokens = torch.full((A, n), -1, dtype=torch.long)
    conf = torch.full((A, n), float("-inf"))
    sub = open_[:, scored]  # [A, len(scored)]
    # greedy: all rows at once; random draws: row by row, each from its own generator
    for a in ([None] if rows[0].gen is None else range(A)):
        mask = sub if a is None else sub & (torch.arange(A) == a)[:, None]
        if mask.any():
            t, c = unmask.propose(logits[mask.to(logits.device)][None], dec.temperature, dec.top_p, dec.top_k,
                                  dec.confidence, None if a is None else rows[a].gen)
            rows_i, cols_i = mask.nonzero(as_tuple=True)
            tokens[rows_i, scored[cols_i]], conf[rows_i, scored[cols_i]] = t[0].cpu(), c[0].float().cpu()
    if dec.first_slot_ar and step == 0:  # Dream's block util: the refresh decides the first slot only
        take = torch.zeros_like(open_)
        take[:, 0] = open_[:, 0]
        return take, tokens, conf
    s = unmask.Step(logits=logits, scored=scored, tokens=tokens, conf=conf, open=open_, step=torch.full((A,), step),
                    start=[lo] * A, steps=steps, state=[r.state for r in rows], strict=False)
    take = dec.select(s) & open_
    return take, s.tokens, s.conf


def _eos_prefix(r: CanvasRow, eos_ids) -> bool:
    """True once the row holds an EOS with every slot before it decided: nothing left can change the output."""
    for tok, d in zip(r.slots, r.decided):
        if d < 0:
            return False
        if tok in eos_ids:
            return True
    return False


def _result(r: CanvasRow, model: ModelAdapter, trace: bool) -> DecodeResult:
    first_open = next((j for j, d in enumerate(r.decided) if d < 0), len(r.slots))
    tokens = r.slots[:first_open]
    finish = "nfe_cap" if r.capped else "length"
    for j, t in enumerate(tokens):
        if t in model.eos_ids:
            tokens, finish = tokens[: j + 1], "eos"
            break
    decided = r.decided[: len(tokens)]
    accepted = [sum(1 for d in decided if d == f) for f in r.forwards]
    step_s = [s for f in r.forwards for s in model.forward_seconds(f, f + 1)]
    steps = None
    if trace:  # per forward: the output positions it decided that are in the output, and their confidence
        steps = [{"pos": [j for j, d in enumerate(decided) if d == f],
                  "conf": [r.conf[j] for j, d in enumerate(decided) if d == f]} for f in r.forwards]
    # the forward that decided the output's last slot, not the row's last forward (a reference quirk's
    # extra forward, or the canvas past EOS with stop_at_eos=false, decide nothing that is kept)
    e2e_s = r.ended_s[r.forwards.index(max(decided))] if decided else float("nan")
    return DecodeResult(tokens=tokens, accepted=accepted, finish=finish, step_s=step_s, ttft_s=r.ttft_s, e2e_s=e2e_s,
                        trace=steps)
