"""A local model folder loads with the default ``model.image_only=false`` too: where the full processor
cannot be built here (its video processor needs torchvision; a folder without a processor config makes
AutoProcessor return a bare tokenizer) the image-only assembly serves, and the log says why."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from tests.models.test_policy import batch_obs
from vldac_lightning.models import loading
from vldac_lightning.models.loading import load_backbone, save_backbone
from vldac_lightning.models.tiny import build_tiny_qwen2_vl


@pytest.mark.parametrize("cause", ["as_installed", "bare_tokenizer"])
def test_a_local_folder_loads_with_image_only_false(tiny_model_cfg: Any, numberline_obs: list, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                                    cause: str) -> None:
    model, processor = build_tiny_qwen2_vl(**dict(tiny_model_cfg.tiny))
    save_backbone(model, processor, tmp_path / "ckpt")
    if cause == "bare_tokenizer":  # what AutoProcessor gives for a folder it finds no processor config in
        monkeypatch.setattr(loading.AutoProcessor, "from_pretrained",
                            lambda path, **kw: loading.AutoTokenizer.from_pretrained(path))
    base = {"source": "pretrained", "name_or_path": str(tmp_path / "ckpt"), "dtype": "float32", "local_files_only": True}
    encodings = []
    for image_only in (True, False):
        cfg = OmegaConf.merge(tiny_model_cfg, {**base, "image_only": image_only})
        with caplog.at_level(logging.WARNING):
            _, loaded_processor = load_backbone(cfg)
        assert loaded_processor.tokenizer.padding_side == "left"
        obs = batch_obs(numberline_obs)
        texts = [loaded_processor.apply_chat_template([{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": o["text"]}]}], add_generation_prompt=True) for o in obs]
        encodings.append(loaded_processor(text=texts, images=[list(o["images"]) for o in obs], return_tensors="pt",
                                          padding=True))
    for key in encodings[0]:
        torch.testing.assert_close(encodings[1][key], encodings[0][key], atol=0, rtol=0)
    if cause == "bare_tokenizer":
        assert "has no processor config" in caplog.text
