"""Env ids -> language envs. Add a simulator by adding an :class:`EnvEntry` to ``ENV_REGISTRY``.

Native factories import their simulator lazily, so importing this module stays cheap (no torch, no
Pillow rendering, no OpenGL) and ids whose simulator is not installed fail only when used.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from .language import LanguageEnv

__all__ = [
    "ENV_IDS",
    "ENV_REGISTRY",
    "EnvEntry",
    "make_language_env",
    "make_native_env",
    "missing_requirement",
    "register_env",
]


@dataclass(frozen=True)
class EnvEntry:
    """How to build one env id: its native factory and its prompt game key.

    Envs whose action set is not a fixed ``Discrete`` space (ALFWorld: admissible commands change
    every step) give a ``language_factory`` instead; it is called with ``**env_kwargs`` plus the
    LanguageEnv keyword arguments and returns an env speaking the same protocol.
    """

    native_factory: Callable[..., gym.Env] | None  # called with env_kwargs
    game: str  # key into envs/prompts/*.yaml
    defaults: Mapping[str, Any] | None = None  # LanguageEnv kwargs this env family defaults to
    language_factory: Callable[..., gym.Env] | None = None
    requires: tuple[str, ...] = ()  # importable modules the simulator needs (checked before use)
    extra: str | None = None  # the pip extra that installs them: vldac_lightning[<extra>]


def missing_requirement(env_id: str) -> str | None:
    """An install hint if ``env_id``'s simulator package is absent, else None (import-free check)."""
    entry = _entry(env_id)
    missing = [m for m in entry.requires if importlib.util.find_spec(m.split(".")[0]) is None]
    if not missing:
        return None
    how = f"pip install 'vldac_lightning[{entry.extra}]'" if entry.extra else f"pip install {' '.join(missing)}"
    return (f"env {env_id!r} needs the Python package(s) {missing}, which are not installed: run `{how}` "
            "(or `bash scripts/setup.sh`, which installs every simulator the project supports)")


def _gym_make(env_id: str, module: str) -> Callable[..., gym.Env]:
    """Factory that imports ``module`` (which registers ``env_id``) and calls ``gym.make``."""

    def factory(**env_kwargs: Any) -> gym.Env:
        importlib.import_module(module)
        # The passive checker only warns about things LanguageEnv validates itself.
        return gym.make(env_id, disable_env_checker=True, **env_kwargs)

    factory.__qualname__ = f"make[{env_id}]"
    return factory


def _alfworld(**kwargs: Any) -> gym.Env:
    from .alfworld.env import AlfworldEnv  # lazy: TextWorld/ALFWorld load only when used

    return AlfworldEnv(**kwargs)


def _webshop(**kwargs: Any) -> gym.Env:
    from .webshop.env import WebShopEnv  # lazy: Flask, Playwright and the catalog load only when used

    return WebShopEnv(**kwargs)


_GYM_CARDS = "vldac_lightning.envs.gym_cards"

ENV_REGISTRY: dict[str, EnvEntry] = {
    "gym_cards/NumberLine-v0": EnvEntry(_gym_make("gym_cards/NumberLine-v0", _GYM_CARDS), "numberline"),
    "gym_cards/EZPoints-v0": EnvEntry(_gym_make("gym_cards/EZPoints-v0", _GYM_CARDS), "ezpoints"),
    "gym_cards/Points24-v0": EnvEntry(_gym_make("gym_cards/Points24-v0", _GYM_CARDS), "points24"),
    "gym_cards/Blackjack-v0": EnvEntry(_gym_make("gym_cards/Blackjack-v0", _GYM_CARDS), "blackjack"),
    "alfworld/AlfWorld-v0": EnvEntry(None, "alfworld", language_factory=_alfworld,
                                     requires=("alfworld", "textworld"), extra="alfworld"),
    "webshop/WebShop-v0": EnvEntry(None, "webshop", language_factory=_webshop,
                                   requires=("playwright", "flask", "rapidfuzz"), extra="webshop"),
}

# MiniWorld (docs/environments.md#miniworld): an episode that ends without reward gets -1 on its last step.
_MINIWORLD = "vldac_lightning.envs.miniworld"
for _task in ("OneRoom", "Hallway", "FourRooms", "WallGap"):
    _id = f"miniworld/{_task}-v0"
    ENV_REGISTRY[_id] = EnvEntry(_gym_make(_id, _MINIWORLD), "miniworld", {"end_penalty": -1.0},
                                 requires=("miniworld", "pyglet"), extra="miniworld")
ENV_IDS: tuple[str, ...] = tuple(ENV_REGISTRY)


def register_env(env_id: str, entry: EnvEntry, *, overwrite: bool = False) -> None:
    """Add an id (MiniWorld, ALFWorld, test fakes). ``ENV_IDS`` is refreshed."""
    global ENV_IDS
    if env_id in ENV_REGISTRY and not overwrite:
        raise ValueError(f"env id {env_id!r} is already registered")
    ENV_REGISTRY[env_id] = entry
    ENV_IDS = tuple(ENV_REGISTRY)


def _entry(env_id: str) -> EnvEntry:
    if env_id not in ENV_REGISTRY:
        raise ValueError(f"unknown env id {env_id!r}; valid ids: {list(ENV_REGISTRY)}")
    return ENV_REGISTRY[env_id]


def _native(env_id: str, env_kwargs: Mapping[str, Any] | None) -> gym.Env:
    entry = _entry(env_id)
    if entry.native_factory is None:
        raise ValueError(f"env id {env_id!r} has no native discrete-action env; use make_language_env")
    hint = missing_requirement(env_id)
    if hint is not None:
        raise ModuleNotFoundError(hint)
    return entry.native_factory(**dict(env_kwargs or {}))


def make_native_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> gym.Env:
    """The native (image, discrete-action) env of ``env_id``."""
    return _native(env_id, env_kwargs)


def make_language_env(
    env_id: str | Mapping[str, Any], *, env_kwargs: Mapping[str, Any] | None = None, **kwargs: Any
) -> LanguageEnv | gym.Env:
    """Build ``LanguageEnv(native env of env_id, game=<its game>, **kwargs)``.

    ``env_kwargs`` go to the native env (e.g. ``max_position``, ``reward_profile``); the other
    keyword arguments are ``LanguageEnv``'s (``prompt_version``, ``image_history``, ...). A config
    mapping (dict or OmegaConf) with an ``env_id`` key may be passed instead of the id; explicit
    keyword arguments override its entries.
    """
    if isinstance(env_id, Mapping):
        spec = dict(env_id)
        if "env_id" not in spec:
            raise ValueError(f"env spec needs an 'env_id' key; valid ids: {list(ENV_REGISTRY)}")
        env_kwargs = env_kwargs if env_kwargs is not None else spec.pop("env_kwargs", None)
        spec.pop("env_kwargs", None)
        env_id = spec.pop("env_id")
        kwargs = {**spec, **kwargs}
    entry = _entry(env_id)
    if "game" in kwargs:
        raise TypeError("'game' is derived from the env id; do not pass it")
    options = {**dict(entry.defaults or {}), **kwargs}
    if entry.language_factory is not None:
        hint = missing_requirement(env_id)
        if hint is not None:
            raise ModuleNotFoundError(hint)
        return entry.language_factory(**dict(env_kwargs or {}), **options)
    native = _native(env_id, env_kwargs)
    try:
        return LanguageEnv(native, game=entry.game, **options)
    except Exception:
        native.close()
        raise
