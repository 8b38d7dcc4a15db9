"""The generation seam: what an engine receives, what it must return, and how one is chosen.

An engine turns a batch of encoded prompts into sampled responses. It does not encode
observations (models/encoding.py does) and does not score (the policy's training forward does).
What it must return, and why each part is there:

* ``response_ids [B, R]`` and ``response_mask [B, R]``: the sampled tokens up to and including
  the end token, padded after it; ``R`` is the longest response of the batch.
* ``logprobs [B, R]`` (when asked ``with_scores``): log π_old of each sampled token under the
  *constrained, tempered, filtered* distribution it was drawn from (models/sampling.py defines
  it once). PPO's ratio is taken against these, so they must equal what a scoring forward of the
  same tokens computes (tests hold every engine to this).
* ``hidden [B, H]`` (when asked ``with_scores``): the last prompt token's final-layer hidden state
  (the LM head's input), from which the value head predicts V(s) without another forward.

An engine that cannot return hidden states or exact log-probs (a vLLM or SGLang server, say) can
still plug in: return ``hidden=None`` and/or ``logprobs=None`` and the policy computes them with
a prompt-only / scoring forward of its own (slower, but exact). Such an engine must also honour
``spec.trie`` (constrained decoding in ``action_only`` mode), the sampling settings, and the
stop signal: return early once ``local_stop_requested()`` is true; the policy then raises.

An engine may also offer, and the policy then uses them instead of Hugging Face forwards:
``prompt_hidden(model, enc) -> [B, H]`` (the same hidden state from a prompt-only pass; bootstraps
V(s) of truncated episodes) and ``response_logits(model, enc, response_ids, response_mask) ->
[B, R, V]`` (logits predicting each response token, with the weights as they are when called: the
policy calls it inside ``disable_adapter()`` for the KL reference log-probs).

Engines are chosen in config: ``model/engine=static`` (default) or ``model/engine=hf``, or any
class by ``model.engine._target_`` (docs/engines.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from vldac_lightning.models.sampling import ActionTrie, SamplingConfig


@dataclass(frozen=True)
class DecodeSpec:
    """How to decode: the sampling distribution, its constraints, and the special tokens."""

    sampling: SamplingConfig
    max_new_tokens: int
    eos_token_id: int
    pad_token_id: int
    trie: ActionTrie | None = None  # action_only: the only responses allowed
    support: torch.Tensor | None = None  # [V] bool: tokens a response may contain at all


@dataclass
class Generation:
    """One batch of sampled responses (B prompts, R = the longest response)."""

    response_ids: torch.Tensor  # [B, R] int64, pad after the end token
    response_mask: torch.Tensor  # [B, R] bool, True up to and including the end token
    logprobs: torch.Tensor | None = None  # [B, R] float32, log π_old of the sampled tokens (0 on padding)
    hidden: torch.Tensor | None = None  # [B, H] last prompt token's final hidden state


@runtime_checkable
class GenerationEngine(Protocol):
    """What the policy needs from a generation backend (see the module docstring)."""

    name: str

    def generate(self, model: nn.Module, enc: dict[str, torch.Tensor], spec: DecodeSpec, *, do_sample: bool,
                 with_scores: bool) -> Generation:
        """Sample (``do_sample``) or greedily decode responses for the batch ``enc``."""
        ...


def end_mask(response: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """``[B, R]`` bool: tokens up to and including each row's first end token."""
    is_end = (response == eos_token_id).long()
    return (torch.cumsum(is_end, dim=1) - is_end) == 0


def finish(response: torch.Tensor, logprobs: torch.Tensor | None, spec: DecodeSpec) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mask, pad and trim raw decoded tokens ``[B, R']`` to the batch's longest response."""
    mask = end_mask(response, spec.eos_token_id)
    R = int(mask.sum(1).max().item()) if response.shape[1] else 0
    mask = mask[:, :R]
    response = response[:, :R].masked_fill(~mask, spec.pad_token_id)
    if logprobs is not None:
        # Padding after a finished response may lie outside the support (-inf): 0, as in scoring.
        logprobs = torch.nan_to_num(logprobs[:, :R], neginf=0.0) * mask
    return response, mask, logprobs


def build_engine(cfg: Any) -> GenerationEngine:
    """The engine named by ``model.engine`` (a config node with ``_target_``; None → ``hf``)."""
    if cfg is None:
        from vldac_lightning.models.engines.hf import HFEngine

        return HFEngine()
    from hydra.utils import instantiate

    target = cfg.get("_target_") if hasattr(cfg, "get") else None
    if not target:
        raise ValueError("model.engine needs a _target_ (e.g. model/engine=static or model/engine=hf)")
    try:
        engine = instantiate(cfg)
    except Exception as e:  # noqa: BLE001 - Hydra wraps import and argument errors alike
        raise ValueError(f"model.engine._target_={target!r} could not be built: {e}") from e
    if not isinstance(engine, GenerationEngine):
        raise ValueError(f"model.engine._target_={target!r} built {type(engine).__name__}, which has no "
                         "name and generate(model, enc, spec, do_sample=, with_scores=) (models/engines/base.py)")
    return engine
