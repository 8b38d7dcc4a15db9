"""GiGPO: group-in-group policy optimisation, no critic (docs/algorithm.md#gigpo).

Feng et al., "Group-in-Group Policy Optimization for LLM Agent Training", 2025, arXiv:2505.10978
(verl-agent).

Episode level as GRPO: ``A^E(τ_i) = (R(τ_i) − mean) / F_norm``. Step level: *anchor states* are
identical current observations met at any step by any trajectory of the task group (``anchor``:
``current`` keys a state on the env's ``state_key`` when it gives one, else on the prompt text and
the newest frame, as the paper and verl-agent do; ``history`` keys it on every history frame, so a
state reached by different recent paths is never pooled); for each occurrence t of an anchor in
τ_i, ``R_t^i = Σ_{k≥t} γ^{k−t} r_k^i`` and
``A^S = (R_t^i − mean over the anchor group) / F_norm`` (0 for a singleton). The step's advantage
is ``A^E + ω·A^S``. ``F_norm`` is the group's std (``norm: std``) or 1 (``norm: mean``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from vldac_lightning.algo.group import GroupAlgorithm
from vldac_lightning.algo.group_advantages import (
    anchor_step_advantages,
    broadcast_to_steps,
    discounted_returns_to_go,
    episode_returns,
    group_normalized,
)
from vldac_lightning.rollout.buffer import Rollout

__all__ = ["ANCHORS", "GiGPO", "observation_key"]

NORMS = {"std": "std", "mean": "none"}
ANCHORS = ("current", "history")


def observation_key(obs: dict[str, Any], anchor: str = "current") -> str:
    """Identical states ⇔ identical keys.

    ``current``: the env's ``state_key`` if the observation carries one, else a hash of the prompt
    text and the newest frame (the current state is always the last image). ``history``: a hash of
    the prompt text and every image's bytes (the whole recent path).
    """
    if anchor not in ANCHORS:
        raise ValueError(f"algo.anchor={anchor!r}; choose one of {ANCHORS}")
    if anchor == "current" and obs.get("state_key") is not None:
        return f"state:{obs['state_key']}"
    digest = hashlib.sha256(str(obs.get("text", "")).encode())
    images = list(obs.get("images", ()))
    for image in images[-1:] if anchor == "current" else images:
        array = np.ascontiguousarray(np.asarray(image))
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class GiGPO(GroupAlgorithm):
    name = "gigpo"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.step_gamma = float(cfg["step_gamma"])
        self.step_weight = float(cfg["step_weight"])
        self.scale = NORMS[str(cfg["norm"])]
        self.eps = float(cfg["adv_eps"])
        self.anchor = str(cfg.get("anchor", "current"))
        if self.anchor not in ANCHORS:
            raise ValueError(f"algo.anchor={self.anchor!r}; choose one of {ANCHORS}")

    @classmethod
    def validate_keys(cls, cfg: Any) -> None:
        from vldac_lightning.utils.config import _choice, _number

        _number(cfg, "algo.step_gamma", lo=0, hi=1)
        _number(cfg, "algo.step_weight", lo=0)
        _choice(cfg, "algo.norm", tuple(NORMS))
        _number(cfg, "algo.adv_eps", lo=0, lo_open=True)
        _choice(cfg, "algo.anchor", ANCHORS)

    def step_advantages(self, rollout: Rollout, rewards: torch.Tensor, episode_ids: torch.Tensor,
                        group_ids: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        episodes = episode_returns(rewards, episode_ids, group_ids, valid)
        a_episode = group_normalized(episodes.returns, episodes.group_ids.tolist(), scale=self.scale, eps=self.eps)
        step_returns = discounted_returns_to_go(rewards, episode_ids, self.step_gamma)
        keys = [observation_key(record.obs, self.anchor) for record in rollout.steps]
        a_step = anchor_step_advantages(step_returns, keys, group_ids, valid, scale=self.scale, eps=self.eps)
        return broadcast_to_steps(a_episode, episodes.episode_ids, episode_ids) + self.step_weight * a_step
