"""Build the policy backbone + processor from a model config (tiny offline model or a checkpoint).

One route serves all: ``source: tiny`` builds the toy Qwen2-VL in code; ``source: tiny_pretrained``
loads it after simulator pretraining (models/pretrained_tiny.py); ``source: pretrained``
loads any Hugging Face image-text-to-text checkpoint (hub id or local directory) with the same
classes. LoRA is applied here so every caller gets the same trainable set.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

from vldac_lightning.models.availability import check_pretrained_available
from vldac_lightning.models.processor import without_video
from vldac_lightning.models.tiny import build_tiny_qwen2_vl

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r} is not supported; choose one of {sorted(DTYPES)}")
    return DTYPES[name]


def load_processor(path: str, *, image_only: bool, image_min_pixels: int | None, image_max_pixels: int | None,
                   local_files_only: bool = False) -> ProcessorMixin:
    """Load a processor; ``image_only`` assembles it without a video processor (no torchvision)."""
    size = None
    if image_min_pixels or image_max_pixels:
        size = {"shortest_edge": int(image_min_pixels or image_max_pixels), "longest_edge": int(image_max_pixels or image_min_pixels)}
    if not image_only:
        processor = _full_processor(path, size, local_files_only)
        if processor is not None:
            processor.tokenizer.padding_side = "left"
            return processor
    config = AutoConfig.from_pretrained(path, local_files_only=local_files_only)
    cls_name = PROCESSOR_MAPPING_NAMES.get(config.model_type)
    if cls_name is None:
        raise ValueError(f"no processor class is known for model_type={config.model_type!r}; set model.image_only=false")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only, padding_side="left")
    ip_kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if size:
        ip_kwargs["size"] = size
    image_processor = AutoImageProcessor.from_pretrained(path, **ip_kwargs)
    chat_template = tokenizer.chat_template
    template_file = Path(path) / "chat_template.jinja"
    if chat_template is None and template_file.exists():
        chat_template = template_file.read_text()
    processor_cls = without_video(getattr(transformers, cls_name))
    return processor_cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                         chat_template=chat_template)


def _full_processor(path: str, size: dict[str, int] | None, local_files_only: bool) -> ProcessorMixin | None:
    """``AutoProcessor`` for ``model.image_only=false``, or None (with the cause logged) where it cannot be
    built here and the image-only assembly serves instead: its video processor needs torchvision (not
    installable beside our CPU torch), or the folder has no processor config, so ``AutoProcessor``
    returns a bare tokenizer (which has no ``.tokenizer`` / image processor)."""
    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if size:
        kwargs["size"] = size
    try:
        processor = AutoProcessor.from_pretrained(path, **kwargs)
    except ImportError as exc:
        if "torchvision" not in str(exc).lower():
            raise
        log.warning("model.image_only=false: the full processor of %s needs torchvision (for its video processor), "
                    "which is not installed; building it without a video processor, as model.image_only=true does "
                    "(images are processed the same way)", path)
        return None
    if not isinstance(processor, ProcessorMixin) or getattr(processor, "image_processor", None) is None:
        log.warning("model.image_only=false: %s has no processor config (AutoProcessor returned a %s); assembling "
                    "its tokenizer and image processor, as model.image_only=true does", path, type(processor).__name__)
        return None
    return processor


def save_backbone(model: PreTrainedModel, processor: ProcessorMixin, path: str | Path) -> None:
    """Save a (non-LoRA) backbone and its processor parts so ``source: pretrained`` can load them."""
    path = Path(path)
    model.save_pretrained(path)
    processor.tokenizer.save_pretrained(path)
    processor.image_processor.save_pretrained(path)


def neutral_generation_config(model: PreTrainedModel, processor: ProcessorMixin) -> GenerationConfig:
    """A generation config with every built-in warper off.

    Checkpoints ship defaults (Qwen2-VL: top_k=1, top_p=0.001, repetition_penalty=1.05) that would
    silently change the sampling distribution away from the one we score; ours is applied by
    :class:`~vldac_lightning.models.sampling.PolicyLogitsProcessor` alone.
    """
    tok = processor.tokenizer
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    return GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
        eos_token_id=eos, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0],
        bos_token_id=getattr(model.config, "bos_token_id", None),
    )


def load_backbone(cfg: Any) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Instantiate the backbone from ``cfg`` (the ``model`` config group)."""
    if cfg.source == "tiny":
        model, processor = build_tiny_qwen2_vl(**dict(cfg.tiny))
    elif cfg.source == "pretrained":
        # Decided up front (seconds): a local folder, the HF cache, or a reachable hub — else a clear error.
        local_only = check_pretrained_available(cfg)
        kwargs: dict[str, Any] = {"dtype": _dtype(cfg.dtype), "local_files_only": local_only}
        if cfg.get("attn_implementation"):
            kwargs["attn_implementation"] = cfg.attn_implementation
        log.info("Loading %s (%s)", cfg.name_or_path, cfg.dtype)
        model = AutoModelForImageTextToText.from_pretrained(cfg.name_or_path, **kwargs)
        processor = load_processor(cfg.name_or_path, image_only=bool(cfg.image_only),
                                   image_min_pixels=cfg.get("image_min_pixels"),
                                   image_max_pixels=cfg.get("image_max_pixels"),
                                   local_files_only=local_only)
    elif cfg.source == "tiny_pretrained":
        from vldac_lightning.models.pretrained_tiny import ensure_pretrained

        path = str(ensure_pretrained(cfg))  # model.name_or_path, or the cache (built on first use)
        log.info("Loading the pretrained tiny model from %s", path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=_dtype(cfg.dtype), local_files_only=True)
        processor = load_processor(path, image_only=True, image_min_pixels=None, image_max_pixels=None,
                                   local_files_only=True)
    else:
        raise ValueError(f"model.source={cfg.source!r} is not known; choose 'tiny', 'tiny_pretrained' or 'pretrained'")
    model.generation_config = neutral_generation_config(model, processor)
    if cfg.source == "tiny" and cfg.dtype != "float32":
        model = model.to(_dtype(cfg.dtype))
    return model, processor


def apply_lora(model: PreTrainedModel, lora_cfg: Any, gradient_checkpointing: bool = False) -> PeftModel:
    """Wrap the backbone with LoRA adapters; only adapter weights are trainable."""
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(
        r=int(lora_cfg.r),
        lora_alpha=int(lora_cfg.alpha),
        lora_dropout=float(lora_cfg.dropout),
        target_modules=lora_cfg.target_modules if isinstance(lora_cfg.target_modules, str) else list(lora_cfg.target_modules),
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    n_train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    if n_train == 0:
        raise ValueError(f"model.lora.target_modules={lora_cfg.target_modules!r} matched no module of the backbone")
    return peft_model
