"""Which response tokens form the action (RL4VLM's λ-weighting; docs/algorithm.md#rl4vlm).

A JSON response ``{"thoughts": "...", "action": "..."}`` has a thought span and an action span; the
action span starts at the ``"action":`` key. It is located by *character offsets*: the tokenizer's
offset mapping of the decoded response (when re-tokenising gives back the sampled ids), or else
the cumulative lengths of the decoded token prefixes — never by hard-coded token ids, which differ
between tokenizers and with the whitespace around the key.
"""

from __future__ import annotations

import re
from typing import Any

import torch

__all__ = ["ACTION_KEY", "action_token_mask", "token_char_spans"]

ACTION_KEY = re.compile(r'"action"\s*:')


def token_char_spans(tokenizer: Any, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's ``(start, end)`` character span in it."""
    text = tokenizer.decode(ids, skip_special_tokens=False)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc["input_ids"]) == list(ids):
            return text, [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError):  # slow tokenizers have no offset mapping
        pass
    # Re-tokenising gave other ids (a non-canonical sample): offsets from decoded prefixes instead.
    spans, previous = [], 0
    for i in range(len(ids)):
        end = len(tokenizer.decode(ids[: i + 1], skip_special_tokens=False))
        spans.append((previous, end))
        previous = end
    return text, spans


def action_token_mask(
    tokenizer: Any,
    response_ids: torch.Tensor,  # [B, R] int64
    response_mask: torch.Tensor,  # [B, R] bool, real response tokens
    response_mode: str,
) -> torch.Tensor:  # [B, R] bool
    """True on the response tokens from the ``"action":`` key on (the closing brace and end token too).

    ``action_only`` responses are nothing but the action: every real token is an action token, and
    RL4VLM's λ has no thoughts to weigh. A JSON response without an ``"action":`` key (unparseable)
    counts entirely as action, so its whole log-prob carries the parse-failure's advantage.
    """
    mask = response_mask.bool()
    if response_mode == "action_only":
        return mask.clone()
    out = torch.zeros_like(mask)
    for b in range(response_ids.shape[0]):
        ids = response_ids[b][mask[b]].tolist()
        if not ids:
            continue
        text, spans = token_char_spans(tokenizer, ids)
        match = ACTION_KEY.search(text)
        if match is None:
            out[b] = mask[b]
            continue
        start = match.start()
        positions = mask[b].nonzero().flatten().tolist()
        for pos, (_, end) in zip(positions, spans):
            out[b, pos] = end > start  # the token reaches into the key or beyond
    return out
