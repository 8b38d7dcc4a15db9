"""Observations → model inputs: chat template, image processing (memoised per frame), batching.

The encoder is the part of the policy that knows the processor. ``encode`` turns observations
into left-padded model inputs; ``split`` undoes the batching per observation so a rollout can keep
each step's processor output, and ``collate`` re-batches those for the PPO epochs without
running the processor again. Generation engines (models/engines/) and scoring both consume its
output.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import BatchFeature, ProcessorMixin

from vldac_lightning.models.processor import build_messages, to_pil

# Processor outputs that ``split``/``collate`` know how to un-batch and re-batch.
_TOKEN_KEYS = frozenset({"input_ids", "attention_mask", "mm_token_type_ids"})
_IMAGE_KEYS = frozenset({"pixel_values", "image_grid_thw"})


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


class PromptEncoder:
    """Encodes observations for one model; ``device`` is read from the model on every call."""

    def __init__(self, model: nn.Module, processor: ProcessorMixin, pad_token_id: int) -> None:
        self.model = model
        self.processor = processor
        self.pad_token_id = pad_token_id
        self._prompt_cache: dict[tuple[int, str], str] = {}
        self.frame_cache: FrameCache | None = FrameCache()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

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
        visual = getattr(getattr(self._base(), "model", None), "visual", None)
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

    def _base(self) -> nn.Module:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
