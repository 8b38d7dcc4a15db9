"""A non-editable install is complete: the wheel carries conf/, the installed CLI composes its config
from there, and building it prints no setuptools deprecation warning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the wheel is built from (a copy, so the checkout gets no build/ or *.egg-info).
SOURCES = ("conf", "vldac_lightning", "pyproject.toml", "setup.py", "README.md", "LICENSE")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the wheel, pip's combined build output)."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pyproject.toml's build requirement)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / name).is_dir() else {}))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp), "."],
        cwd=src, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    (wheel,) = tmp.glob("vldac_lightning-*.whl")
    return wheel, output


def test_building_prints_no_deprecation_warning(built: tuple[Path, str]) -> None:
    _, output = built
    assert "deprecat" not in output.lower(), output
    assert "BuildBackendWarning" not in output, output


def test_the_wheel_carries_every_config_and_the_license(built: tuple[Path, str]) -> None:
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml"))
    assert "train.yaml" in configs and "evaluate.yaml" in configs
    assert [c for c in configs if f"vldac_lightning/conf/{c}" not in names] == []
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if "__pycache__" in n]


def test_the_installed_cli_composes_its_config_outside_a_checkout(built: tuple[Path, str], tmp_path: Path) -> None:
    wheel, _ = built
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install of the checkout
    where = subprocess.run([sys.executable, "-c", "from vldac_lightning.utils.paths import CONF_DIR; print(CONF_DIR)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True, timeout=600)
    assert Path(where.stdout.strip()) == site / "vldac_lightning" / "conf"
    for module, key in (("vldac_lightning.train", "task_name: train"), ("vldac_lightning.evaluate", "task_name: evaluate")):
        result = subprocess.run([sys.executable, "-m", module, "--cfg", "job", "env=gym_cards/ezpoints"],
                                cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert key in result.stdout and "id: gym_cards/EZPoints-v0" in result.stdout, result.stdout
