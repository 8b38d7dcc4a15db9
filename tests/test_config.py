"""The Hydra configs compose for every env × model and pass validate_config; bad values are
rejected naming the key, before any model is loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from vldac_lightning.envs.registry import ENV_IDS
from vldac_lightning.utils.config import ConfigError, validate_config

CONF = Path(__file__).resolve().parents[1] / "conf"
ENVS = sorted(f"gym_cards/{p.stem}" for p in (CONF / "env" / "gym_cards").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))

Compose = Callable[..., DictConfig]


def test_the_config_groups_are_discovered() -> None:
    assert len(ENVS) == 4 and "gym_cards/numberline" in ENVS
    assert {"tiny", "qwen2_vl_2b", "qwen2_vl_7b"} <= set(MODELS)


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must not build a model; fail loudly if anything tries."""
    import vldac_lightning.models.loading as loading

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("a model was loaded during config validation")

    monkeypatch.setattr(loading, "load_backbone", boom)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("env", ENVS)
def test_every_env_model_combination_composes_and_validates(compose_train_cfg: Compose, env: str, model: str) -> None:
    cfg = compose_train_cfg([f"env={env}", f"model={model}"])
    validate_config(cfg)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.env.id in ENV_IDS
    assert cfg.algo.gamma == cfg.env.gamma and cfg.algo.rollout_steps == cfg.env.rollout_steps
    if model == "tiny":
        assert cfg.model.source == "tiny" and cfg.model.response_mode == "action_only"
    elif model == "tiny_pretrained":  # docs/pretraining.md: JSON answers with thoughts, tiny-scale knobs
        assert cfg.model.source == "tiny_pretrained" and cfg.model.response_mode == "json"
        assert cfg.model.tiny_pretrained.cache_dir.endswith("logs/pretrained")
    else:
        # Real checkpoints keep the paper's Table 6 recipe (the tiny model's overrides do not leak).
        assert cfg.model.source == "pretrained" and cfg.model.name_or_path
        assert cfg.optimizer.lr == pytest.approx(5e-5) and cfg.algo.grad_accum_steps * cfg.algo.minibatch_size == 128


@pytest.mark.parametrize("env", ENVS)
def test_evaluate_config_composes_and_validates(compose_train_cfg: Compose, env: str) -> None:
    cfg = compose_train_cfg([f"env={env}", "ckpt_path=/some/last.ckpt"], config_name="evaluate.yaml")
    validate_config(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.task_name == "evaluate" and cfg.num_episodes == 50 and cfg.do_sample is True


def test_debug_smoke_validates(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["debug=smoke"])
    validate_config(cfg)
    assert cfg.algo.rollout_steps == 8 and cfg.env.pool_mode == "sync"


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lr=-1e-4", "optimizer.lr"),
        ("algo.minibatch_size=3", "algo.minibatch_size"),  # 128 rollout steps (tiny) are not divisible by 3
        ("env.image_history=0", "env.image_history"),
        ("model.source=pretrained", "model.name_or_path"),  # tiny.yaml has name_or_path: null
        ("algo.clip_eps=0", "algo.clip_eps"),
        ("model.sampling.top_p=1.5", "model.sampling.top_p"),
        ("env.num_envs=3", "env.num_envs"),  # 128 rollout steps over 3 envs
        ("env.max_restarts=-1", "env.max_restarts"),
        ("env.step_timeout_s=0", "env.step_timeout_s"),
        ("env.image_history=two", "env.image_history"),  # a type error
        ("algo.ppo_epochs=1.5", "algo.ppo_epochs"),
    ],
)
def test_validate_config_errors_name_the_key(compose_train_cfg: Compose, override: str, key: str) -> None:
    cfg = compose_train_cfg([override])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert key in str(err.value)


def test_unknown_env_id_lists_the_valid_ids(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["env.id=gym_cards/NoSuchEnv-v0"])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    msg = str(err.value)
    assert "env.id" in msg and "gym_cards/NoSuchEnv-v0" in msg
    assert all(env_id in msg for env_id in ENV_IDS)


