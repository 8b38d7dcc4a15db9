"""The actor (a VLM with LoRA) and the step critic, behind one small API.

``act`` does what a rollout step needs — batched generation for every env of the pool in one
call, then old log-probs, reference log-probs and values — and ``score`` recomputes log-probs and
values for a PPO minibatch with gradients. Both score the distribution that was actually sampled.

Throughput (experiments/bench_rollout.py): ``act`` runs one ``generate`` and at most one more
forward. π_old is recorded while sampling, from the very distribution sampled; V(s) comes from
the hidden state of the last prompt token captured during the prefill; only the reference
log-probs (adapter disabled) need a forward of their own. The processor runs once per observation:
``act`` returns each step's encoded inputs, which PPO epochs re-batch with :meth:`VLMPolicy.collate`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel
from PIL import Image
from torch import nn
from transformers import (
    BatchFeature,
    LogitsProcessorList,
    ProcessorMixin,
    StoppingCriteria,
    StoppingCriteriaList,
)

from vldac_lightning.models.lora_merge import lora_merged
from vldac_lightning.models.processor import build_messages, to_pil
from vldac_lightning.models.sampling import (
    ActionTrie,
    PolicyLogitsProcessor,
    SamplingConfig,
    response_support,
    token_logprobs,
)
from vldac_lightning.models.value_head import ValueHead
from vldac_lightning.utils.interrupt import local_stop_requested, raise_if_stop_requested

RESPONSE_MODES = ("json", "action_only")
# Processor outputs that ``split``/``collate`` know how to un-batch and re-batch.
_TOKEN_KEYS = frozenset({"input_ids", "attention_mask", "mm_token_type_ids"})
_IMAGE_KEYS = frozenset({"pixel_values", "image_grid_thw"})


@dataclass
class ActOutput:
    """Everything a rollout keeps from one batched policy step (B = number of envs)."""

    texts: list[str]  # B decoded responses (what the envs receive)
    response_ids: torch.Tensor  # [B, R] int64, padded after the end token
    response_mask: torch.Tensor  # [B, R] bool, True on every generated token up to and incl. the end token
    logprobs: torch.Tensor  # [B, R] float32, log π_old
    ref_logprobs: torch.Tensor  # [B, R] float32, log π_ref (adapter disabled) or π_old
    values: torch.Tensor  # [B] float32, V(s_t)
    # Per-observation model inputs (unpadded, on CPU) for re-scoring without the processor; None
    # when the processor's outputs cannot be split per observation.
    encodings: list[dict[str, torch.Tensor]] | None = None


class StopOnSignal(StoppingCriteria):
    """Ends ``generate`` at the next decode step once a stop signal arrived (a 2B model's long JSON
    answers would otherwise finish first); :meth:`VLMPolicy.generate_scored` then raises."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), local_stop_requested(), dtype=torch.bool, device=input_ids.device)


