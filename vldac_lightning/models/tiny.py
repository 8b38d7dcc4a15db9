"""A tiny Qwen2-VL built entirely offline: config + locally trained byte-level BPE tokenizer.

No hub access exists on our CPU machines or in CI, so the default model is the real
``Qwen2VLForConditionalGeneration`` class at toy size (~0.6 M parameters), randomly initialised
from a seed. It runs the exact code path a real checkpoint runs (processor → generate → LoRA →
value head), which is what tests need. Everything here is deterministic: same arguments, same
tokenizer and weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from vldac_lightning.models.processor import without_video

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# ChatML as Qwen uses it; images become <|vision_start|><|image_pad|><|vision_end|> and the
# processor expands <|image_pad|> to one token per merged patch.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A fixed corpus (versioned with the code, so the vocabulary never drifts between runs and a
# resumed checkpoint always meets the same tokenizer). Byte-level BPE encodes any text; merges
# only make the prompts we actually use short.
_CORPUS = """
You are playing a game. You are an expert at the game. The image shows the current state.
You are playing a game called number line. You will see a target number and a current number in the image.
Your goal is to move the current number closer to the target by choosing either adding or subtracting one.
Target: 0 1 2 3 4 5 6 7 8 9 10 Current: 0 1 2 3 4 5 6 7 8 9 10
You are playing a game called points. Your goal is to make a formula using the numbers on the cards that equals 12 or 24.
The cards J, Q and K count as 10. Formula: Cards: Available actions: Allowed symbols:
You are playing blackjack. Your goal is to beat the dealer. Dealer shows. Your cards. Player sum. stand hit
You are in a simulator. Go to the red box. turn left turn right move forward move back
Respond with a JSON object in this format: {"thoughts": "...", "action": "..."}
Answer with only one of the actions. Previous actions. The images show the last steps.
{"thoughts": "I should move closer to the target.", "action": "+"}
{"thoughts": "The target is smaller than the current number.", "action": "-"}
{"thoughts": "hit", "action": "hit"} {"thoughts": "stand", "action": "stand"}
{"action": "1"} {"action": "2"} {"action": "3"} {"action": "4"} {"action": "5"} {"action": "6"}
{"action": "7"} {"action": "8"} {"action": "9"} {"action": "10"} {"action": "+"} {"action": "*"}
{"action": "="} {"action": "/"} {"action": "("} {"action": ")"} {"action": 0} {"action": 1}
"""


def build_tiny_tokenizer(vocab_size: int = 512, corpus: Sequence[str] | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` (default: the fixed corpus above); deterministic, < 1 s."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in _CORPUS.strip().splitlines() if line.strip()] if corpus is None else list(corpus)
    tok.train_from_iterator(lines * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_qwen2_vl(
    *,
    hidden_size: int = 128,
    intermediate_size: int = 256,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vision_depth: int = 2,
    vision_embed_dim: int = 64,
    image_size: int = 56,
    vocab_size: int = 512,
    seed: int = 0,
    init_device: str = "cpu",
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLProcessor]:
    """Build the tiny model and its image-only processor (images resized to ``image_size``²).

    ``init_device`` is where the weights are created and randomly initialised. At toy size the CPU
    is right; a model scaled up through these arguments to billions of parameters (a GPU check of
    a 2B-shaped model) is initialised many times faster on the GPU it will run on (a 1.8 B model:
    ~20 s of single-threaded CPU random init). Same seed + same device → same weights. A
    ``tokenizer`` replaces the default one (models/pretrained_tiny.py trains its own on env text).
    """
    if image_size % 28 != 0:
        raise ValueError(f"model.tiny.image_size must be a multiple of 28 (patch 14 x merge 2), got {image_size}")
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer(vocab_size)
    ids = tokenizer.convert_tokens_to_ids
    head_dim = hidden_size // num_heads
    # mrope splits the rotary half-dimension into (temporal, height, width) sections.
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            max_position_embeddings=4096,
            rope_scaling={"type": "mrope", "mrope_section": section},
            tie_word_embeddings=True,
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=vision_depth,
            embed_dim=vision_embed_dim,
            hidden_size=hidden_size,
            num_heads=4,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_chans=3,
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    device = torch.device(init_device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.tiny.init_device={init_device!r} but CUDA is not available; use init_device=cpu")
    # Building a model must not perturb the caller's RNG streams (CPU, and the init device's).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
    # smart_resize floors sqrt(max_pixels)/28 in floating point: max_pixels = size² would round a
    # 300 px frame down to 28 px. A half-patch of slack makes the result exactly image_size².
    image_processor = Qwen2VLImageProcessorPil(min_pixels=image_size**2, max_pixels=(image_size + 14) ** 2)
    processor = without_video(Qwen2VLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=CHAT_TEMPLATE
    )
    return model, processor
