"""``model/engine=hf``: Hugging Face ``generate`` with our logits processor — the reference engine.

Works for any image-text-to-text checkpoint transformers can run. π_old is recorded by
:class:`~vldac_lightning.models.sampling.PolicyLogitsProcessor` from the distribution each token
was drawn from (``generate`` sees no other processor: ``loading.neutral_generation_config``), and
the hidden state is the LM head's input at the prefill's last position, so neither costs a
forward. Slow on small batches (Python and kernel-launch overhead per token, docs/engines.md);
the static engine is held to its outputs in tests.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
from torch import nn
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from vldac_lightning.models.engines.base import DecodeSpec, Generation, finish
from vldac_lightning.models.lora_merge import lora_merged
from vldac_lightning.models.sampling import PolicyLogitsProcessor
from vldac_lightning.utils.interrupt import local_stop_requested


class StopOnSignal(StoppingCriteria):
    """Ends ``generate`` at the next decode step once a stop signal arrived (a 2B model's long JSON
    answers would otherwise finish first); the policy then raises."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), local_stop_requested(), dtype=torch.bool, device=input_ids.device)


class HFEngine:
    """``model.generate`` with our processor; ``merge_lora`` samples from merged ``W + ΔW`` copies."""

    name = "hf"

    def __init__(self, merge_lora: bool = False) -> None:
        self.merge_lora = merge_lora

    @torch.no_grad()
    def generate(self, model: nn.Module, enc: dict[str, torch.Tensor], spec: DecodeSpec, *, do_sample: bool,
                 with_scores: bool) -> Generation:
        P = enc["input_ids"].shape[1]
        processor = PolicyLogitsProcessor(spec.sampling, prompt_length=P, trie=spec.trie, support=spec.support,
                                          record_logprobs=with_scores)
        captured: list[torch.Tensor] = []

        def capture(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if not captured:  # the first LM-head call is the prefill over the whole prompt
                captured.append(args[0][:, -1])

        head = model.get_base_model().get_output_embeddings()
        if head is None:
            raise ValueError(f"{type(model.get_base_model()).__name__} exposes no output embeddings (LM head)")
        handle = head.register_forward_pre_hook(capture) if with_scores else None
        weights = ExitStack()
        try:
            if self.merge_lora:
                weights.enter_context(lora_merged(model))
            out = model.generate(
                **enc,
                logits_processor=LogitsProcessorList([processor]),
                do_sample=do_sample,
                max_new_tokens=spec.max_new_tokens,
                pad_token_id=spec.pad_token_id,
                eos_token_id=spec.eos_token_id,
                return_dict_in_generate=True,
                stopping_criteria=StoppingCriteriaList([StopOnSignal()]),
            )
        finally:
            weights.close()
            if handle is not None:
                handle.remove()
        raw = out.sequences[:, P:]
        if local_stop_requested():  # cut short: the policy raises before anyone reads this
            return Generation(raw, torch.ones_like(raw, dtype=torch.bool))
        logp = processor.sampled_logprobs(raw) if with_scores else None
        response, mask, logp = finish(raw, logp, spec)
        return Generation(response, mask, logp, captured[0] if with_scores else None)
