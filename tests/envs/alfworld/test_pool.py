"""A pool of ALFWorld workers (one TextWorld engine per subprocess) steps and closes cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vldac_lightning.envs.factory import LanguageEnvThunk
from vldac_lightning.envs.pool import EnvPool, eval_seeds, success_by_task_type, train_seeds


def test_four_async_workers_step_and_close(cache_dir: Path) -> None:
    spec = {
        "id": "alfworld/AlfWorld-v0",
        "env_kwargs": {"source": "generated", "cache_dir": str(cache_dir), "split_sizes": {"train": 8},
                       "image_size": 64},
        "image_history": 2, "max_episode_steps": 3, "parse_failure": "penalty", "parse_failure_penalty": -1.0,
    }
    pool = EnvPool([LanguageEnvThunk(spec, "json")] * 4, mode="async", seeds=train_seeds(0, 4))
    try:
        assert pool.action_names == tuple(str(i) for i in range(1, 51))
        obs = pool.reset()
        assert len(obs) == 4 and all(o["images"].shape == (1, 64, 64, 3) for o in obs)
        assert len({o["text"] for o in obs}) == 4  # four different games
        look = json.dumps({"thoughts": "", "action": "look"})
        episodes = []
        for _ in range(3):
            step = pool.step([look, "gibberish", look, "inventory"])
            assert list(step.rewards[[1]]) == [-1.0]  # unparseable
            assert step.rewards[0] >= 0.0 and step.rewards[2] >= 0.0
            assert [i["action_valid"] for i in step.infos] == [True, False, True, False]  # bare "inventory": no JSON
            episodes += step.episodes
        assert step.done.all() and step.truncated.all()  # horizon 3
        assert len(episodes) == 4 and all(e.task_type for e in episodes)
        rates = success_by_task_type(episodes, "rollout")
        assert rates and all(k.startswith("rollout/success_rate/") and v == 0.0 for k, v in rates.items())
        assert all(o["images"].shape[0] == 1 for o in step.obs)  # auto-reset: a new episode's first frame
        pool.reset(eval_seeds(0, 4))
        assert all(i["split"] == "valid_unseen" for i in pool.step([look] * 4).infos)
    finally:
        pool.close()
    processes = [p for worker in pool._workers for p in worker.vec.processes]
    assert len(processes) == 4 and not any(p.is_alive() for p in processes)
    assert all(p.exitcode == 0 for p in processes)
    pool.close()  # idempotent
    assert np.all([p.exitcode == 0 for p in processes])
