"""Draft verification shared by the speculative decoders (prompt-lookup, draft-spec).

One target forward checks every row's drafts d_1..d_k at once. The window is the last committed token
x followed by the drafts, causal inside (as plain AR would see them), starting at x's position:

    window  [x, d_1, ..., d_k]        logits row j = the target's prediction after window[j]

Greedy: d_j is accepted while it equals the target's argmax after x, d_1..d_{j-1}; then the target's
own prediction at the first mismatch (or after d_k) is committed too. Every committed token is what
`ar` would emit, so the output equals ar's token for token, whatever the drafts.

Sampled (Leviathan et al. 2023, Chen et al. 2023): with p_j the target's sampling distribution and q_j
the one d_j was drawn from, accept d_j with probability min(1, p_j(d_j) / q_j(d_j)); at the first
rejection sample from normalize(max(0, p_j - q_j)) and stop; after k acceptances sample a bonus token
from p_{k+1}. Each committed token is then distributed exactly as under plain sampling from p. A
deterministic draft (prompt lookup) is the case q_j = one-hot(d_j): accept with probability p_j(d_j),
else sample from p_j with d_j removed.

Rows draft different numbers of tokens (n_b <= k); the window is padded to 1 + max n_b and the
padding is never accepted. Everything committed in a step is counted on that step's forward.
"""

from __future__ import annotations

import torch

from decoders.batch import Batch
from decoders.sampling import choose, distribution


def verify_and_commit(decoder, batch: Batch, drafts: list[list[int]], gen: torch.Generator,
                      q: torch.Tensor | None = None) -> list[int]:
    """One target forward over every active row's drafts; commits the accepted drafts plus one token
    from the target. `q` [A, k, V]: the distributions the drafts were sampled from (None = drafts are
    deterministic). Returns the number of drafts accepted per row."""
    rows = batch.active
    A, k = len(rows), max(len(d) for d in drafts)
    n_draft = torch.tensor([len(d) for d in drafts])  # [A]
    window = torch.full((A, 1 + k), batch.model.pad_id, dtype=torch.long)  # [A, W = 1 + k]
    for i, (r, d) in enumerate(zip(rows, drafts)):
        window[i, 0] = r.seq[-1]
        window[i, 1:1 + len(d)] = torch.tensor(d, dtype=torch.long)
    W = 1 + k
    logits = batch.forward([len(r.seq) - 1 for r in rows], window, torch.arange(W),
                           torch.ones(W, W, dtype=torch.bool).tril())  # [A, W, V]
    dev = logits.device
    d = window[:, 1:].to(dev)  # [A, k]
    real = torch.arange(k, device=dev)[None, :] < n_draft.to(dev)[:, None]  # [A, k]: a drafted slot
    arange_a = torch.arange(A, device=dev)
    if decoder.temperature == 0:
        pred, conf = choose(logits, 0.0, 1.0, 0, None)  # [A, W]: the target's argmax after each slot
        ok = (d == pred[:, :k]) & real
        n_acc = ok.long().cumprod(dim=-1).sum(dim=-1)  # [A]
        nxt = pred[arange_a, n_acc]
        probs = None
    else:
        p = distribution(logits, decoder.temperature, decoder.top_p, decoder.top_k)  # [A, W, V]
        p_d = p[:, :k].gather(-1, d[..., None])[..., 0]  # [A, k]: p_j(d_j)
        if q is None:  # deterministic drafts: q_j is a point mass on d_j
            q_full = torch.zeros_like(p)
            q_full[:, :k].scatter_(-1, d[..., None], 1.0)
        else:
            q_full = torch.zeros_like(p)
            V = min(q.shape[-1], p.shape[-1])
            q_full[:, :q.shape[1], :V] = q[..., :V].to(dev)
        q_d = q_full[:, :k].gather(-1, d[..., None])[..., 0].clamp_min(1e-30)  # [A, k]: q_j(d_j)
        u = torch.rand((A, k), generator=gen, device=gen.device).to(dev)
        ok = (u < p_d / q_d) & real
        n_acc = ok.long().cumprod(dim=-1).sum(dim=-1)  # [A]
        q_at = q_full[arange_a, n_acc] * (n_acc < n_draft.to(dev))[:, None]  # after the last draft: bonus from p
        p_at = p[arange_a, n_acc]  # [A, V]
        residual = (p_at - q_at).clamp_min(0)
        empty = residual.sum(-1, keepdim=True) <= 0  # p == q there: any draw from p is right
        residual = torch.where(empty, p_at, residual)
        nxt = torch.multinomial(residual / residual.sum(-1, keepdim=True), 1, generator=gen).squeeze(-1)
        probs = p
    conf = None
    if decoder.trace:  # the target's probability of each committed token
        committed = torch.cat([d, torch.zeros((A, 1), dtype=d.dtype, device=dev)], dim=1)  # [A, W]
        committed[arange_a, n_acc] = nxt
        probs = probs if probs is not None else logits.softmax(-1)
        conf = probs.gather(-1, committed[..., None])[..., 0].tolist()
    for i, (r, dr, n, t) in enumerate(zip(list(rows), drafts, n_acc.tolist(), nxt.tolist())):  # one host sync
        batch.commit(r, dr[:n] + [t], confidence=None if conf is None else conf[i][:n + 1])
    return n_acc.tolist()
