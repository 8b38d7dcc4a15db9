"""One run per folder, one writer per MLflow run: refuse what would mix two runs' files.

A run folder that already holds checkpoints belongs to another run: Lightning would write
``last-v1.ckpt`` beside that run's ``last.ckpt`` (and a later stop would overwrite it), so a new run
there is refused unless it resumes that folder's own checkpoint. While a run writes into its folder
it holds an advisory lock there, and one on its checkpoint folder and on the folder of the checkpoint
it resumes (both stand for one MLflow run), so a second concurrent run or resume is refused within seconds instead of
interleaving ``train.log`` or logging duplicate points. Locks are ``flock`` locks: the kernel drops
them when the process dies, even by SIGKILL, so a crash never leaves a stale lock behind.
See docs/troubleshooting.md#run-folders.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from vldac_lightning.utils.config import ConfigError

__all__ = ["RUN_LOCK", "WRITER_LOCK", "RunFolderCheck", "claim_run_folder", "first_process"]

log = logging.getLogger(__name__)

RUN_LOCK = ".vldac-run.lock"  # in the run's output folder: held by the run writing there
# In a checkpoint folder: held by the run that writes those checkpoints or continues one of them, i.e.
# the one process logging to that MLflow run.
WRITER_LOCK = ".vldac-writer.lock"


def first_process() -> bool:
    """This process is rank 0 as a launcher set it up before ``torch.distributed`` starts.

    Lightning's DDP launcher re-runs the command for the other ranks (``LOCAL_RANK``/``NODE_RANK``)
    with the same run folder; only rank 0 checks and locks it."""
    from vldac_lightning.utils.sweep_records import job_rank_is_zero

    return job_rank_is_zero() and all(os.environ.get(v, "0") in ("", "0") for v in ("LOCAL_RANK", "NODE_RANK"))


@contextmanager
def _exclusive(lock_file: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file``; ConfigError(``busy`` + holder's pid) if taken."""
    import fcntl

    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only folder: nothing of ours is written there either
        log.warning("Could not create the lock %s (%s): concurrent runs there are not detected", lock_file, exc)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(f"{busy} (process {holder}, lock {lock_file})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _foreign_checkpoints(ckpt_dir: Path, resume_from: str | None) -> list[Path]:
    """Checkpoints in ``ckpt_dir`` that this run does not continue (all of them unless it resumes one there)."""
    found = sorted(p for p in ckpt_dir.glob("*.ckpt") if p.is_file()) if ckpt_dir.is_dir() else []
    if resume_from and Path(resume_from).resolve().parent == ckpt_dir.resolve():
        return []
    return found


@contextmanager
def claim_run_folder(output_dir: str | Path, ckpt_dir: str | Path | None, resume_from: str | None) -> Iterator[None]:
    """For the duration of a run: refuse a folder holding another run's checkpoints, lock the folder,
    and lock the folder of the checkpoint being resumed (one writer per MLflow run)."""
    output, fix = Path(output_dir), ("leave hydra.run.dir unset (every run gets a new folder under "
                                     "paths.log_dir), or pick an empty folder")
    if ckpt_dir is not None:
        foreign = _foreign_checkpoints(Path(ckpt_dir), resume_from)
        if foreign:
            names = ", ".join(p.name for p in foreign[:4]) + (" ..." if len(foreign) > 4 else "")
            last = Path(ckpt_dir) / "last.ckpt"
            raise ConfigError(
                f"the run folder {output} already holds another run's checkpoints ({Path(ckpt_dir)}: {names}); a new "
                f"run there would mix its checkpoints with that run's. Fix: {fix}; to continue that run, pass "
                f"ckpt_path={last if last.exists() else foreign[-1]}")
    with ExitStack() as stack:
        stack.enter_context(_exclusive(output / RUN_LOCK, f"another run is writing into {output} now; {fix}"))
        resumed = Path(resume_from).parent if resume_from and Path(resume_from).is_file() else None
        folders = {Path(f).resolve() for f in (ckpt_dir, resumed) if f}
        for folder in sorted(folders):
            stack.enter_context(_exclusive(
                folder / WRITER_LOCK,
                f"another run is writing or continuing the checkpoints in {folder} now (its MLflow run would get two "
                f"writers{f', ckpt_path={resume_from}' if resume_from else ''}); wait for it to end, or start a new "
                "run without ckpt_path"))
        yield


class RunFolderCheck(Callback):
    """Hydra callback (conf/hydra/default.yaml), first of all: the folder runs are written under must be
    creatable and writable, else one ``Config error`` line (Hydra's own failure is a page of chained
    tracebacks from ``mkdir``), before a sweep's MLflow parent run is created."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "sweep")

    @staticmethod
    def _check(config: DictConfig, mode: str) -> None:
        from vldac_lightning.utils.config import ConfigError, exit_on_config_error, write_error_message

        # The parent of hydra.run.dir / hydra.sweep.dir: their own names hold a timestamp Hydra resolves again.
        parent = Path(str(OmegaConf.select(config, f"hydra.{mode}.dir"))).absolute().parent
        log_dir = OmegaConf.select(config, "paths.log_dir", default=None)
        with exit_on_config_error():
            try:
                parent.mkdir(parents=True, exist_ok=True)
                if not os.access(parent, os.W_OK):
                    raise PermissionError(errno.EACCES, "permission denied", str(parent))
            except OSError as exc:
                reason = (write_error_message(exc) or str(exc)).split(". Free space", 1)[0]
                raise ConfigError(f"runs are written under {parent} (paths.log_dir={log_dir}), but {reason}. Write "
                                  "them elsewhere: paths.log_dir=/a/writable/folder (or VLDAC_ROOT=...)") from None
