"""Ships the top-level ``conf/`` inside the wheel as ``vldac_lightning/conf``; the rest is in pyproject.toml.

pyproject.toml cannot map one package to another folder while also discovering packages, hence
this file. ``vldac_lightning.utils.paths`` finds the configs in either layout. Namespace discovery
keeps data-only folders (fonts, prompts, config groups) as packages, so their files ship too.
"""

from setuptools import find_namespace_packages, setup

_EXCLUDE = ["*__pycache__*"]
_CODE = find_namespace_packages(include=["vldac_lightning", "vldac_lightning.*"], exclude=_EXCLUDE)
_CONF = ["vldac_lightning.conf", *(f"vldac_lightning.conf.{p}" for p in find_namespace_packages("conf", exclude=_EXCLUDE))]

setup(packages=[*_CODE, *_CONF], package_dir={"vldac_lightning.conf": "conf"})
