"""Task groups: K copies per seed start from identical observations, groups differ, finished copies
wait for their group, and the episode collector yields whole, aligned rounds (also after a crash)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.envs import faulty
from vldac_lightning.envs.pool import EnvPool, train_seeds
from vldac_lightning.rollout.episodes import EpisodeCollector


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["text"] == b["text"] and np.array_equal(np.asarray(a["images"]), np.asarray(b["images"]))


def grouped(n_groups: int, k: int, base: int = 0) -> list[int]:
    return [s for s in train_seeds(base, n_groups) for _ in range(k)]


def test_a_group_starts_from_one_observation_and_groups_differ() -> None:
    seeds = grouped(3, 2)  # [0, 0, 1, 1, 2, 2]
    with EnvPool([faulty.make_faulty] * 6, mode="sync", seeds=seeds, group_size=2) as pool:
        obs = pool.reset()
        for g in range(3):
            assert same(obs[2 * g], obs[2 * g + 1]), f"group {g}'s copies start differently"
        # NumberLine has 30 (target, current) pairs; these three seeds happen to give three different deals.
        assert not same(obs[0], obs[2]) and not same(obs[2], obs[4]) and not same(obs[0], obs[4])


@pytest.mark.parametrize("seeds,group_size", [([1, 1, 2, 3], 2), ([1, 2, 1, 2], 2), ([1, 1, 1, 1], 2), ([5, 5], 1)])
def test_seeds_must_be_shared_within_and_distinct_across_groups(seeds: list[int], group_size: int) -> None:
    with pytest.raises(ValueError, match="seeds must be distinct"):
        EnvPool([faulty.make_faulty] * len(seeds), mode="sync", seeds=seeds, group_size=group_size)


def test_group_size_must_divide_the_pool() -> None:
    with pytest.raises(ValueError, match="group_size=2 must be >= 1 and divide"):
        EnvPool([faulty.make_faulty] * 3, mode="sync", seeds=[1, 1, 2], group_size=2)


def test_inactive_copies_are_not_stepped() -> None:
    with EnvPool([faulty.make_faulty] * 2, mode="sync", seeds=[7, 7], group_size=2) as pool:
        start = pool.reset()
        out = pool.step(["+", faulty.RAISE], active=[True, False])  # the idle copy's text is ignored
        assert out.obs[1] is None and not out.done[1] and out.rewards[1] == 0 and not out.dropped[1]
        assert pool.state_dict()["actions"] == [["+"], []]
        # The idle copy is where it was: stepping it now with "+" gives what copy 0 got.
        assert same(start[0], start[1]) and not out.done[0]
        again = pool.step(["+", "+"], active=[False, True])
        assert same(again.obs[1], out.obs[0]) and again.obs[0] is None


class ScriptedPolicy:
    """Acts like VLMPolicy.act: fixed texts, one token per response, no model."""

    def __init__(self, texts: Any = "+") -> None:
        self.texts = texts
        self.calls = 0

    def eval(self) -> None:
        pass

    def act(self, observations: list[dict[str, Any]]) -> Any:
        from vldac_lightning.rollout.policy import ActOutput

        self.calls += 1
        B = len(observations)
        texts = [self.texts(self.calls, i) if callable(self.texts) else self.texts for i in range(B)]
        return ActOutput(texts, torch.ones(B, 1, dtype=torch.long), torch.ones(B, 1, dtype=torch.bool),
                         torch.full((B, 1), -0.5), torch.full((B, 1), -0.5), torch.zeros(B))


def episodes_of(rollout: Any) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for row, e in enumerate(rollout.flat("episode_ids").tolist()):
        out.setdefault(e, []).append(row)
    return out


def test_episode_collector_yields_whole_aligned_rounds() -> None:
    rng = np.random.default_rng(0)
    policy = ScriptedPolicy(lambda call, i: str(rng.choice(["+", "-"])))
    with EnvPool([faulty.make_faulty] * 4, mode="sync", seeds=grouped(2, 2), group_size=2) as pool:
        collector = EpisodeCollector(pool, policy, step_budget=20)
        rollout, stats = collector.collect()
        assert rollout.rewards.shape[1] == 1 and rollout.num_steps == stats.steps >= 20
        done = (rollout.terminated | rollout.truncated).flatten()
        episodes = episodes_of(rollout)
        groups = rollout.flat("group_ids")
        assert len(episodes) % 4 == 0 and len(stats.episodes) == len(episodes)  # whole rounds of 4 copies
        for e, rows in episodes.items():
            assert done[rows[-1]] and not done[rows[:-1]].any(), f"episode {e} is not whole"
            assert len({int(groups[r]) for r in rows}) == 1
        # Each group of each round has K = 2 episodes, whose first observations are identical.
        firsts: dict[int, list[int]] = {}
        for rows in episodes.values():
            firsts.setdefault(int(groups[rows[0]]), []).append(rows[0])
        assert all(len(v) == 2 for v in firsts.values())
        for a, b in firsts.values():
            assert same(rollout.steps[a].obs, rollout.steps[b].obs)
        # Between rollouts every copy waits at the start of its group's next episode, nothing to replay.
        state = pool.state_dict()
        assert state["actions"] == [[], [], [], []]
        assert len(set(state["episode_index"])) == 1
        assert same(collector.obs[0], collector.obs[1]) and same(collector.obs[2], collector.obs[3])
        # A budget the last rollout's overshoot has nearly used up still gets one whole round (4 episodes).
        rollout, stats = collector.collect(budget=1)
        assert len(episodes_of(rollout)) == 4 and len(stats.episodes) == 4 and stats.steps >= 4


def test_a_crash_drops_the_episode_and_the_group_stays_aligned() -> None:
    faulty.FlakyEnv.failed = False
    rng = np.random.default_rng(1)
    policy = ScriptedPolicy(lambda call, i: str(rng.choice(["+", "-"])))
    # Copy 0 crashes on the third step of its life; copy 1 shares its task seed.
    with EnvPool([faulty.make_flaky, faulty.make_faulty], mode="sync", seeds=[3, 3], group_size=2) as pool:
        collector = EpisodeCollector(pool, policy, step_budget=12)
        rollout, stats = collector.collect()
        assert faulty.FlakyEnv.failed and stats.dropped_episodes == 1
        valid = rollout.flat("valid")
        episodes = episodes_of(rollout)
        dropped = [e for e, rows in episodes.items() if not valid[rows].any()]
        assert len(dropped) == 1 and all(valid[rows].all() for e, rows in episodes.items() if e != dropped[0])
        assert len(stats.episodes) == len(episodes) - 1  # the dropped one never finished
        # The replaced worker began its group's next episode: both copies face the same task again.
        assert same(collector.obs[0], collector.obs[1])
        assert pool.state_dict()["episode_index"][0] == pool.state_dict()["episode_index"][1]
