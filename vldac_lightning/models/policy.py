"""The actor (a VLM with LoRA) and the step critic, behind one small API.

``act`` does what a rollout step needs — batched generation for every env of the pool in one
call, then old log-probs, reference log-probs and values — and ``score`` recomputes log-probs and
values for a PPO minibatch with gradients. Both score the distribution that was actually sampled.

The policy composes three parts: the :class:`~vldac_lightning.models.encoding.PromptEncoder`
(observations → model inputs), a generation engine (models/engines/, chosen by ``model/engine``)
that samples responses and records log π_old and the last prompt hidden state while doing so,
and the value head + scoring forward owned here. ``act`` runs one generation and at most one more
forward (the reference log-probs, adapter disabled). The processor runs once per observation:
``act`` returns each step's encoded inputs, which PPO epochs re-batch with :meth:`VLMPolicy.collate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from peft import PeftModel
from torch import nn
from transformers import ProcessorMixin

from vldac_lightning.models.encoding import FrameCache, PromptEncoder
from vldac_lightning.models.engines.base import DecodeSpec, GenerationEngine
from vldac_lightning.models.engines.hf import HFEngine
from vldac_lightning.models.sampling import ActionTrie, SamplingConfig, response_support, token_logprobs
from vldac_lightning.models.value_head import ValueHead
from vldac_lightning.rollout.policy import ActOutput
from vldac_lightning.utils.interrupt import raise_if_stop_requested

RESPONSE_MODES = ("json", "action_only")


class VLMPolicy(nn.Module):
    """LoRA-wrapped image-text-to-text model + value head."""

    def __init__(
        self,
        model: PeftModel,
        processor: ProcessorMixin,
        *,
        value_hidden_sizes: Sequence[int],
        sampling: SamplingConfig,
        response_mode: str = "json",
        kl_reference: str = "base",
        engine: GenerationEngine | None = None,
        value_stop_grad: bool = True,
    ) -> None:
        super().__init__()
        if response_mode not in RESPONSE_MODES:
            raise ValueError(f"model.response_mode={response_mode!r}; choose one of {RESPONSE_MODES}")
        if kl_reference not in ("base", "old"):
            raise ValueError(f"algo.kl_reference={kl_reference!r}; choose 'base' (adapter disabled) or 'old'")
        self.model = model
        self.processor = processor
        self.sampling = sampling
        self.response_mode = response_mode
        self.kl_reference = kl_reference
        # How responses are sampled (models/engines/): the reference HF engine unless one is given.
        self.engine: GenerationEngine = engine if engine is not None else HFEngine()
        hidden = model.get_base_model().config.get_text_config().hidden_size
        self.value_head = ValueHead(hidden, value_hidden_sizes, stop_grad=value_stop_grad)
        tok = processor.tokenizer
        self.eos_token_id = int(tok.eos_token_id)
        self.pad_token_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.trie: ActionTrie | None = None
        self.encoder = PromptEncoder(model, processor, self.pad_token_id)
        # Multimodal placeholders are never valid response tokens (see sampling.response_support).
        vocab = max(model.get_base_model().config.get_text_config().vocab_size, len(tok))
        support = torch.ones(vocab, dtype=torch.bool)
        placeholders = {getattr(processor, "image_token", None), getattr(processor, "video_token", None),
                        "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"}
        for token in placeholders - {None}:
            token_id = tok.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tok.unk_token_id and 0 <= token_id < vocab:
                support[token_id] = False
        self.register_buffer("support", support, persistent=False)

    # ----------------------------------------------------------------------------------- setup
    def set_action_names(self, action_names: Sequence[str]) -> None:
        """In ``action_only`` mode, constrain decoding to exactly these strings (+ end token)."""
        if self.response_mode != "action_only":
            return
        tok = self.processor.tokenizer
        seqs = [tok.encode(a, add_special_tokens=False) + [self.eos_token_id] for a in action_names]
        vocab = self.model.get_base_model().config.get_text_config().vocab_size
        self.trie = ActionTrie(seqs, vocab_size=max(vocab, len(tok)), pad_token_id=self.pad_token_id)

    @property
    def max_new_tokens(self) -> int:
        return self.trie.max_len if self.trie is not None else self.sampling.max_new_tokens

    @property
    def device(self) -> torch.device:
        return self.value_head.mlp[0].weight.device

    # ------------------------------------------------------------------------------- encoding
    @property
    def frame_cache(self) -> FrameCache | None:
        return self.encoder.frame_cache

    @frame_cache.setter
    def frame_cache(self, cache: FrameCache | None) -> None:
        self.encoder.frame_cache = cache

    def encode(self, observations: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Chat-template + images → left-padded model inputs (:class:`PromptEncoder`)."""
        return self.encoder.encode(observations)

    def split(self, enc: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]] | None:
        return self.encoder.split(enc)

    def collate(self, encodings: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return self.encoder.collate(encodings)

    def encode_steps(self, steps: Sequence[Any]) -> dict[str, torch.Tensor]:
        return self.encoder.encode_steps(steps)

    # ------------------------------------------------------------------------------- scoring
    def _forward(self, enc: dict[str, torch.Tensor], response_ids: torch.Tensor, response_mask: torch.Tensor,
                 with_hidden: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One forward over prompt + response; logits ``[B, R, V]`` predicting each response token."""
        R = response_ids.shape[1]
        inputs = dict(enc)
        inputs["input_ids"] = torch.cat([enc["input_ids"], response_ids], dim=1)
        inputs["attention_mask"] = torch.cat([enc["attention_mask"], response_mask.to(enc["attention_mask"].dtype)], 1)
        if "mm_token_type_ids" in enc:
            inputs["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(response_ids)], 1)
        # Only the last R+1 positions are needed: position P-1+j predicts response token j.
        out = self.model(**inputs, output_hidden_states=with_hidden, logits_to_keep=R + 1, use_cache=False)
        logits = out.logits[:, :R]
        hidden = out.hidden_states[-1][:, enc["input_ids"].shape[1] - 1] if with_hidden else None
        return logits, hidden

    def score(
        self,
        enc: dict[str, torch.Tensor],
        response_ids: torch.Tensor,  # [B, R]
        response_mask: torch.Tensor,  # [B, R]
        *,
        with_values: bool = True,
        adapter: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token log-probs ``[B, R]`` (and values ``[B]``) under the sampling distribution."""
        if adapter:
            logits, hidden = self._forward(enc, response_ids, response_mask, with_values)
        else:
            with self.model.disable_adapter():
                logits, hidden = self._forward(enc, response_ids, response_mask, with_values)
        allowed = response_support(response_ids, self.trie, self.support, logits.shape[-1])
        logp = token_logprobs(logits, response_ids, self.sampling, allowed) * response_mask
        values = self.value_head(hidden) if with_values else None
        return logp, values

    # ------------------------------------------------------------------------------- acting
    @torch.no_grad()
    def generate(self, enc: dict[str, torch.Tensor], *, do_sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample (or greedily pick) responses for the whole batch in one ``generate`` call."""
        response, mask, _, _ = self.generate_scored(enc, do_sample=do_sample, with_scores=False)
        return response, mask

    @torch.no_grad()
    def generate_scored(
        self, enc: dict[str, torch.Tensor], *, do_sample: bool = True, with_scores: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The engine's sample → (response ids, mask, log π_old ``[B, R]``, last-prompt hidden state ``[B, H]``).

        What an engine does not return (an external engine without hidden states or exact
        log-probs) is computed here with a forward of our own, so callers always get all four.
        """
        spec = DecodeSpec(self.sampling, self.max_new_tokens, self.eos_token_id, self.pad_token_id, self.trie,
                          self.support)
        out = self.engine.generate(self.model, enc, spec, do_sample=do_sample, with_scores=with_scores)
        raise_if_stop_requested()  # a cut-short batch must not reach an env or the rollout
        if not with_scores:
            return out.response_ids, out.response_mask, None, None
        logp, hidden = out.logprobs, out.hidden
        if logp is None:
            logp, _ = self.score(enc, out.response_ids, out.response_mask, with_values=False)
        if hidden is None:
            hidden = self._prompt_hidden(enc)
        return out.response_ids, out.response_mask, logp, hidden

    def action_mask(self, response_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """``[B, R]`` bool: the response tokens of the action span (RL4VLM; see models/spans.py)."""
        from vldac_lightning.models.spans import action_token_mask

        return action_token_mask(self.processor.tokenizer, response_ids, response_mask, self.response_mode)

    def decode(self, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
        tok = self.processor.tokenizer
        return [tok.decode(ids[m].tolist(), skip_special_tokens=True) for ids, m in zip(response_ids, response_mask)]

    @torch.no_grad()
    def act(self, observations: Sequence[dict[str, Any]], *, do_sample: bool = True,
            with_scores: bool = True) -> ActOutput:
        """One policy step for a batch of observations (one per env)."""
        enc = self.encode(observations)
        response_ids, response_mask, logprobs, hidden = self.generate_scored(enc, do_sample=do_sample,
                                                                             with_scores=with_scores)
        texts = self.decode(response_ids, response_mask)
        B, R = response_ids.shape
        if logprobs is None or hidden is None:
            zeros = torch.zeros(B, R, device=self.device)
            return ActOutput(texts, response_ids, response_mask, zeros, zeros, torch.zeros(B, device=self.device))
        values = self.value_head(hidden)
        if self.kl_reference == "base":
            ref_logprobs = self._reference_logprobs(enc, response_ids, response_mask)
        else:
            ref_logprobs = logprobs
        return ActOutput(texts, response_ids, response_mask, logprobs, ref_logprobs, values, self.split(enc))

    @torch.no_grad()
    def _reference_logprobs(self, enc: dict[str, torch.Tensor], response_ids: torch.Tensor,
                            response_mask: torch.Tensor) -> torch.Tensor:
        """log π_ref ``[B, R]`` (adapter disabled): the engine's own pass when it offers one
        (``response_logits``, models/engines/base.py), else a Hugging Face scoring forward."""
        response_logits = getattr(self.engine, "response_logits", None)
        if response_logits is None:
            return self.score(enc, response_ids, response_mask, with_values=False, adapter=False)[0]
        with self.model.disable_adapter():
            logits = response_logits(self.model, enc, response_ids, response_mask)
        allowed = response_support(response_ids, self.trie, self.support, logits.shape[-1])
        return token_logprobs(logits, response_ids, self.sampling, allowed) * response_mask

    @torch.no_grad()
    def value(self, observations: Sequence[dict[str, Any]]) -> torch.Tensor:
        """V(s) ``[B]`` from a prompt-only forward (used to bootstrap truncated episodes)."""
        return self.value_head(self._prompt_hidden(self.encode(observations)))

    def _prompt_hidden(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last prompt token's final hidden state ``[B, H]`` from a prompt-only forward (the
        engine's own prefill when it offers one: ``prompt_hidden``, models/engines/base.py)."""
        prompt_hidden = getattr(self.engine, "prompt_hidden", None)
        if prompt_hidden is not None:
            return prompt_hidden(self.model, enc)
        out = self.model(**enc, output_hidden_states=True, logits_to_keep=1, use_cache=False)
        return out.hidden_states[-1][:, -1]
