"""Fixed-block diffusion decoding (specs/block_diffusion.md §2, §5.4-5.5): `BlockEngine`, the base of
every unmasking policy, with two engines chosen by the model's family (`model.family`, decoders/family.py):

- bidirectional models (LLaDA, Dream): the canvas engine, decoders/canvas.py. The parameters below
  marked [canvas] apply there only;
- causal models with an SDLM window (pdbench-toy, SDLM) and every other family: the engine below.
  Block-causal families (Fast-dLLM v2, SDAR) run it too, although its window layout is SDLM's
  (`shift_anchor_dup`), not theirs (`shift_anchor_inside` / `inplace`, absolute block alignment).

Which open slots a forward decides is the policy: `select(step)` (decoders/unmask.py: `Step`), called
by both engines after every forward. `block-diffusion` below holds the Fast-dLLM / LLaDA / Dream rules;
every other policy is one file with a registered subclass of `BlockEngine` (eb_sampler.py,
credit_threshold.py, sub_block.py, margin_threshold.py). Both engines give every policy `max_nfe`
(finish "nfe_cap") and `trace` (each forward's decided positions and their confidence).

Causal engine. Blocks of B slots start right after the prompt and never move. A block is decoded by repeated
forwards over the window [x[s-1], slot_s, ..., slot_{s+B-2}] (layout `shift_anchor_dup`: the anchor
is the last committed token, row j predicts slot s+j). Each forward unmasks the still-masked slots the
policy selects (block-diffusion: every one whose confidence is > threshold, plus at least the most
confident one; on the block's `max_steps_per_block`-th forward every remaining slot). Unmasked slots
are final and are fed back as tokens. A complete block is committed: its tokens are encoded causally at the start of
the next block's first forward (merged commit, no extra forward). Early stop (eos_prefix): the row
ends once an EOS is unmasked with no masked slot before it.

Bookkeeping: `accepted[f]` counts the committed tokens that forward f unmasked, so a slot unmasked
after the final EOS counts nowhere and sum(accepted) == n_tokens holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decoders import register, unmask
from decoders.base import Decoder, DecodeResult, DecoderConfigError, ModelAdapter, check, param
from decoders.batch import Batch, Row, open_batch
from decoders.canvas import generate_canvas
from decoders.sampling import choose, make_generator
from decoders.unmask import Step


@dataclass
class _Block:
    start: int  # position of the first slot (= committed length when the block began)
    size: int  # slots that may be filled: min(B, tokens left before max_new_tokens)
    tokens: list[int]  # B slots; the mask id where not yet decided
    # index into row.accepted of the forward that unmasked each slot, -1 while masked (a model may
    # predict the mask id itself, so the token value cannot tell filled from open)
    decided_at: list[int]
    conf: list[float]  # the policy's confidence in each slot when it was decided (for the trace)
    steps: int = 0


@dataclass
class BlockEngine(Decoder):
    """Base of the unmasking policies: the block geometry, caches and switches both engines share. A
    subclass adds its own parameters and overrides `select`; registering it is all the wiring."""

    block_size: int = param(4, "an int >= 1")
    max_steps_per_block: int = param(0, "an int >= 1, or 0 for block_size (one forward per slot at worst); "
                                        "the schedules' forwards per block (LLaDA steps / blocks)")
    confidence: str = param("prob", "prob | entropy | random (canvas schedules only: LLaDA's random remasking)",
                            choices=("prob", "entropy", "random"))
    cache: str = param("none", "[canvas] none | prefix | dual (approximate; decoders/canvas.py)",
                       choices=("none", "prefix", "dual"))
    first_slot_ar: bool = param(False, "[canvas] a block's first forward decides its first slot only (Dream block util)")
    extra_forward: bool = param(False, "[canvas] reference quirk: a cached forward after every refresh (LLaDA)")
    stop_at_eos: bool = param(True, "[canvas] false = decode the whole canvas as the references do, cut afterwards")

    runs_bidirectional = True
    CANVAS_DEFAULTS = dict(cache="none", first_slot_ar=False, extra_forward=False, stop_at_eos=True)

    def select(self, s: Step) -> torch.Tensor:
        """[A, n] bool: the open slots this forward decides (the engines write s.tokens there). A policy may
        revise s.tokens and s.conf (the confidence the trace records) for the slots it decides."""
        raise NotImplementedError

    def ranks_only(self) -> bool:
        """True when the rule only ranks slots, so `confidence='random'` is meaningful."""
        return False

    def validate(self) -> None:
        super().validate()
        check(self, "block_size", isinstance(self.block_size, int) and self.block_size >= 1, "an int >= 1")
        check(self, "max_steps_per_block", isinstance(self.max_steps_per_block, int)
              and 0 <= self.max_steps_per_block, "an int >= 1, or 0 for block_size")
        for flag in ("first_slot_ar", "extra_forward", "stop_at_eos"):
            check(self, flag, isinstance(getattr(self, flag), bool), "true or false")
        check(self, "confidence", self.confidence != "random" or self.ranks_only(),
              "'prob' or 'entropy' with policy threshold/quota ('random' ranks slots; it has no threshold)")
        check(self, "engine", self.engine == "dynamic" or self.cache == "none",
              "'dynamic' with cache prefix/dual (the canvas caches are dynamic)")

    def check_model(self, model: ModelAdapter) -> None:
        super().check_model(model)
        if self._canvas(model):
            if self.engine != "dynamic":
                raise DecoderConfigError(f"{type(self).__name__}: parameter engine={self.engine!r} is invalid on "
                                         "a bidirectional model; allowed: 'dynamic'")
            return
        changed = [k for k, v in self.CANVAS_DEFAULTS.items() if getattr(self, k) != v]
        if self.confidence == "random":
            changed.append("confidence")
        if changed:
            family = getattr(model, "family", None)
            raise DecoderConfigError(
                f"{type(self).__name__}: parameter {changed[0]}={getattr(self, changed[0])!r} applies to "
                f"bidirectional models only (this model's attention is "
                f"{family.attention if family else 'causal'}); allowed here: its default "
                f"{self.CANVAS_DEFAULTS.get(changed[0], 'prob')!r}")

    @staticmethod
    def _canvas(model: ModelAdapter) -> bool:
        family = getattr(model, "family", None)
        return family is not None and family.attention == "bidirectional"

    @property
    def needs_mask_token(self) -> bool:
        return self.block_size > 1

    def generate(self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int) -> list[DecodeResult]:
        self.check_model(model)
        if self._canvas(model):
            return generate_canvas(self, model, prompts, max_new_tokens)
        B = self.block_size
        mask_id = model.mask_id if B > 1 else -1
        max_steps = self.max_steps_per_block or B
        batch = open_batch(self, model, prompts, max_new_tokens, max_window=B, max_commit=B)
        gen = make_generator(model.device, self.seed)
        offsets, vis = torch.arange(B), torch.ones(B, B, dtype=torch.bool)
        blocks: dict[int, _Block] = {}
        state: dict[int, dict] = {r.index: {} for r in batch.rows}  # the policy's, per row
        eos_ids = set(model.eos_ids)

        while batch.active:
            for row in batch.active:
                if row.index not in blocks:
                    blocks[row.index] = _Block(len(row.seq), min(B, batch.remaining(row)), [mask_id] * B, [-1] * B,
                                               [float("nan")] * B)
            active_blocks = [blocks[r.index] for r in batch.active]
            window = torch.tensor([[r.seq[-1]] + b.tokens[:-1] for r, b in zip(batch.active, active_blocks)])
            logits = batch.forward([b.start - 1 for b in active_blocks], window, offsets, vis)  # [A, B, V]
            tokens, conf = choose(logits, self.temperature, self.top_p, self.top_k, gen, self.confidence)

            dev = conf.device
            filled = torch.tensor([[f >= 0 for f in b.decided_at] for b in active_blocks], device=dev)
            in_block = torch.arange(B, device=dev)[None, :] < torch.tensor([b.size for b in active_blocks], device=dev)[:, None]
            open_slot = in_block & ~filled  # [A, B]
            s = Step(logits=logits, scored=torch.arange(B), tokens=tokens, conf=conf.masked_fill(~open_slot, float("-inf")),
                     open=open_slot, step=torch.tensor([b.steps for b in active_blocks], device=dev),
                     start=[b.start - r.prompt_len for r, b in zip(batch.active, active_blocks)], steps=max_steps,
                     state=[state[r.index] for r in batch.active], strict=True)
            take = self.select(s) & open_slot

            for row, block, toks, tk, cf in zip(batch.active, active_blocks, s.tokens.tolist(), take.tolist(),
                                                s.conf.tolist()):  # 1 sync
                block.steps += 1
                for j in range(B):
                    if tk[j]:
                        block.tokens[j], block.decided_at[j], block.conf[j] = toks[j], len(row.accepted) - 1, cf[j]
                if self._maybe_commit(batch, row, block, eos_ids):
                    del blocks[row.index]  # the next forward opens a new block
            batch.drop_finished()
        return batch.results()

    @staticmethod
    def _maybe_commit(batch: Batch, row: Row, block: _Block, eos: set[int]) -> bool:
        """Commit the block when it is full, or early when an EOS has no masked slot before it."""
        slots = block.tokens[: block.size]
        first_mask = next((j for j, f in enumerate(block.decided_at[: block.size]) if f < 0), block.size)
        first_eos = next((j for j, t in enumerate(slots[:first_mask]) if t in eos), None)
        if first_eos is None and first_mask < block.size:
            return False
        cut = block.size if first_eos is None else first_eos + 1
        batch.commit(row, slots[:cut], decided_at=block.decided_at[:cut], confidence=block.conf[:cut])
        return True


@register("block-diffusion")
@dataclass
class BlockDiffusion(BlockEngine):
    source = "fixed-block diffusion decoding in the style of Fast-dLLM v2 (NVlabs/Fast-dLLM) and SDAR (JetAstra/SDAR)"
    # causal engine: confidence > threshold; canvas engine: >= (Fast-dLLM v1, Dream)
    threshold: float = param(0.9, "a number in [0, 1] (1 = one token per forward)")
    policy: str = param("threshold", "[canvas] threshold | steps (LLaDA) | timesteps (Dream) | quota (Dream, no blocks)",
                        choices=("threshold", "steps", "timesteps", "quota"))

    CANVAS_DEFAULTS = dict(policy="threshold", **BlockEngine.CANVAS_DEFAULTS)

    def ranks_only(self) -> bool:
        return self.policy in ("steps", "timesteps")

    def validate(self) -> None:
        super().validate()
        check(self, "threshold", isinstance(self.threshold, (int, float)) and 0 <= self.threshold <= 1,
              "a number in [0, 1] (1 = one token per forward)")

    def select(self, s: Step) -> torch.Tensor:
        A, n = s.open.shape
        if self.policy == "threshold":  # Fast-dLLM: the best open slot and every one passing the threshold
            return unmask.threshold_select(s, s.conf, self.threshold)
        ar = 1 if self.first_slot_ar else 0  # the canvas's refresh already decided the first slot
        if self.policy == "steps":  # LLaDA: the schedule was fixed at the block's start, n - ar slots over steps - ar
            counts = unmask.even_split(n - ar, max(1, s.steps - ar))
            k = [counts[st - ar] if st - ar < len(counts) else 0 for st in s.step.tolist()]
            return unmask.top_k_open(s.conf, s.open, torch.tensor(k))
        if self.policy == "timesteps":  # Dream: a share of the open slots fixed by the forward's timestep
            k = [unmask.timestep_count(int(o.sum()), st, s.steps) for o, st in zip(s.open, s.step.tolist())]
            return unmask.top_k_open(s.conf, s.open, torch.tensor(k))
        # quota (Dream, no blocks): up to n // steps per forward plus what earlier forwards left unused
        limit = torch.tensor([n // s.steps + st.get("carry", 0) for st in s.state])
        take = unmask.threshold_take(s.conf, s.open, self.threshold, limit)
        for st, lim, t in zip(s.state, limit.tolist(), take.sum(-1).tolist()):
            st["carry"] = max(0, lim - t)
        return take
