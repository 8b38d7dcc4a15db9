"""``python -m vldac_lightning.pretrain`` on a toy size, and ``model=tiny_pretrained`` loading its result."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from vldac_lightning.data.pretrain_data import PretrainStream

P = "model.tiny_pretrained"
TOY = [
    "env=gym_cards/numberline", "logger=none",
    f"{P}.architecture.hidden_size=32", f"{P}.architecture.intermediate_size=64", f"{P}.architecture.num_layers=1",
    f"{P}.architecture.num_heads=2", f"{P}.architecture.num_kv_heads=1", f"{P}.architecture.vision_depth=1",
    f"{P}.architecture.vision_embed_dim=32", f"{P}.architecture.image_size=56", f"{P}.architecture.vocab_size=384",
    f"{P}.train.steps=12", f"{P}.train.batch_size=4", f"{P}.train.checkpoint_every=6", f"{P}.train.warmup_steps=2",
    f"{P}.train.lr=1e-2", f"{P}.eval.num_per_env=2",
]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _toy_pretrain(compose: Callable[..., DictConfig], out: Path, *extra: str) -> Path:
    from vldac_lightning.pretrain import pretrain

    cfg = compose([*TOY, f"output_path={out}", *extra], config_name="pretrain.yaml")
    _, path = pretrain(cfg)
    return path


def test_toy_pretraining_lowers_the_answer_loss_and_model_tiny_pretrained_loads_it(
        compose_train_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    from vldac_lightning.models.loading import load_backbone
    from vldac_lightning.models.pretrain_module import batch_loss
    from vldac_lightning.models.pretrained_tiny import build_architecture

    out = _toy_pretrain(compose_train_cfg, tmp_path / "toy")
    report = json.loads((out / "pretrain_report.json").read_text())
    assert report["steps"] == 12 and report["settings"]["data"]["envs"] == ["gym_cards/NumberLine-v0"]
    assert {"NumberLine-v0/describe_exact", "NumberLine-v0/json_parse_rate"} <= set(report["metrics"])

    # The RL config loads the folder (model.name_or_path) and the weights are the trained ones.
    cfg = compose_train_cfg(["model=tiny_pretrained", f"model.name_or_path={out}"])
    loaded, processor = load_backbone(cfg.model)
    settings = OmegaConf.to_container(cfg.model.tiny_pretrained, resolve=True)
    settings["architecture"].update(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                                    vision_depth=1, vision_embed_dim=32, image_size=56, vocab_size=384)
    initial, _ = build_architecture(settings["architecture"], ["gym_cards/NumberLine-v0"], 0)
    stream = PretrainStream(["gym_cards/NumberLine-v0"], seed=0, stream=1)
    examples = [stream.example(i, "json") for i in range(4)] + [stream.example(i, "describe") for i in range(4)]
    stream.close()
    # Twelve toy steps already teach the answer format: the held-out loss falls well below the random init's.
    assert batch_loss(loaded, processor, examples) < 0.8 * batch_loss(initial, processor, examples)
    saved = _weights(out)
    for name, tensor in loaded.state_dict().items():
        if name in saved:
            torch.testing.assert_close(tensor, saved[name], atol=0, rtol=0)


def test_a_resumed_pretraining_ends_with_the_same_weights(compose_train_cfg: Callable[..., DictConfig],
                                                          tmp_path: Path) -> None:
    full = _toy_pretrain(compose_train_cfg, tmp_path / "full")
    halfway = full.with_name("full-checkpoints") / "step6.ckpt"
    assert halfway.is_file()
    resumed = _toy_pretrain(compose_train_cfg, tmp_path / "resumed", f"ckpt_path={halfway}")
    assert json.loads((resumed / "pretrain_report.json").read_text())["resumed_from"] == str(halfway)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0, msg=name)


def test_tiny_pretrained_finds_its_cache_and_names_a_bad_path(compose_train_cfg: Callable[..., DictConfig],
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vldac_lightning.models import pretrained_tiny
    from vldac_lightning.models.pretrained_tiny import cache_path, ensure_pretrained, settings_overrides

    cfg = compose_train_cfg(["model=tiny_pretrained"]).model
    path = cache_path(cfg.tiny_pretrained)
    assert path.parent == (tmp_path / "logs" / "pretrained").resolve()
    other = OmegaConf.merge(cfg.tiny_pretrained, {"seed": 1})
    assert cache_path(other) != path  # another setting, another model
    # The overrides reproduce the settings (what the first-use build passes to vldac_lightning.pretrain).
    assert f"{P}.seed=0" in settings_overrides(cfg.tiny_pretrained)
    assert any(o.startswith(f"{P}.data.envs=[") for o in settings_overrides(cfg.tiny_pretrained))

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached model must not be rebuilt")

    monkeypatch.setattr(pretrained_tiny.subprocess, "run", no_build)
    path.mkdir(parents=True)
    (path / "pretrain_report.json").write_text("{}")
    assert ensure_pretrained(cfg) == path

    bad = OmegaConf.merge(cfg, {"name_or_path": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="model.name_or_path=.*nowhere.*vldac_lightning.pretrain"):
        ensure_pretrained(bad)
