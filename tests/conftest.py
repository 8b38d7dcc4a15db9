"""Shared fixtures: the tiny model config, a fresh-policy builder, real env observations, and the
real Hydra config composed with every output (logs, checkpoints, MLflow) redirected to tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# The CI/dev machines have 2 cores and often a training job beside the tests. With two OpenMP
# threads competing for busy cores, one forward of the tiny model takes ~1.6 s instead of ~20 ms
# (measured); a single thread is both faster and deterministic.
torch.set_num_threads(1)


# ------------------------------------------------------------------------------------- model
@pytest.fixture(scope="session")
def tiny_model_cfg() -> DictConfig:
    """The ``model`` block of conf/model/tiny.yaml (that file is ``@package _global_``)."""
    cfg = OmegaConf.load(CONF_DIR / "model" / "tiny.yaml").model
    OmegaConf.set_readonly(cfg, True)  # tests copy it before changing anything
    return cfg


@pytest.fixture
def make_policy(tiny_model_cfg: DictConfig) -> Callable[..., Any]:
    """Build a fresh tiny backbone + LoRA + VLMPolicy (deterministic: the tiny build is seeded)."""
    from vldac_lightning.models.loading import apply_lora, load_backbone
    from vldac_lightning.models.policy import VLMPolicy
    from vldac_lightning.models.sampling import SamplingConfig

    def build(*, response_mode: str = "action_only", temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
              max_new_tokens: int = 8, kl_reference: str = "base", value_seed: int = 0,
              action_names: tuple[str, ...] | None = ("-", "+")) -> VLMPolicy:
        cfg = OmegaConf.to_container(tiny_model_cfg, resolve=True)
        cfg = OmegaConf.create(cfg)
        backbone, processor = load_backbone(cfg)
        peft_model = apply_lora(backbone, cfg.lora, gradient_checkpointing=False)
        torch.manual_seed(value_seed)  # the value head is initialised from the global RNG
        policy = VLMPolicy(
            peft_model, processor, value_hidden_sizes=list(cfg.value_head.hidden_sizes),
            sampling=SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                                    max_new_tokens=max_new_tokens),
            response_mode=response_mode, kl_reference=kl_reference,
        )
        if action_names is not None:
            policy.set_action_names(list(action_names))
        return policy.eval()

    return build


@pytest.fixture(scope="session")
def numberline_obs() -> list[dict[str, Any]]:
    """Three real NumberLine observations ({"images": uint8 [n,H,W,3], "text": str})."""
    from vldac_lightning.envs.registry import make_language_env

    env = make_language_env("gym_cards/NumberLine-v0", prompt_version="action_only", response_mode="action_only")
    try:
        out = []
        for seed in (0, 1, 2):
            obs, _ = env.reset(seed=seed)
            out.append({"images": obs["images"][: obs["num_images"]], "text": obs["text"]})
        assert tuple(env.action_names) == ("-", "+")
    finally:
        env.close()
    return out


# ------------------------------------------------------------------------------------- Hydra
@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """MLflow goes to a sqlite file under tmp_path (conf/logger/mlflow.yaml reads this env var)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def compose_config(overrides: list[str], *, log_dir: Path, output_dir: Path,
                   config_name: str = "train.yaml") -> DictConfig:
    """Compose ``conf/<config_name>`` as a ``@hydra.main`` task would see it, writing only under the given dirs.

    ``hydra.runtime.output_dir`` is set and HydraConfig is registered, so ``${hydra:runtime.output_dir}``
    (paths.output_dir, checkpoints) resolves; the ``hydra`` node is then removed as in a real run.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=[f"paths.log_dir={log_dir}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def reset_hydra() -> None:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None  # do not leak one test's output_dir into the next


@pytest.fixture
def compose_train_cfg(tmp_path: Path, mlflow_uri: str) -> Iterator[Callable[..., DictConfig]]:
    """``compose_train_cfg(overrides, config_name="train.yaml")``: the real config, outputs under tmp_path
    (paths.log_dir = tmp_path/logs, hydra.runtime.output_dir = tmp_path/out, MLflow = tmp_path/mlflow.db)."""

    def compose_cfg(overrides: list[str] | None = None, config_name: str = "train.yaml") -> DictConfig:
        return compose_config(list(overrides or []), log_dir=tmp_path / "logs", output_dir=tmp_path / "out",
                              config_name=config_name)

    yield compose_cfg
    reset_hydra()