class FrameCache:
    """Memo of the image processor's output per frame, so each frame is resized/normalised once.

    A frame recurs in every history window that holds it (and, in small envs, across episodes);
    the processor would redo the same work each time, and again in every PPO epoch. Entries are
    keyed by the frame's bytes and evicted least-recently-used beyond ``max_bytes``. Only the
    Qwen-VL layout (``pixel_values`` rows per image + ``image_grid_thw``) is cached; any other
    processor output is passed through untouched.
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.entries: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor, str]] = OrderedDict()
        self.hits = self.misses = 0
        self.enabled = True

    @staticmethod
    def key(image: Any) -> tuple:
        # SHA-256 runs on the CPU's SHA extensions: ~2x faster than BLAKE2 here, and collision-free in practice.
        return (image.size, image.mode, hashlib.sha256(image.tobytes()).digest())

    def process(self, original: Any, images: Any, **kwargs: Any) -> tuple[Any, list[str]]:
        """Drop-in for ``ProcessorMixin._process_images``: (processed images, placeholder texts)."""
        flat = [im for group in images for im in group] if images and isinstance(images[0], list) else list(images)
        if not self.enabled or not all(isinstance(im, Image.Image) for im in flat):
            return original(images, **kwargs)
        keys = [self.key(im) for im in flat]
        new: dict[tuple, Image.Image] = {}
        for k, im in zip(keys, flat):
            if k not in self.entries and k not in new:
                new[k] = im
        self.misses += len(new)
        self.hits += len(flat) - len(new)
        if new:
            processed, texts = original(list(new.values()), **kwargs)
            if set(processed.keys()) != {"pixel_values", "image_grid_thw"}:
                self.enabled = False  # not a layout we can split per image
                return original(images, **kwargs)
            rows = processed["image_grid_thw"].prod(-1).tolist()
            start = 0
            for i, k in enumerate(new):
                # A copy, so evicting an entry frees its memory (a view would pin the whole batch).
                pixels = processed["pixel_values"][start:start + int(rows[i])].clone()
                start += int(rows[i])
                self.entries[k] = (pixels, processed["image_grid_thw"][i], texts[i])
                self.nbytes += pixels.numel() * pixels.element_size()
        out_pixels, out_grid, out_texts = [], [], []
        for k in keys:
            pixels, grid, text = self.entries[k]
            self.entries.move_to_end(k)
            out_pixels.append(pixels)
            out_grid.append(grid)
            out_texts.append(text)
        out = BatchFeature({"pixel_values": torch.cat(out_pixels), "image_grid_thw": torch.stack(out_grid)})
        while self.nbytes > self.max_bytes and len(self.entries) > 1:
            _, (pixels, _, _) = self.entries.popitem(last=False)
            self.nbytes -= pixels.numel() * pixels.element_size()
        return out, out_texts


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
        merge_lora_for_generation: bool = False,
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
        self.merge_lora_for_generation = merge_lora_for_generation
        hidden = model.get_base_model().config.get_text_config().hidden_size
        self.value_head = ValueHead(hidden, value_hidden_sizes, stop_grad=value_stop_grad)
        tok = processor.tokenizer
        self.eos_token_id = int(tok.eos_token_id)
        self.pad_token_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.trie: ActionTrie | None = None
        self._prompt_cache: dict[tuple[int, str], str] = {}
        self.frame_cache: FrameCache | None = FrameCache()
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
    def _prompt(self, num_images: int, text: str) -> str:
        """The chat-templated prompt (memoised: env prompts repeat, and Jinja rendering is not free)."""
        key = (num_images, text)
        prompt = self._prompt_cache.get(key)
        if prompt is None:
            if len(self._prompt_cache) >= 4096:
                self._prompt_cache.clear()
            prompt = self.processor.apply_chat_template(build_messages(num_images, text), add_generation_prompt=True,
                                                        tokenize=False)
            self._prompt_cache[key] = prompt
        return prompt

    def encode(self, observations: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Chat-template + images → left-padded model inputs for a batch of observations."""
        texts, images = [], []
        for obs in observations:
            frames = to_pil(obs["images"])
            texts.append(self._prompt(len(frames), obs["text"]))
            images.append(frames)
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if any(images):
            kwargs["images"] = images
        enc = self._process(kwargs)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _process(self, kwargs: dict[str, Any]) -> Any:
        """The processor call, with per-frame image results served from :attr:`frame_cache`."""
        original = getattr(self.processor, "_process_images", None)
        if self.frame_cache is None or "images" not in kwargs or original is None:
            return self.processor(**kwargs)
        # Installed on the instance only for this call: the processor object stays stock.
        self.processor._process_images = lambda images, **kw: self.frame_cache.process(original, images, **kw)
        try:
            return self.processor(**kwargs)
        finally:
            del self.processor._process_images

    def split(self, enc: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]] | None:
        """Undo the batching of :meth:`encode`: one unpadded input dict per observation (on CPU).

        Supports processors whose outputs are token-aligned ``[B, P]`` tensors plus Qwen-VL style
        flattened image patches (``pixel_values [Σ patches, D]`` with ``image_grid_thw``); returns
        None for anything else, and callers then re-run the processor.
        """
        if not set(enc) <= _TOKEN_KEYS | _IMAGE_KEYS or "attention_mask" not in enc:
            return None
        B = enc["input_ids"].shape[0]
        lengths = enc["attention_mask"].sum(1).tolist()
        # Left padding keeps every prompt's tokens contiguous at the end of its row.
        if not bool((enc["attention_mask"].cumsum(1) == 0).logical_or(enc["attention_mask"] == 1).all()):
            return None
        out: list[dict[str, torch.Tensor]] = [{} for _ in range(B)]
        for key in _TOKEN_KEYS & set(enc):
            for b in range(B):
                out[b][key] = enc[key][b, enc[key].shape[1] - int(lengths[b]):].cpu()
        if "pixel_values" in enc:
            if "image_grid_thw" not in enc:
                return None
            # Each image's patches and grid row belong to the sample whose tokens hold its placeholders.
            per_sample = self._images_per_sample(enc)
            if per_sample is None:
                return None
            patches = enc["image_grid_thw"].prod(-1).tolist()
            # Kept in the vision tower's dtype, which the model casts them to anyway (bf16 halves
            # the host memory a rollout's cached pixels take).
            pixels = enc["pixel_values"]
            dtype = self._vision_dtype()
            if dtype is not None and pixels.is_floating_point():
                pixels = pixels.to(dtype)
            img = row = 0
            for b, n in enumerate(per_sample):
                count = int(sum(patches[img:img + n]))
                out[b]["pixel_values"] = pixels[row:row + count].cpu()
                out[b]["image_grid_thw"] = enc["image_grid_thw"][img:img + n].cpu()
                img += n
                row += count
        return out

    def _vision_dtype(self) -> torch.dtype | None:
        visual = getattr(getattr(self.model.get_base_model(), "model", None), "visual", None)
        param = next(visual.parameters(), None) if isinstance(visual, nn.Module) else None
        return param.dtype if param is not None else None

    def _images_per_sample(self, enc: dict[str, torch.Tensor]) -> list[int] | None:
        tok = self.processor.tokenizer
        start = tok.convert_tokens_to_ids("<|vision_start|>")
        if not isinstance(start, int) or start == tok.unk_token_id:
            return None
        counts = (enc["input_ids"] == start).sum(1).tolist()
        return counts if sum(counts) == enc["image_grid_thw"].shape[0] else None

    def collate(self, encodings: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Left-pad per-observation inputs (from :meth:`split`) into a batch equal to :meth:`encode`'s."""
        P = max(e["input_ids"].shape[0] for e in encodings)
        batch: dict[str, torch.Tensor] = {}
        for key in encodings[0]:
            if key in _TOKEN_KEYS:
                fill = self.pad_token_id if key == "input_ids" else 0
                batch[key] = torch.stack([torch.nn.functional.pad(e[key], (P - e[key].shape[0], 0), value=fill)
                                          for e in encodings])
            else:
                batch[key] = torch.cat([e[key] for e in encodings])
        return {k: v.to(self.device) for k, v in batch.items()}

    def encode_steps(self, steps: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Model inputs for rollout records (``.obs``, optional ``.encoded``): no processor if cached."""
        cached = [getattr(r, "encoded", None) for r in steps]
        if all(c is not None for c in cached):
            return self.collate(cached)
        return self.encode([r.obs for r in steps])

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
        """One ``generate`` call → (response ids, mask, log π_old ``[B, R]``, last-prompt hidden state ``[B, H]``).

        The log-probs are recorded by :class:`PolicyLogitsProcessor` from the distribution each
        token was drawn from (``generate`` has no other processor: see
        ``loading.neutral_generation_config``), and the hidden state is the LM head's input (the
        last layer's normalised output) at the prefill's last position, the state :meth:`score`
        and :meth:`value` read. No extra forward for either.
        """
        P = enc["input_ids"].shape[1]
        processor = PolicyLogitsProcessor(self.sampling, prompt_length=P, trie=self.trie, support=self.support,
                                          record_logprobs=with_scores)
        captured: list[torch.Tensor] = []

        def capture(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if not captured:  # the first LM-head call is the prefill over the whole prompt
                captured.append(args[0][:, -1])

        handle = self._lm_head().register_forward_pre_hook(capture) if with_scores else None
        weights = ExitStack()
        try:
            if self.merge_lora_for_generation:
                weights.enter_context(lora_merged(self.model))
            out = self.model.generate(
                **enc,
                logits_processor=LogitsProcessorList([processor]),
                do_sample=do_sample,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.pad_token_id,
                eos_token_id=self.eos_token_id,
                return_dict_in_generate=True,
                stopping_criteria=StoppingCriteriaList([StopOnSignal()]),
            )
        finally:
            weights.close()
            if handle is not None:
                handle.remove()
        raise_if_stop_requested()  # a cut-short batch must not reach an env or the rollout
        response = out.sequences[:, P:]
        is_end = response == self.eos_token_id
        # A token belongs to the response if no end token came before it (the end token counts).
        mask = (torch.cumsum(is_end.long(), dim=1) - is_end.long()) == 0
        response = response.masked_fill(~mask, self.pad_token_id)
        if not with_scores:
            return response, mask, None, None
        logp = processor.sampled_logprobs(out.sequences[:, P:]) * mask  # padding: 0, as in score()
        return response, mask, logp, captured[0]

    def _lm_head(self) -> nn.Module:
        head = self.model.get_base_model().get_output_embeddings()
        if head is None:
            raise ValueError(f"{type(self.model.get_base_model()).__name__} exposes no output embeddings (LM head)")
        return head

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
            ref_logprobs, _ = self.score(enc, response_ids, response_mask, with_values=False, adapter=False)
        else:
            ref_logprobs = logprobs
        return ActOutput(texts, response_ids, response_mask, logprobs, ref_logprobs, values, self.split(enc))

    @torch.no_grad()
    def value(self, observations: Sequence[dict[str, Any]]) -> torch.Tensor:
        """V(s) ``[B]`` from a prompt-only forward (used to bootstrap truncated episodes)."""
        enc = self.encode(observations)
        out = self.model(**enc, output_hidden_states=True, logits_to_keep=1, use_cache=False)
        return self.value_head(out.hidden_states[-1][:, -1])
