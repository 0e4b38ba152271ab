"""A batch of sequences that advance at different speeds over one shared KV cache.

`Batch` is what a decoder holds: per-row bookkeeping (commit, EOS and length cuts, accepted counts,
timing) and `forward`, which it hands to an engine that owns the cache. Two engines share that
two-method interface (`forward(rows, heads, window, offsets, window_vis)`, `drop(keep)`):
`DynamicEngine` below (a growing DynamicCache, or none) and `StaticEngine` (decoders/static.py,
fixed shapes over a slot cache).

Every decoder in this package runs the same kind of forward. For each row b with committed tokens x:

    [x[c_b : h_b]]           committed tokens not yet in the cache, encoded causally
    [window, W tokens]       starting at position h_b, visibility inside it given by the decoder

The window sees the committed prefix before h_b (cache + causal part) and, among its own tokens,
what `window_vis` allows. After the forward the cache keeps the causal part and drops the window, so
every committed token gets exactly one causal KV entry. This is the SDLM cached layout (specs/sdlm.md
§3.3) with the block head held back instead of duplicated: the head x[h_b] is the window's first
token and gets its causal KV one step later. That is the attention pattern of the reference's
"duplicate plus hidden twin", and the layout of its uncached path (§3.2).

Rows bring different numbers of causal tokens (k_b = h_b - c_b), so the causal part is left-padded to
K = max k_b with filler slots that no query sees. Fillers stay in the cache as holes; `kv_valid[b, j]`
says which cache slots row b may see. Position ids are per row, so holes cost memory, never results.
With use_cache=False nothing is kept: every forward re-encodes the whole committed prefix (the slow
reference path that the cache invariant is checked against).

Budget and trace live here too, so every decoder gets them without code of its own: with
`max_nfe` > 0, `drop_finished` ends a row with finish "nfe_cap" once it took part in max_nfe forwards
(decoders call it after each step's commits, as they must anyway), and with `trace` on, `commit`
records which output positions each forward committed, with the confidences the decoder passes.
A decoder that runs the model's own generate() has no engine: it reports each forward a row took
part in with `took_part` and commits as usual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from decoders.base import DecodeResult, ModelAdapter


@dataclass
class Row:
    index: int  # position in the caller's prompt list
    seq: list[int]  # prompt + committed tokens
    prompt_len: int
    cached: int = 0  # c_b: how many tokens of seq have KV in the cache
    accepted: list[int] = field(default_factory=list)  # per forward this row took part in
    forwards: list[int] = field(default_factory=list)  # the adapter's index of each of those forwards
    finish: str | None = None
    ttft_s: float = float("nan")
    e2e_s: float = float("nan")
    trace: list[dict] = field(default_factory=list)  # per forward: {"pos": [...], "conf": [...]}

    @property
    def generated(self) -> list[int]:
        return self.seq[self.prompt_len:]

    @property
    def n_generated(self) -> int:
        return len(self.seq) - self.prompt_len


class Batch:
    """The rows of one generate() call and the engine that runs their forwards."""

    def __init__(self, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int, engine,
                 max_nfe: int = 0, trace: bool = False):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r}; must be an int >= 1")
        self.model = model
        self.engine = engine
        self.max_new_tokens = max_new_tokens
        self.max_nfe = max_nfe  # 0 = no cap
        self.trace = trace
        self.eos = set(model.eos_ids)
        self.rows = [Row(i, list(p), len(p)) for i, p in enumerate(prompts)]
        self.active: list[Row] = list(self.rows)  # in the engine's row order
        model.synchronize()
        self.t0 = time.perf_counter()

    def forward(
        self,
        heads: list[int],  # h_b per active row: where the window starts (= committed tokens before it)
        window: torch.Tensor | None,  # [A, W] token ids, or None for a plain causal step
        offsets: torch.Tensor | None = None,  # [W] position of each window token relative to h_b
        window_vis: torch.Tensor | None = None,  # [W, W] bool, query row -> key column
    ) -> torch.Tensor:
        """Run one forward for all active rows. Returns logits [A, W, V] for the window, or [A, 1, V]
        (the prediction after x[h_b - 1]) when there is no window."""
        if self.max_nfe and any(len(r.accepted) >= self.max_nfe for r in self.active):
            raise RuntimeError("a row at max_nfe is still active: call batch.drop_finished() after each step")
        logits = self.engine.forward(self.active, heads, window, offsets, window_vis)
        self.took_part(self.active, self.model.n_forward - 1)  # every active row took part
        return logits

    def took_part(self, rows: list[Row], index: int) -> None:
        """Record that `rows` took part in the adapter's forward number `index`."""
        for r in rows:
            r.forwards.append(index)
            r.accepted.append(0)
            if self.trace:
                r.trace.append({"pos": [], "conf": []})

    def commit(self, row: Row, tokens: list[int], decided_at: list[int] | None = None,
               confidence: list[float] | None = None) -> None:
        """Append tokens to a row, cut after the first EOS and at max_new_tokens. `decided_at[i]` is
        the index into row.accepted of the forward that decided tokens[i] (default: the last one);
        `confidence[i]` is what the trace records for tokens[i] (default: None)."""
        room = self.max_new_tokens - row.n_generated
        kept = tokens[:room]
        for i, t in enumerate(kept):
            if t in self.eos:
                kept = kept[: i + 1]
                row.finish = "eos"
                break
        for i in range(len(kept)):
            step = decided_at[i] if decided_at else -1
            row.accepted[step] += 1
            if self.trace:
                row.trace[step]["pos"].append(row.n_generated + i)
                row.trace[step]["conf"].append(None if confidence is None else float(confidence[i]))
        if kept:
            row.seq.extend(kept)
            now = time.perf_counter() - self.t0
            if row.n_generated == len(kept):
                row.ttft_s = now
            row.e2e_s = now
        if row.finish is None and row.n_generated >= self.max_new_tokens:
            row.finish = "length"

    def remaining(self, row: Row) -> int:
        return self.max_new_tokens - row.n_generated

    def nfe_left(self, row: Row) -> int:
        """Forwards this row may still take part in (max_nfe minus those it took part in)."""
        return self.max_nfe - len(row.accepted) if self.max_nfe else 1 << 62

    def drop_finished(self) -> None:
        """Drop the rows that finished, after ending those that reached max_nfe (finish "nfe_cap")."""
        for r in self.active:
            if r.finish is None and self.max_nfe and len(r.accepted) >= self.max_nfe:
                r.finish = "nfe_cap"
        keep = [i for i, r in enumerate(self.active) if r.finish is None]
        if len(keep) < len(self.active):
            if self.engine is not None:
                self.engine.drop(keep)
            self.active = [self.active[i] for i in keep]

    def results(self) -> list[DecodeResult]:
        out = []
        for r in self.rows:
            step_s = [s for f in r.forwards for s in self.model.forward_seconds(f, f + 1)]
            out.append(DecodeResult(tokens=r.generated, accepted=r.accepted, finish=r.finish or "length",
                                    step_s=step_s, ttft_s=r.ttft_s, e2e_s=r.e2e_s,
                                    trace=r.trace if self.trace else None))
        return out


