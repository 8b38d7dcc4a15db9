"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s demo``, ``nox -s bench``.

Each session installs the pinned CPU torch first (an unpinned torch pulls multi-GB CUDA builds).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
TORCH = "torch==2.13.0"


def _install(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[dev,miniworld,alfworld,webshop,sweep,ray]")  # the same extras scripts/setup.sh installs


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (what CI runs through scripts/test.sh)."""
    _install(session)
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint."""
    session.install("ruff>=0.6,<1")
    session.run("ruff", "check", "vldac_lightning", "tests", "experiments", "noxfile.py")


@nox.session
def demo(session: nox.Session) -> None:
    """The default training run (gym-cards NumberLine, tiny VLM, CPU)."""
    _install(session)
    session.run("python", "-m", "vldac_lightning.train", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks under experiments/ (long; not part of the tests): env throughput, pool modes (sync /
    async / Ray), rollout throughput, 1 vs 2 DDP ranks (≈ 15 min on 2 cores). Arguments go to
    bench_rollout.py (e.g. ``-- model=tiny --reps 3``)."""
    _install(session)
    session.run("python", "experiments/bench_envs.py")
    session.run("python", "experiments/bench_pool_modes.py")
    session.run("python", "experiments/bench_rollout.py", *session.posargs, env={"OMP_NUM_THREADS": "1"})
    session.run("python", "experiments/bench_ddp.py", env={"OMP_NUM_THREADS": "1"})
