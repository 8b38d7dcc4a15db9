"""One definition of the sampling distribution, used both to sample and to score.

The reference code sampled at temperature 0.2 but scored log-probs at temperature 1, so its PPO
ratios were computed for a policy that never acted. Here the *same* function turns raw logits into
the distribution that is sampled from (inside ``generate``) and the distribution whose log-probs
enter the loss: constraint mask → temperature → top-k → top-p, in that order, everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor


@dataclass(frozen=True)
class SamplingConfig:
    """How response tokens are drawn (and therefore scored)."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    max_new_tokens: int = 256
    do_sample: bool = True  # False = greedy (evaluation); scoring still uses the tempered distribution

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"sampling.temperature must be > 0, got {self.temperature}; use do_sample=false for greedy")
        if self.top_k < 0:
            raise ValueError(f"sampling.top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"sampling.max_new_tokens must be >= 1, got {self.max_new_tokens}")


class ActionTrie:
    """Token-level trie over a fixed set of allowed responses (``action_only`` response mode).

    Every allowed response is the tokenisation of one action string followed by the end-of-sequence
    token, so a constrained sample is always exactly one valid action. The allowed set at a position
    depends only on the response prefix, which lets scoring rebuild the very mask used in sampling.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], vocab_size: int, pad_token_id: int) -> None:
        if not sequences:
            raise ValueError("ActionTrie needs at least one allowed token sequence")
        self.vocab_size = vocab_size
        self.pad_token_id = pad_token_id
        self.root: dict[int, dict] = {}
        self.max_len = 0
        for seq in sequences:
            node = self.root
            for tok in seq:
                node = node.setdefault(int(tok), {})
            self.max_len = max(self.max_len, len(seq))

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Token ids allowed after ``prefix``; after a complete response only padding is allowed."""
        node = self.root
        for tok in prefix:
            if tok not in node:
                return [self.pad_token_id]
            node = node[tok]
        return list(node.keys()) or [self.pad_token_id]

    def mask(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Boolean mask ``[B, V]`` of allowed next tokens for each prefix ``[B, t]``."""
        return self._scatter([self.allowed(row) for row in prefixes.tolist()], (prefixes.shape[0],),
                             prefixes.device)

    def response_masks(self, response_ids: torch.Tensor) -> torch.Tensor:
        """Allowed-token masks ``[B, R, V]`` for every position of responses ``[B, R]``."""
        B, R = response_ids.shape
        rows = response_ids.tolist()
        return self._scatter([self.allowed(rows[b][:j]) for b in range(B) for j in range(R)], (B, R),
                             response_ids.device)

    def tables(self, vocab_size: int, support: torch.Tensor | None, device: torch.device) -> TrieTables:
        """The trie as device tensors, for decoding without leaving the device (models/engines/static.py)."""
        nodes: list[dict[int, dict]] = [self.root]
        edges: list[tuple[int, int, int]] = []  # (parent, token, child)
        i = 0
        while i < len(nodes):  # breadth-first numbering, the root is 0
            for tok, child in nodes[i].items():
                edges.append((i, tok, len(nodes)))
                nodes.append(child)
            i += 1
        dead = len(nodes)  # a prefix outside the trie: only padding, as in :meth:`allowed`
        allowed = torch.zeros(dead + 1, vocab_size, dtype=torch.bool)
        for n, node in enumerate(nodes):
            allowed[n, [t for t in node if t < vocab_size] or [self.pad_token_id]] = True
        allowed[dead, self.pad_token_id] = True
        if support is not None:
            allowed &= fit_vocab(support.cpu(), vocab_size)
        keys = torch.tensor([p * vocab_size + t for p, t, _ in edges], dtype=torch.long)
        order = torch.argsort(keys)
        children = torch.tensor([c for _, _, c in edges], dtype=torch.long)[order]
        bias = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
        return TrieTables(bias.to(device), keys[order].to(device), children.to(device), dead, vocab_size)

    def _scatter(self, allowed: list[list[int]], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """``[*shape, V]`` mask with ``allowed[i]`` set in flat row ``i``, written in one indexing op.

        One op, not one per row: on a GPU each row's write is a kernel launch plus a host-to-device
        copy of its indices, which at 256 envs cost more than the decode step it constrains.
        """
        rows = [i for i, ids in enumerate(allowed) for _ in ids]
        cols = [t for ids in allowed for t in ids]
        out = torch.zeros(len(allowed), self.vocab_size, dtype=torch.bool)
        out[torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)] = True
        return out.view(*shape, self.vocab_size).to(device)


@dataclass
class TrieTables:
    """An :class:`ActionTrie` on the device: per-node additive masks and a sorted edge list."""

    bias: torch.Tensor  # [nodes + 1, V] float32: 0 where allowed, -inf elsewhere (last row: outside the trie)
    keys: torch.Tensor  # [E] int64, sorted: parent * V + token
    children: torch.Tensor  # [E] int64, the child node of each key
    dead: int  # the node of every prefix outside the trie
    vocab_size: int

    def advance(self, node: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """The node ``[B]`` after appending ``token [B]`` (fixed shapes, no host synchronisation)."""
        key = node * self.vocab_size + token
        idx = torch.searchsorted(self.keys, key).clamp_(max=self.keys.numel() - 1)
        hit = self.keys[idx] == key
        return torch.where(hit, self.children[idx], torch.full_like(node, self.dead))


def fit_vocab(support: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``support [V']`` cut or padded (with False) to ``vocab_size`` (logits may be padded past the tokenizer)."""
    sup = support[:vocab_size]
    if sup.shape[0] < vocab_size:
        sup = torch.nn.functional.pad(sup, (0, vocab_size - sup.shape[0]), value=False)
    return sup


def filter_logits(
    logits: torch.Tensor,  # [..., V]
    cfg: SamplingConfig,
    allowed: torch.Tensor | None = None,  # [..., V] bool
) -> torch.Tensor:
    """Apply constraint, temperature, top-k and top-p to raw logits (float32 result, -inf = excluded)."""
    logits = logits.float()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if cfg.temperature != 1.0:  # x / 1 == x: skip an op per decode step
        logits = logits / cfg.temperature
    if cfg.top_k > 0 and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
        drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class PolicyLogitsProcessor(LogitsProcessor):
    """The only logits processor ``generate`` sees, so sampling == :func:`filter_logits`.

    With ``record_logprobs`` it also keeps the log-prob of every sampled token under the very
    distribution it was drawn from (π_old), with no second forward: each call reads the token drawn
    from the previous call's distribution (``input_ids[:, -1]``), so only one ``[B, V]`` row set is
    held at a time instead of ``generate``'s ``[B, R, V]`` scores.
    """

    def __init__(self, cfg: SamplingConfig, prompt_length: int, trie: ActionTrie | None = None,
                 support: torch.Tensor | None = None, record_logprobs: bool = False) -> None:
        self.cfg = cfg
        self.prompt_length = prompt_length
        self.trie = trie
        self.support = support  # [V] bool: tokens a response may contain at all
        self.record_logprobs = record_logprobs
        self._last: torch.Tensor | None = None  # [B, V] log-softmax of the latest distribution
        self._logprobs: list[torch.Tensor] = []  # [B] per finished position

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = response_support(input_ids[:, self.prompt_length :].unsqueeze(1), self.trie, self.support,
                                   scores.shape[-1])
        out = filter_logits(scores, self.cfg, None if allowed is None else allowed[:, 0])
        if self.record_logprobs:
            if self._last is not None:
                self._logprobs.append(self._last.gather(-1, input_ids[:, -1:]).squeeze(-1))
            self._last = torch.log_softmax(out, dim=-1)
        return out

    def sampled_logprobs(self, response_ids: torch.Tensor) -> torch.Tensor:
        """Log-probs ``[B, R]`` of the generated tokens (call once, after ``generate``); -inf → 0."""
        if not self.record_logprobs or self._last is None:
            raise RuntimeError("PolicyLogitsProcessor(record_logprobs=True) must have been used by generate")
        steps = [*self._logprobs, self._last.gather(-1, response_ids[:, len(self._logprobs), None]).squeeze(-1)]
        if len(steps) != response_ids.shape[1]:
            raise RuntimeError(f"recorded {len(steps)} sampling steps for {response_ids.shape[1]} generated tokens")
        # Padding after a finished response may lie outside the support (-inf); it is masked later.
        return torch.nan_to_num(torch.stack(steps, dim=1), neginf=0.0)


def response_support(
    prefixes: torch.Tensor,  # [B, R, t] or response ids [B, R] (see below)
    trie: ActionTrie | None,
    support: torch.Tensor | None,  # [V] bool
    vocab_size: int,
) -> torch.Tensor | None:
    """Allowed-token mask for sampling ([B, 1, t] prefixes → [B, 1, V]) and scoring ([B, R] → [B, R, V]).

    Combines the action trie (``action_only``) with the global support, which removes tokens a
    response must never contain (image/video placeholders: one sampled ``<|image_pad|>`` makes
    the next forward fail, since no image features exist for it).
    """
    if trie is None and support is None:
        return None
    if prefixes.dim() == 3:  # sampling: one position, the prefix is everything generated so far
        B = prefixes.shape[0]
        allowed = trie.mask(prefixes[:, 0]).unsqueeze(1) if trie is not None else None
        shape = (B, 1, vocab_size)
    else:  # scoring: every position of the response
        allowed = trie.response_masks(prefixes) if trie is not None else None
        shape = (*prefixes.shape, vocab_size)
    if support is not None:
        sup = fit_vocab(support, vocab_size).to(prefixes.device)
        base = sup.expand(shape)
        allowed = base if allowed is None else allowed[..., :vocab_size] & base
    return allowed


def token_logprobs(
    logits: torch.Tensor,  # [B, R, V] logits that predict response tokens 0..R-1
    response_ids: torch.Tensor,  # [B, R]
    cfg: SamplingConfig,
    allowed: torch.Tensor | None = None,  # [B, R, V]
) -> torch.Tensor:
    """Log-prob ``[B, R]`` of each response token under the sampling distribution."""
    logp = torch.log_softmax(filter_logits(logits, cfg, allowed), dim=-1)
    out = logp.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
    # Padding after the end of a response can be outside the filtered support (-inf); it is masked
    # out of every loss, but must not turn into NaN through 0 * -inf.
    return torch.nan_to_num(out, neginf=0.0)
