"""Two training processes (Lightning DDP, gloo on CPU) compute what one process would on the union.

One 2-rank ``debug=smoke`` run through ``ddp_probe.py``, which records, per rank, the pool's seeds,
every advantage standardisation and the weights after every optimizer step. Then:
- the weights are bit-identical on both ranks after each update (and do change);
- the ranks step distinct envs whose seeds together are the single-process run's;
- the standardised advantages use the mean/std of both ranks' rollouts: equal to one process's
  ``standardize`` on the concatenated rollout, and not to each rank's own;
- resuming from its first checkpoint on 2 ranks ends at the same weights as the uninterrupted run;
- resuming it on 1 process is refused with a clear message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from vldac_lightning.algo.advantages import standardize
from vldac_lightning.envs.pool import train_seeds

pytestmark = pytest.mark.slow

PROBE = Path(__file__).with_name("ddp_probe.py")
# 3 iterations of 8 env steps (4 envs, 2 per rank), 2 optimizer steps each, a checkpoint after each.
ARGS = ["debug=smoke", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "env.num_envs=4",
        "algo.total_env_steps=24", "env.max_episode_steps=3", "callbacks.evaluation.num_episodes=2",
        "callbacks.evaluation.every_n_iterations=3", "logger=csv", "torch_threads=1"]
STEPS = 6


def _run(tmp: Path, name: str, *extra: str, probe: Path | None = None) -> subprocess.CompletedProcess:
    entry = [str(PROBE)] if probe is not None else ["-m", "vldac_lightning.train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           **({"VLDAC_PROBE_DIR": str(probe)} if probe is not None else {})}
    command = [sys.executable, *entry, *ARGS, f"paths.log_dir={tmp / 'logs'}",
               f"hydra.run.dir={tmp / 'logs' / 'train' / 'runs' / name}", *extra]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _ckpt(tmp: Path, name: str, file: str) -> Path:
    return tmp / "logs" / "train" / "runs" / name / "checkpoints" / file


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    probe = tmp / "probe"
    done = _run(tmp, "ref", "logger=mlflow", probe=probe)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    (tmp / "ref.out").write_text(done.stdout + done.stderr)
    return tmp, probe


def test_rank0_logs_one_mlflow_run_with_global_env_steps(ddp_run: tuple[Path, Path]) -> None:
    import mlflow

    tmp, _ = ddp_run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'logs' / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vldac_lightning").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "rollout/iteration")
    # Both ranks' 4 envs x 2 steps per iteration: the env-step x-axis is global.
    assert [m.step for m in history] == [8, 16, 24]
    assert "eval/success_rate" in runs[0].data.metrics


def test_every_rank_keeps_our_stop_handler_and_returns_rank0s_metrics(ddp_run: tuple[Path, Path]) -> None:
    """Lightning's SIGTERM handler broadcasts inside the handler, which deadlocked a 2-rank stop: ours
    (flag only; ranks stop together at the next iteration) must be the one installed on each rank. And
    rank 1, which does not evaluate, must still return the sweep metric (no 'not among' error)."""
    tmp, probe = ddp_run
    for r in (0, 1):
        assert "handle_signals" in (probe / f"rank{r}_sigterm.txt").read_text()
    assert "is not among this run's final metrics" not in (tmp / "ref.out").read_text()


def test_weights_identical_on_every_rank_after_each_update(ddp_run: tuple[Path, Path]) -> None:
    _, probe = ddp_run
    for n in range(1, STEPS + 1):
        r0 = torch.load(probe / f"rank0_opt{n}.pt")
        r1 = torch.load(probe / f"rank1_opt{n}.pt")
        assert set(r0) == set(r1) and r0
        for name in r0:
            assert torch.equal(r0[name], r1[name]), f"{name} differs between ranks after update {n}"
    assert not (probe / f"rank0_opt{STEPS + 1}.pt").exists()
    first, last = torch.load(probe / "rank0_opt1.pt"), torch.load(probe / f"rank0_opt{STEPS}.pt")
    assert any(not torch.equal(first[n], last[n]) for n in first), "the updates changed nothing"


def test_ranks_step_distinct_envs_whose_seeds_are_the_single_process_ones(ddp_run: tuple[Path, Path]) -> None:
    _, probe = ddp_run
    seeds = [json.loads((probe / f"rank{r}_pool.json").read_text()) for r in (0, 1)]
    assert len(seeds[0]) == len(seeds[1]) == 2
    assert not set(seeds[0]) & set(seeds[1])
    assert seeds[0] + seeds[1] == train_seeds(0, 4)


def test_advantages_standardised_with_the_global_mean_and_std(ddp_run: tuple[Path, Path]) -> None:
    _, probe = ddp_run
    calls = sorted(probe.glob("rank0_std*.pt"))
    assert len(calls) == 3  # one per iteration
    local_differs = False
    for i in range(1, len(calls) + 1):
        parts = [torch.load(probe / f"rank{r}_std{i}.pt") for r in (0, 1)]
        x = torch.cat([p["x"] for p in parts], dim=1)  # [T, N]: the envs of rank 0, then rank 1
        mask = torch.cat([p["mask"] for p in parts], dim=1) if parts[0]["mask"] is not None else None
        got = torch.cat([p["out"] for p in parts], dim=1)
        torch.testing.assert_close(got, standardize(x, mask), atol=1e-6, rtol=1e-5)
        own = standardize(parts[0]["x"], parts[0]["mask"])
        local_differs |= not torch.allclose(own, parts[0]["out"], atol=1e-4)
    assert local_differs, "each rank's own statistics gave the same numbers: the test cannot tell them apart"


def test_checkpoint_resumes_exactly_on_two_ranks_and_refuses_one(ddp_run: tuple[Path, Path]) -> None:
    tmp, _ = ddp_run
    final = torch.load(_ckpt(tmp, "ref", "last.ckpt"), weights_only=True)
    assert final["RolloutDataModule"]["world_size"] == 2 and len(final["RolloutDataModule"]["ranks"]) == 2
    first = _ckpt(tmp, "ref", "step2.ckpt")
    resumed = _run(tmp, "resumed", f"ckpt_path={first}")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    got = torch.load(_ckpt(tmp, "resumed", "last.ckpt"), weights_only=True)["state_dict"]
    assert set(got) == set(final["state_dict"])
    for name, value in final["state_dict"].items():
        assert torch.equal(got[name], value), f"{name} differs from the uninterrupted 2-rank run"

    one = subprocess.run([sys.executable, "-m", "vldac_lightning.train", *ARGS[:1], *ARGS[4:],
                          f"paths.log_dir={tmp / 'logs'}", f"ckpt_path={first}"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 2, one.stdout[-2000:] + one.stderr[-3000:]
    assert "written by 2 training process(es)" in one.stdout + one.stderr


def test_sigterm_to_rank0_stops_both_ranks_and_ckpt_path_last_resumes_exactly(
        ddp_run: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGTERM lands on rank 0 in iteration 2's update; both ranks stop together at iteration 3's
    start (exit 143, last.ckpt); ``ckpt_path=last`` then ends at the uninterrupted run's weights."""
    ref_dir, _ = ddp_run
    hook = Path(__file__).with_name("signal_hook.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "VLDAC_TEST_SIGNAL": "TERM",
           "VLDAC_TEST_SIGNAL_AT": "optimizer_step:3"}
    stopped = subprocess.run([sys.executable, str(hook), *ARGS, f"paths.log_dir={tmp_path / 'logs'}",
                              f"hydra.run.dir={tmp_path / 'logs' / 'train' / 'runs' / 'stopped'}"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert stopped.returncode == 143, stopped.stdout[-3000:] + stopped.stderr[-5000:]
    assert "Stopped by SIGTERM at optimizer step 4." in stopped.stdout
    assert stopped.stdout.count("Resume with:") == 1  # rank 0 reports, once
    last = _ckpt(tmp_path, "stopped", "last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 4

    resumed = _run(tmp_path, "resumed", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    got = torch.load(_ckpt(tmp_path, "resumed", "last.ckpt"), weights_only=True)["state_dict"]
    expected = torch.load(_ckpt(ref_dir, "ref", "last.ckpt"), weights_only=True)["state_dict"]
    for name, value in expected.items():
        assert torch.equal(got[name], value), f"{name} differs from the uninterrupted 2-rank run"


def test_group_method_on_two_ranks_keeps_weights_identical(tmp_path: Path) -> None:
    """GRPO's whole-episode task-group rollouts under DDP: each rank collects whole rounds of its own
    groups from half the budget; both ranks take every update with identical weights."""
    probe = tmp_path / "probe"
    done = _run(tmp_path, "grpo", "algo=grpo", "algo.rollout_steps=16", "algo.total_env_steps=32", probe=probe)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    seeds = [json.loads((probe / f"rank{r}_pool.json").read_text()) for r in (0, 1)]
    assert seeds[0][0] == seeds[0][1] and seeds[1][0] == seeds[1][1] and seeds[0][0] != seeds[1][0]  # one group each
    steps = sorted(int(p.stem.split("opt")[1]) for p in probe.glob("rank0_opt*.pt"))
    assert steps == list(range(1, 2 * 4 + 1))  # 2 iterations x 2 epochs x 4 minibatches / 2 accumulated
    for n in steps:
        r0, r1 = torch.load(probe / f"rank0_opt{n}.pt"), torch.load(probe / f"rank1_opt{n}.pt")
        assert all(torch.equal(r0[k], r1[k]) for k in r0), f"ranks differ after update {n}"
