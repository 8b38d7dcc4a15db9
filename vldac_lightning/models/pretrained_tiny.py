"""``model=tiny_pretrained``: the tiny Qwen2-VL after supervised pretraining on simulator data.

The random tiny model cannot read the frames or write JSON, so on CPU every algorithm reduces to
"PPO with a near-constant baseline" (docs/pretraining.md). This module builds the architecture with
a tokenizer trained on the envs' own text, and finds (or makes) its pretrained weights:

- ``model.name_or_path`` set: load that folder (written by ``python -m vldac_lightning.pretrain``);
- else: the cache folder named by a hash of ``model.tiny_pretrained`` (same settings, same folder);
  if it is missing, run the pretraining once (a subprocess of ``vldac_lightning.pretrain``,
  progress shown), then load it. Deterministic from the seeds in the config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, ProcessorMixin

log = logging.getLogger(__name__)

__all__ = ["build_architecture", "cache_path", "ensure_pretrained", "is_built", "settings_overrides", "tokenizer_corpus"]

DONE_FILE = "pretrain_report.json"  # written last: a folder without it is an unfinished build


def tokenizer_corpus(env_ids: Sequence[str], seed: int, num_examples: int = 400) -> list[str]:
    """Text the tokenizer's merges are learnt from: the envs' prompts and answers (stream 2 of the
    pretraining seeds, never used for training examples), plus the tiny model's fixed corpus."""
    from vldac_lightning.data.pretrain_data import PretrainStream
    from vldac_lightning.models.tiny import _CORPUS

    stream = PretrainStream(env_ids, seed=seed, stream=2, describe_fraction=0.0)
    try:
        lines = [line for line in _CORPUS.strip().splitlines() if line.strip()]
        for i in range(num_examples):
            example = stream[i]
            lines += [example.prompt, example.answer]
    finally:
        stream.close()
    return lines


def build_architecture(arch: Mapping[str, Any], env_ids: Sequence[str], data_seed: int
                       ) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The randomly initialised model (``arch``: models/tiny.py arguments) with the env-text tokenizer."""
    from vldac_lightning.models.loading import neutral_generation_config
    from vldac_lightning.models.tiny import build_tiny_qwen2_vl, build_tiny_tokenizer

    arch = dict(arch)
    tokenizer = build_tiny_tokenizer(int(arch["vocab_size"]), tokenizer_corpus(env_ids, data_seed))
    model, processor = build_tiny_qwen2_vl(**arch, tokenizer=tokenizer)
    model.generation_config = neutral_generation_config(model, processor)  # sampling = the scored distribution
    return model, processor


def _plain(cfg: Any) -> dict[str, Any]:
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(node, dict)
    return node


def _settings(cfg: Any) -> dict[str, Any]:
    """The settings that determine the weights (everything but where they are stored)."""
    return {k: v for k, v in _plain(cfg).items() if k != "cache_dir"}


def cache_path(cfg: Any) -> Path:
    """``<cache_dir>/tiny_pretrained-<hash of the settings>``: a change of any setting builds a new model."""
    digest = hashlib.sha256(json.dumps(_settings(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return Path(str(_plain(cfg)["cache_dir"])).expanduser().resolve() / f"tiny_pretrained-{digest}"


def settings_overrides(cfg: Any, prefix: str = "model.tiny_pretrained") -> list[str]:
    """Hydra overrides that reproduce ``cfg`` (the pretraining settings) on a command line."""
    out: list[str] = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}")
        elif isinstance(node, list):
            out.append(f"{key}=[{','.join(json.dumps(v) if isinstance(v, str) else str(v) for v in node)}]")
        elif node is None:
            out.append(f"{key}=null")
        else:
            out.append(f"{key}={json.dumps(node) if isinstance(node, str) else node}")

    walk(_settings(cfg), prefix)
    return out


def is_built(path: Path) -> bool:
    """Whether ``path`` holds a finished build (the report is written last)."""
    return (path / DONE_FILE).is_file()


def ensure_pretrained(model_cfg: Any) -> Path:
    """The folder of the pretrained weights: ``model.name_or_path`` if set, else the cache folder,
    built first (a pretraining subprocess, minutes) when it does not exist yet."""
    explicit = model_cfg.get("name_or_path")
    if explicit:
        path = Path(str(explicit)).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.name_or_path={explicit!r} holds no pretrained tiny model (no config.json); write one with "
                "`python -m vldac_lightning.pretrain output_path=...`, or set model.name_or_path=null to build "
                "and cache it on first use")
        return path
    settings = model_cfg.tiny_pretrained
    path = cache_path(settings)
    if is_built(path):
        log.info("model=tiny_pretrained: cached weights %s", path)
        return path
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:  # one build even if several jobs start at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_built(path):
            command = [sys.executable, "-m", "vldac_lightning.pretrain", f"output_path={path}",
                       *settings_overrides(settings)]
            log.warning("model=tiny_pretrained: no cached weights; pretraining them once (~15 min on 1 CPU "
                        "thread) into %s\n  %s", path, " ".join(command))
            env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
            result = subprocess.run(command, env=env)  # progress goes straight to this terminal
            if result.returncode != 0 or not is_built(path):
                raise RuntimeError(f"pretraining for model=tiny_pretrained failed (exit code {result.returncode}); "
                                   f"rerun it to see why: {' '.join(command)}")
    return path