class DynamicEngine:
    """The growing-cache layout of the module docstring (use_cache=False: nothing kept, every forward
    re-encodes the whole committed prefix)."""

    def __init__(self, model: ModelAdapter, n_rows: int, use_cache: bool):
        self.model = model
        self.cache = model.new_cache() if use_cache else None
        self.kv_valid = torch.zeros(n_rows, 0, dtype=torch.bool)  # [A, C]: cache slots row b may see

    def forward(self, rows: list[Row], heads: list[int], window, offsets, window_vis) -> torch.Tensor:
        A = len(rows)
        W = 0 if window is None else window.shape[1]
        starts = [r.cached for r in rows]
        k = [h - c for h, c in zip(heads, starts)]
        K = max(k)
        ids = torch.full((A, K + W), self.model.pad_id, dtype=torch.long)
        pos = torch.zeros((A, K + W), dtype=torch.long)
        causal_valid = torch.zeros((A, K), dtype=torch.bool)
        for i, (r, h, c, kb) in enumerate(zip(rows, heads, starts, k)):
            ids[i, K - kb:K] = torch.tensor(r.seq[c:h], dtype=torch.long)
            pos[i, K - kb:K] = torch.arange(c, h)
            causal_valid[i, K - kb:] = True
            if W:
                pos[i, K:] = h + offsets
        if W:
            ids[:, K:] = window

        C = self.kv_valid.shape[1] if self.cache is not None else 0
        vis = torch.zeros((A, K + W, C + K + W), dtype=torch.bool)
        if C:
            vis[:, :, :C] = self.kv_valid[:, None, :]
        causal = torch.ones(K, K, dtype=torch.bool).tril()
        vis[:, :K, C:C + K] = causal[None] & causal_valid[:, None, :]
        if W:
            vis[:, K:, C:C + K] = causal_valid[:, None, :]
            vis[:, K:, C + K:] = window_vis[None]

        logits = self.model.forward(ids, pos, vis, self.cache, W if W else 1)
        if self.cache is not None:
            self.model.crop_cache(self.cache, C + K)
            self.kv_valid = torch.cat([self.kv_valid, causal_valid], dim=1)
            for r, h in zip(rows, heads):
                r.cached = h
        return logits

    def drop(self, keep: list[int]) -> None:
        index = torch.tensor(keep, dtype=torch.long)
        if self.cache is not None and self.kv_valid.shape[1]:
            self.model.select_cache_rows(self.cache, index)
        self.kv_valid = self.kv_valid[index]


def make_engine(decoder, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int,
                max_window: int = 0, max_commit: int = 1):
    """The engine a decoder's settings (engine, use_cache) ask for, on `model`."""
    if decoder.engine == "static":
        from decoders.static import StaticEngine

        return StaticEngine(model, prompts, max_new_tokens, max_window, max_commit)
    return DynamicEngine(model, len(prompts), decoder.use_cache)


def open_batch(decoder, model: ModelAdapter, prompts: list[list[int]], max_new_tokens: int,
               max_window: int = 0, max_commit: int = 1) -> Batch:
    """The batch a decoder's settings ask for. `max_window` is the widest window the decoder will
    pass, `max_commit` the most tokens one step can commit (they size the static engine)."""
    engine = make_engine(decoder, model, prompts, max_new_tokens, max_window, max_commit)
    return Batch(model, prompts, max_new_tokens, engine, decoder.max_nfe, decoder.trace)
