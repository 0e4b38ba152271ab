"""Fixed-block diffusion decoding (specs/block_diffusion.md §2, §5.4-5.5), one decoder with two engines
chosen by the model's family (`model.family`, decoders/family.py):

- bidirectional models (LLaDA, Dream): the canvas engine, decoders/canvas.py. The parameters below
  marked [canvas] apply there only (the unmasking policies are in decoders/unmask.py);
- causal models with an SDLM window (pdbench-toy, SDLM) and every other family: the engine below.
  Block-causal families (Fast-dLLM v2, SDAR) run it too, although its window layout is SDLM's
  (`shift_anchor_dup`), not theirs (`shift_anchor_inside` / `inplace`, absolute block alignment).

Causal engine. Blocks of B slots start right after the prompt and never move. A block is decoded by repeated
forwards over the window [x[s-1], slot_s, ..., slot_{s+B-2}] (layout `shift_anchor_dup`: the anchor
is the last committed token, row j predicts slot s+j). Each forward unmasks every still-masked slot
whose confidence is > threshold, plus at least the most confident one; on the block's
`max_steps_per_block`-th forward every remaining slot is unmasked. Unmasked slots are final and are
fed back as tokens. A complete block is committed: its tokens are encoded causally at the start of
the next block's first forward (merged commit, no extra forward). Early stop (eos_prefix): the row
ends once an EOS is unmasked with no masked slot before it.

Bookkeeping: `accepted[f]` counts the committed tokens that forward f unmasked, so a slot unmasked
after the final EOS counts nowhere and sum(accepted) == n_tokens holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decoders import register
from decoders.base import Decoder, DecodeResult, DecoderConfigError, ModelAdapter, check, param
from decoders.batch import Batch, Row, open_batch
from decoders.canvas import generate_canvas
from decoders.sampling import choose, make_generator


@dataclass
class _Block:
    start: int  # position of the first slot (= committed length when the block began)
    size: int  # slots that may be filled: min(B, tokens left before max_new_tokens)
    tokens: list[int]  # B slots; the mask id where not yet decided
    # index into row.accepted of the forward that unmasked each slot, -1 while masked (a model may
    # predict the mask id itself, so the token value cannot tell filled from open)
    decided_at: list[int]
    steps: int = 0


@register("block-diffusion")
@dataclass
class BlockDiffusion(Decoder):
    source = "fixed-block diffusion decoding in the style of Fast-dLLM v2 (NVlabs/Fast-dLLM) and SDAR (JetAstra/SDAR)"
    block_size: int = param(4, "an int >= 1")
    # causal engine: confidence > threshold; canvas engine: >= (Fast-dLLM v1, Dream)
    threshold: float = param(0.9, "a number in [0, 1] (1 = one token per forward)")
    max_steps_per_block: int = param(0, "an int >= 1, or 0 for block_size (one forward per slot at worst); "
                                        "the schedules' forwards per block (LLaDA steps / blocks)")
    confidence: str = param("prob", "prob | entropy | random (canvas schedules only: LLaDA's random remasking)",
                            choices=("prob", "entropy", "random"))
    policy: str = param("threshold", "[canvas] threshold | steps (LLaDA) | timesteps (Dream) | quota (Dream, no blocks)",
                        choices=("threshold", "steps", "timesteps", "quota"))
    cache: str = param("none", "[canvas] none | prefix | dual (approximate; decoders/canvas.py)",
                       choices=("none", "prefix", "dual"))
    first_slot_ar: bool = param(False, "[canvas] a block's first forward decides its first slot only (Dream block util)")
    extra_forward: bool = param(False, "[canvas] reference quirk: a cached forward after every refresh (LLaDA)")
    stop_at_eos: bool = param(True, "[canvas] false = decode the whole canvas as the references do, cut afterwards")

    runs_bidirectional = True
    CANVAS_DEFAULTS = dict(policy="threshold", cache="none", first_slot_ar=False, extra_forward=False,
                           stop_at_eos=True)

    def validate(self) -> None:
        super().validate()
        check(self, "block_size", isinstance(self.block_size, int) and self.block_size >= 1, "an int >= 1")
        check(self, "threshold", isinstance(self.threshold, (int, float)) and 0 <= self.threshold <= 1,
              "a number in [0, 1] (1 = one token per forward)")
        check(self, "max_steps_per_block", isinstance(self.max_steps_per_block, int)
              and 0 <= self.max_steps_per_block, "an int >= 1, or 0 for block_size")
        for flag in ("first_slot_ar", "extra_forward", "stop_at_eos"):
            check(self, flag, isinstance(getattr(self, flag), bool), "true or false")
        check(self, "confidence", self.confidence != "random" or self.policy in ("steps", "timesteps"),
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
        eos_ids = set(model.eos_ids)

        while batch.active:
            for row in batch.active:
                if row.index not in blocks:
                    blocks[row.index] = _Block(len(row.seq), min(B, batch.remaining(row)), [mask_id] * B, [-1] * B)
            active_blocks = [blocks[r.index] for r in batch.active]
            window = torch.tensor([[r.seq[-1]] + b.tokens[:-1] for r, b in zip(batch.active, active_blocks)])
            logits = batch.forward([b.start - 1 for b in active_blocks], window, offsets, vis)  # [A, B, V]
            tokens, conf = choose(logits, self.temperature, self.top_p, self.top_k, gen, self.confidence)

            filled = torch.tensor([[f >= 0 for f in b.decided_at] for b in active_blocks], device=conf.device)
            in_block = torch.arange(B, device=conf.device)[None, :] < torch.tensor(
                [b.size for b in active_blocks], device=conf.device)[:, None]
            open_slot = in_block & ~filled
            conf = conf.masked_fill(~open_slot, -1.0)
            take = (conf > self.threshold) & open_slot
            take[torch.arange(len(take), device=take.device), conf.argmax(dim=-1)] = True  # at least the most confident slot
            last_step = torch.tensor([b.steps + 1 >= max_steps for b in active_blocks], device=conf.device)
            take |= open_slot & last_step[:, None]

            for row, block, toks, tk in zip(batch.active, active_blocks, tokens.tolist(), take.tolist()):  # 1 sync
                block.steps += 1
                for j in range(B):
                    if tk[j]:
                        block.tokens[j], block.decided_at[j] = toks[j], len(row.accepted) - 1
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
        batch.commit(row, slots[:cut], decided_at=block.decided_at[:cut])
        return True
