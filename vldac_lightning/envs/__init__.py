"""Environments speaking the text protocol (docs/environments.md#the-protocol): images + prompt in, generated text out.

Light to import (gymnasium, numpy, yaml; no torch). Simulators load when an env is made.
"""

from .language import LanguageEnv
from .parsing import ParseResult, normalize_action_text, parse_action
from .pool import EnvPool, EpisodeStats, PoolStep, eval_seeds, train_seeds
from .prompts import PromptTemplate, available_prompts, load_prompt
from .registry import ENV_IDS, ENV_REGISTRY, EnvEntry, make_language_env, make_native_env, register_env

__all__ = [
    "ENV_IDS",
    "ENV_REGISTRY",
    "EnvEntry",
    "EnvPool",
    "EpisodeStats",
    "LanguageEnv",
    "ParseResult",
    "PoolStep",
    "PromptTemplate",
    "available_prompts",
    "eval_seeds",
    "load_prompt",
    "make_language_env",
    "make_native_env",
    "normalize_action_text",
    "parse_action",
    "register_env",
    "train_seeds",
]
