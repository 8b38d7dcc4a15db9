"""Picklable env thunks for pools.

Lives in a light module on purpose: with the ``spawn`` start method every worker process imports
the module that defines the thunk, so it must not pull in torch or Lightning (≈10 s per worker).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vldac_lightning.envs.registry import make_language_env


def default_prompt_version(response_mode: str) -> str:
    """JSON responses use the RL4VLM prompt; constrained bare actions use the short prompt."""
    return "action_only" if response_mode == "action_only" else "rl4vlm"


class LanguageEnvThunk:
    """Builds one language env from a plain ``env`` config mapping (the Hydra ``env`` group)."""

    def __init__(self, spec: Mapping[str, Any], response_mode: str) -> None:
        self.spec = dict(spec)
        self.response_mode = response_mode

    def __call__(self):
        s = self.spec
        return make_language_env(
            s["id"],
            env_kwargs=s.get("env_kwargs") or {},
            prompt_version=s.get("prompt_version") or default_prompt_version(self.response_mode),
            image_history=int(s["image_history"]),
            max_episode_steps=int(s["max_episode_steps"]),
            parse_failure=s["parse_failure"],
            parse_failure_penalty=float(s["parse_failure_penalty"]),
            response_mode=self.response_mode,
            state_in_text=bool(s.get("state_in_text", False)),
            # Only when the config sets it: otherwise the env family's registry default applies.
            **({"end_penalty": s["end_penalty"]} if "end_penalty" in s else {}),
        )
