"""Checkpoint files: atomic replacement, weights-only loading, RNG round trips."""

from __future__ import annotations

import os
import pickle
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from vldac_lightning.utils.checkpoint_io import AtomicCheckpointIO, load_checkpoint
from vldac_lightning.utils.rng import capture_rng_state, restore_rng_state


def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, target)

    def dies_halfway(obj: object, f) -> None:  # type: ignore[no-untyped-def]
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # what a kill looks like from inside the write

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, target)
    monkeypatch.undo()
    state = io.load_checkpoint(target)
    assert state["global_step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_weights_holding_nan_or_inf_are_never_written(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {"head.w": torch.ones(2), "steps": torch.tensor(3)}}, target)
    for bad in (float("inf"), float("nan")):
        with pytest.raises(FloatingPointError, match=r"refusing to write .*last\.ckpt: 1 weight tensor.*head\.w.*optimizer\.lr"):
            io.save_checkpoint({"global_step": 2, "state_dict": {"head.w": torch.tensor([1.0, bad])}}, target)
    assert io.load_checkpoint(target)["global_step"] == 1  # the previous checkpoint is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_loading_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": pickle.loads(pickle.dumps(Path("/etc/passwd")))}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "missing.ckpt")


def test_rng_state_survives_a_weights_only_round_trip(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    torch.save({"rng": state}, tmp_path / "rng.ckpt")
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "rng.ckpt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
def test_checkpoints_get_the_mode_the_umask_gives_a_plain_file(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(1)}, tmp_path / "last.ckpt")
        (tmp_path / "plain").write_bytes(b"")  # what any ordinary write gets, for comparison
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "last.ckpt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode


def test_a_full_disk_is_one_line_naming_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from vldac_lightning.utils.config import exit_on_config_error

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, target)

    def disk_full(obj: object, f) -> None:  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")  # what torch.save raises (no file name)

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(SystemExit) as exited, exit_on_config_error():
        io.save_checkpoint({"global_step": 2}, target)
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"Error: cannot write {target}: no space left on the disk. Free space there")
    assert "paths.log_dir=" in err and len(err.splitlines()) == 1
    monkeypatch.undo()
    assert io.load_checkpoint(target)["global_step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
