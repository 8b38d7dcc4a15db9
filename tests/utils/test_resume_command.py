"""The printed "Resume with:" command survives a paste into a shell, whatever the paths and names hold."""

from __future__ import annotations

import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from vldac_lightning.train import resume_command


@pytest.mark.parametrize("ckpt", [
    "/runs/a/checkpoints/last.ckpt",
    "/my runs/a b/checkpoints/last.ckpt",
    "/runs/it's,x=y [1]{2}(3):${HOME};$(rm -rf ~)/last.ckpt",
])
def test_the_resume_command_parses_back_to_the_same_values(ckpt: str) -> None:
    job = ["run_name='my run; echo pwned'", "ckpt_path=/old/last.ckpt", "env=gym_cards/numberline",
           "paths.log_dir='/data/log dir'"]
    argv = shlex.split(resume_command(ckpt, job))  # what the shell hands to Python
    assert argv[:3] == ["python", "-m", "vldac_lightning.train"]
    overrides = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(argv[3:])}
    resolved = OmegaConf.create({k: v for k, v in overrides.items() if "/" not in k and k != "env"})
    assert resolved.ckpt_path == ckpt  # the old ckpt_path override is replaced, not repeated
    assert resolved.run_name == "my run; echo pwned" and resolved["paths.log_dir"] == "/data/log dir"
    assert overrides["env"] == "gym_cards/numberline"