def test_validate_config_accepts_the_boundary_values(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["algo.minibatch_size=128", "algo.grad_accum_steps=2", "env.image_history=1",
                             "algo.kl_beta=0", "model.sampling.top_p=1.0"])
    validate_config(cfg)


@pytest.mark.parametrize("override, group", [("model=foo", "model"), ("debug=foo", "debug")])
def test_unknown_group_choice_lists_the_options(compose_train_cfg: Compose, override: str, group: str) -> None:
    with pytest.raises(HydraException) as err:
        compose_train_cfg([override])
    msg = str(err.value)
    assert f"Available options in '{group}'" in msg
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert options and all(o in msg for o in options)


@pytest.mark.parametrize("override", ["env=foo", "env=gym_cards/foo", "env=gym_cards/numberline,gym_cards/fo"])
def test_unknown_env_choice_lists_the_options(override: str) -> None:
    # Hydra lists no options for nested groups (env=gym_cards/...); the CLI checks first.
    from vldac_lightning.utils.choices import check_group_overrides

    msg = check_group_overrides([override, "algo.kl_beta=0.1"])
    assert msg is not None and "Valid choices for 'env'" in msg
    assert all(f"gym_cards/{g}" in msg for g in ("numberline", "ezpoints", "points24", "blackjack"))


def test_known_choices_and_value_overrides_pass_the_group_check() -> None:
    from vldac_lightning.utils.choices import check_group_overrides

    assert check_group_overrides(["env=gym_cards/ezpoints", "model=tiny", "algo.kl_beta=0.1", "-m",
                                  "debug=smoke", "experiment=null"]) is None


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_config_composes_and_validates(compose_train_cfg: Compose, name: str) -> None:
    cfg = compose_train_cfg([f"experiment={name}"])
    validate_config(cfg)
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.run_name == name


def test_paper_experiment_keeps_table_6(compose_train_cfg: Compose) -> None:
    cfg = compose_train_cfg(["experiment=paper_ezpoints_qwen2vl_7b"])
    assert cfg.env.id == "gym_cards/EZPoints-v0" and cfg.model.source == "pretrained"
    assert cfg.model.name_or_path == "Qwen/Qwen2-VL-7B-Instruct" and cfg.model.dtype == "bfloat16"
    assert (cfg.algo.gamma, cfg.algo.gae_lambda, cfg.algo.kl_beta, cfg.algo.value_coef) == (1.0, 1.0, 0.05, 0.15)
    assert (cfg.algo.total_env_steps, cfg.algo.grad_accum_steps, cfg.algo.ppo_epochs) == (51200, 128, 2)
    assert (cfg.optimizer.lr, cfg.optimizer.min_lr) == (5e-05, 1e-07)


def test_kl_sweep_sets_the_basic_sweeper_params() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vldac_lightning.train", "hparams_search=kl_beta", "--cfg", "hydra",
                          "-p", "hydra.sweeper"], capture_output=True, text=True, timeout=120, cwd=CONF.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "algo.kl_beta: 0.05,0.15" in out.stdout


def test_a_missing_simulator_package_names_the_extra_to_install(compose_train_cfg: Compose) -> None:
    """Checked by validate_config (before any model loads) and again when the env is built."""
    from vldac_lightning.envs import registry

    entry = registry.EnvEntry(lambda **_: None, "numberline", requires=("surely_not_a_module_xyz",), extra="fakesim")
    registry.register_env("fakesim/Room-v0", entry)
    try:
        cfg = compose_train_cfg(["env.id=fakesim/Room-v0"])
        with pytest.raises(ConfigError, match=r"surely_not_a_module_xyz.*pip install 'vldac_lightning\[fakesim\]'"):
            validate_config(cfg)
        with pytest.raises(ModuleNotFoundError, match=r"vldac_lightning\[fakesim\]"):
            registry.make_language_env("fakesim/Room-v0")
    finally:
        del registry.ENV_REGISTRY["fakesim/Room-v0"]
        registry.ENV_IDS = tuple(registry.ENV_REGISTRY)
    assert registry.missing_requirement("gym_cards/NumberLine-v0") is None
