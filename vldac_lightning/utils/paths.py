"""Where the Hydra configs live, in a checkout and in an installed wheel.

The repository keeps ``conf/`` at its top level; the wheel ships the same files as
``vldac_lightning/conf`` (setup.py maps the package there). Everything that reads configs
(``train``, ``evaluate``, ``doctor``, the group-choice check) uses :data:`CONF_DIR`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONF_DIR", "find_conf_dir"]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def find_conf_dir(package_dir: Path = _PACKAGE_DIR) -> Path:
    """``<package>/conf`` when installed from a wheel, else the checkout's top-level ``conf/``.

    The installed location is tried first: next to an installed package (``site-packages/``) an
    unrelated ``conf/`` folder may exist, while inside a checkout the package holds no ``conf/``.
    """
    for candidate in (package_dir / "conf", package_dir.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"no Hydra config folder (with train.yaml) at {package_dir / 'conf'} or {package_dir.parent / 'conf'}; "
        "reinstall the package (pip install vldac_lightning) or run from a full checkout of the repository"
    )


CONF_DIR = find_conf_dir()
