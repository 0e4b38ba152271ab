"""diffusion-gemma: DiffusionGemmaForBlockDiffusion's own generate() (transformers >= 5.24), with its
sampler settings as decoder parameters and its cost counted by pdbench.

The model is an encoder-decoder block diffusion LM. For each canvas (block) of C tokens its generate()
runs the encoder once over the tokens not yet in the KV cache (the prompt, then the previous canvas),
then up to max_denoising_steps decoder forwards over a canvas initialised with random tokens: each
step samples a candidate canvas at a temperature falling linearly from t_max to t_min, accepts the
lowest-entropy tokens while their summed entropy (minus the largest) stays under entropy_bound (the
EB-sampler, arXiv 2505.24857), renoises the rest, and stops early once the argmax canvas has been
stable for stability_threshold steps and its mean entropy is under confidence_threshold. The
canvas's argmax is then appended to the sequence.

We call generate() once per canvas, passing the cache back in (tokens identical to one call for the
whole length, tested), which lets rows that met EOS leave the batch and lets max_nfe cap the last
canvas's denoising steps. Counting (decoders/native.py's rule): every forward the adapter sees is one
network call, encoder passes included, so n_forward = canvases + denoising steps, and a canvas's
tokens are committed at its last forward. A row takes part in every forward of each canvas it is
in, including steps where it had converged while other rows had not (it is still in the batch,
waiting for its canvas). The model's own `tokens_per_forward` counts denoising steps only, and per
row excludes such ride-along steps: at batch 1, tokens / (n_forward - canvases) equals it (tested).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from decoders import register
from decoders.base import DecodeResult, Decoder, DecoderConfigError, ModelAdapter, check, param
from decoders.batch import Batch
from decoders.native import LastScores, hf_module, left_padded, seeded

ARCHITECTURE = "DiffusionGemmaForBlockDiffusion"


@contextlib.contextmanager
def canvas_length(hf, length: int):
    """generate() reads the canvas length from the model config: set it for this call only."""
    saved = hf.config.canvas_length
    hf.config.canvas_length = length
    try:
        yield
    finally:
        hf.config.canvas_length = saved


@register("diffusion-gemma")
@dataclass
class DiffusionGemma(Decoder):
    canvas_length: int = param(0, "an int >= 0: tokens per canvas (block); 0 = the checkpoint's config.canvas_length")
    max_denoising_steps: int = param(48, "an int >= 1: per canvas")
    entropy_bound: float = param(0.1, "a number > 0: EB-sampler, accept tokens while summed entropy - max stays under it")
    t_max: float = param(0.8, "a number > t_min: the sampling temperature at the first denoising step ...")
    t_min: float = param(0.4, "a number >= 0: ... falling linearly to this at the last")
    stability_threshold: int = param(1, "an int >= 0: stop a canvas once its argmax was unchanged for this many steps ...")
    confidence_threshold: float = param(0.005, "a number > 0: ... and its mean token entropy is under this")

    source = "DiffusionGemma (transformers DiffusionGemmaForBlockDiffusion.generate, EB-sampler arXiv 2505.24857)"

    def validate(self) -> None:
        super().validate()
        check(self, "canvas_length", isinstance(self.canvas_length, int) and self.canvas_length >= 0,
              "an int >= 1, or 0 for the checkpoint's canvas length")
        check(self, "max_denoising_steps", isinstance(self.max_denoising_steps, int) and self.max_denoising_steps >= 1,
              "an int >= 1")
        check(self, "entropy_bound", isinstance(self.entropy_bound, (int, float)) and self.entropy_bound > 0, "a number > 0")
        check(self, "t_min", isinstance(self.t_min, (int, float)) and self.t_min >= 0, "a number >= 0")
        check(self, "t_max", isinstance(self.t_max, (int, float)) and self.t_max > self.t_min, "a number > t_min")
        check(self, "stability_threshold", isinstance(self.stability_threshold, int) and self.stability_threshold >= 0,
              "an int >= 0")
        check(self, "confidence_threshold", isinstance(self.confidence_threshold, (int, float))
              and self.confidence_threshold > 0, "a number > 0")
        for name, default in (("temperature", 0.0), ("top_p", 1.0), ("top_k", 0)):
            check(self, name, getattr(self, name) == default,
                  f"{default!r}: diffusion-gemma samples with its own temperature schedule (t_max, t_min)")
        check(self, "max_nfe", self.max_nfe != 1, "0 (no cap) or >= 2 (a canvas takes an encoder pass and a denoising step)")
        check(self, "use_cache", self.use_cache, "true (the model's generate() always keeps a KV cache)")
        check(self, "engine", self.engine == "dynamic", "'dynamic' (the model's generate() owns its cache)")

    def check_model(self, model: ModelAdapter) -> None:
        hf = hf_module(self, model)
        if type(hf).__name__ != ARCHITECTURE:
            raise DecoderConfigError(f"decoder 'diffusion-gemma' runs {ARCHITECTURE} checkpoints (transformers "
                                     f">= 5.24); this model is a {type(hf).__name__}")

    def generate(self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int) -> list[DecodeResult]:
        self.check_model(model)
        from transformers import LogitsProcessorList
        from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

        hf = hf_module(self, model)
        C = self.canvas_length or hf.config.canvas_length
        batch = Batch(model, prompts, max_new_tokens, None, self.max_nfe, self.trace)
        ids, mask = left_padded(prompts, model.pad_id, model.device)  # [B, L]: the tokens not yet encoded
        scores = LastScores() if self.trace else None
        settings = dict(
            max_new_tokens=C, sampler_config=EntropyBoundSamplerConfig(entropy_bound=float(self.entropy_bound)),
            t_min=float(self.t_min), t_max=float(self.t_max), stability_threshold=self.stability_threshold,
            confidence_threshold=float(self.confidence_threshold), eos_token_id=list(model.eos_ids),
            pad_token_id=None,  # no padding after EOS: Batch.commit cuts there
            cache_implementation=None, disable_compile=True, return_dict_in_generate=True,
        )
        cache = None
        with seeded(model.device, self.seed), canvas_length(hf, C):
            while batch.active:
                steps = min(self.max_denoising_steps, batch.nfe_left(batch.active[0]) - 1)  # rows share counts
                if steps < 1:  # not enough budget left for an encoder pass and one denoising step
                    for r in batch.active:
                        r.finish = "nfe_cap"
                    break
                first = model.n_forward
                out = hf.generate(ids, cache=cache, attention_mask=mask, max_denoising_steps=steps,
                                  logits_processor=LogitsProcessorList([scores] if scores else []), **settings)
                canvas = out.sequences[:, -C:]  # [A, C], the argmax canvas
                for index in range(first, model.n_forward):
                    batch.took_part(batch.active, index)
                conf = None
                if scores is not None:  # the last denoising forward's probability of each committed token
                    probs = scores.scores.float().softmax(-1)  # [A, C, V]
                    conf = probs.gather(-1, canvas[..., None].to(probs.device))[..., 0].tolist()
                rows = list(batch.active)
                for i, (r, toks) in enumerate(zip(rows, canvas.tolist())):
                    batch.commit(r, toks, confidence=None if conf is None else conf[i])
                batch.drop_finished()
                keep = [i for i, r in enumerate(rows) if r.finish is None]
                cache = out.cache
                if len(keep) < len(rows) and keep:  # finished rows leave the batch, and the cache
                    model.select_cache_rows(cache, torch.tensor(keep))
                # next call: the canvas is the uncached input; the mask covers cache + canvas
                ids = canvas[keep]
                mask = torch.cat([mask, torch.ones_like(canvas)], dim=1)[keep]
        return batch.results()
