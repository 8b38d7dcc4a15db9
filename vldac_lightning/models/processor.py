"""Processor helpers: image-only processors and the chat-template prompt.

Stock Qwen2-VL processors require a video processor, and transformers' video processors need
torchvision, which does not import beside the CPU torch wheel we pin. We never feed video, so
for CPU runs the processor is built without one (same class, same ``__call__``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from transformers import ProcessorMixin


def without_video(processor_cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """Subclass ``processor_cls`` so that ``video_processor=None`` is accepted."""

    class _ImageOnly(processor_cls):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    _ImageOnly.__name__ = f"ImageOnly{processor_cls.__name__}"
    _ImageOnly.__qualname__ = _ImageOnly.__name__
    return _ImageOnly


def build_messages(num_images: int, text: str) -> list[dict[str, Any]]:
    """A single user message, the history images first, then the text (docs/environments.md#prompts)."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(num_images)]
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def to_pil(images: np.ndarray | list) -> list[Image.Image]:
    """uint8 ``[n, H, W, 3]`` frames (or a list of them) → PIL images."""
    return [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]
