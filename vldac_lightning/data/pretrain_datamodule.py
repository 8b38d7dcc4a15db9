"""Batches of pretraining examples (data/pretrain_data.py) in the layout RL scores responses in.

A batch is the chat-templated prompt with its image, left-padded by the processor, followed by the
answer's tokens + end token, right-padded — exactly how ``VLMPolicy`` lays out a prompt and a
generated response, so the pretrained distribution is the one RL samples from. The stream is
infinite and indexed: batch ``b`` holds examples ``b·B … b·B+B−1``, and a resumed run starts at
the batch after the checkpoint's step (exact resume).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset
from transformers import ProcessorMixin

from vldac_lightning.data.pretrain_data import PretrainExample, PretrainStream
from vldac_lightning.models.processor import build_messages

__all__ = ["PretrainDataModule", "encode_examples", "encode_prompts"]


def encode_prompts(processor: ProcessorMixin, examples: Sequence[PretrainExample]) -> dict[str, torch.Tensor]:
    """The left-padded prompt inputs (one image each), as the policy encodes an observation."""
    prompts = [processor.apply_chat_template(build_messages(1, ex.prompt), add_generation_prompt=True, tokenize=False)
               for ex in examples]
    images = [[Image.fromarray(ex.image)] for ex in examples]
    return dict(processor(text=prompts, images=images, return_tensors="pt", padding=True))


def encode_examples(processor: ProcessorMixin, examples: Sequence[PretrainExample]) -> dict[str, torch.Tensor]:
    """Prompt inputs + ``response_ids [B, R]`` (answer + end token, right-padded) and ``response_mask``."""
    tok = processor.tokenizer
    batch = encode_prompts(processor, examples)
    answers = [tok.encode(ex.answer, add_special_tokens=False) + [tok.eos_token_id] for ex in examples]
    R = max(len(a) for a in answers)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batch["response_ids"] = torch.tensor([a + [pad] * (R - len(a)) for a in answers], dtype=torch.long)
    batch["response_mask"] = torch.tensor([[1] * len(a) + [0] * (R - len(a)) for a in answers], dtype=torch.bool)
    return batch


class _Batches(IterableDataset):
    """Encoded batches ``start, start+1, …`` of an indexed example stream (built in the worker)."""

    def __init__(self, stream_kwargs: dict[str, Any], processor: ProcessorMixin, batch_size: int, start: int) -> None:
        self.stream_kwargs, self.processor, self.batch_size, self.start = stream_kwargs, processor, batch_size, start

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        stream = PretrainStream(**self.stream_kwargs)
        try:
            b = self.start
            while True:
                # One task per batch: a describe prompt is ~30 tokens, a JSON prompt ~230; mixing pads to 230.
                task = stream.task_of(b)
                examples = [stream.example(b * self.batch_size + i, task) for i in range(self.batch_size)]
                yield encode_examples(self.processor, examples)
                b += 1
        finally:
            stream.close()


class PretrainDataModule(L.LightningDataModule):
    """An endless stream of pretraining batches; ``trainer.max_steps`` bounds the run."""

    def __init__(self, processor: ProcessorMixin, *, env_ids: Sequence[str], seed: int, batch_size: int,
                 max_random_steps: int, describe_fraction: float) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"pretrain batch_size={batch_size} must be >= 1")
        self.processor = processor
        self.batch_size = int(batch_size)
        self.stream_kwargs = {"env_ids": list(env_ids), "seed": int(seed), "stream": 0,
                              "max_random_steps": int(max_random_steps), "describe_fraction": float(describe_fraction)}

    def train_dataloader(self) -> DataLoader:
        # Lightning restores global_step before it asks for the dataloader: resume continues the stream.
        start = int(self.trainer.global_step) if self.trainer is not None else 0
        return DataLoader(_Batches(self.stream_kwargs, self.processor, self.batch_size, start), batch_size=None,
                          num_workers=0)
