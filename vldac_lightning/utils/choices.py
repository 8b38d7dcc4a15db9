"""Friendly errors for unknown config-group choices (``env=foo``).

Hydra lists "Available options" only for files directly inside a group folder; our env group is
nested (``env=gym_cards/ezpoints``, later ``env=miniworld/oneroom``), so a typo would get no list.
We check group overrides on the command line against the files under ``conf/`` first.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .paths import CONF_DIR

# Hydra's own config groups (hydra/launcher, hydra/sweeper, ...) are nested for real: never rewritten.
_HYDRA_GROUP = "hydra"
# Our own groups nested inside a group (chosen with a slash in the *key*: model/engine=hf). Their
# files are not choices of the outer group.
NESTED_GROUPS = ("model/engine",)
# Hydra options that a plugin package provides: option -> (the plugin's module, its pip package).
PLUGIN_OPTIONS = {
    "hydra/launcher/joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "hydra/launcher/submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/launcher/submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/sweeper/optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
}
PLUGIN_INSTALL = "pip install 'vldac_lightning[sweep]'"


def group_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """All choices of a config group, nested ones as ``sub/name``."""
    root = conf_dir / group
    nested = [conf_dir / g for g in NESTED_GROUPS if g != group]
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml")
                  if not any(p.is_relative_to(n) for n in nested))


def check_group_overrides(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """Return an error message for the first ``group=choice`` override naming no config file."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if "." in key or "/" in key or not (conf_dir / key).is_dir():
            continue  # a value override (algo.kl_beta=...) or not a group
        choices = group_choices(key, conf_dir)
        for choice in value.split(","):  # multirun sweeps: env=a,b
            choice = choice.strip()
            if choice in ("null", "") or choice in choices:
                continue
            return (f"Unknown {key}={choice!r}. Valid choices for '{key}': {', '.join(choices)}")
    return None


def normalize_group_overrides(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> tuple[list[str], list[str]]:
    """Rewrite ``[+]env/gym_cards=blackjack`` (the form ``--help``'s group list suggests) to
    ``env=gym_cards/blackjack``, returning (new argv, notes). Hydra would otherwise compose the file
    into a new ``env.gym_cards`` node that nothing reads, and train the default env."""
    out, notes = [], []
    for arg in argv:
        key, sep, value = arg.partition("=")
        bare = key.lstrip("+")
        group, _, sub = bare.partition("/")
        nested = bare.replace(".", "/")
        if sep and nested in NESTED_GROUPS and "." in bare and (conf_dir / nested / f"{value}.yaml").is_file():
            # model.engine=hf names a choice of the nested group model/engine (Hydra would try to
            # put a string where a config node is).
            fixed = f"{nested}={value}"
            notes.append(f"note: reading {arg} as {fixed} (a choice of the {nested} group)")
            out.append(fixed)
            continue
        if (sep and sub and not arg.startswith("-") and (conf_dir / group).is_dir() and "." not in bare
                and group != _HYDRA_GROUP and bare not in NESTED_GROUPS):
            fixed = f"{group}=" + ",".join(f"{sub}/{v.strip()}" for v in value.split(","))
            notes.append(f"note: reading {arg} as {fixed} (the {group} group's choices are nested names)")
            out.append(fixed)
        else:
            out.append(arg)
    return out, notes


def _defaults_options(group: str, choice: str, conf_dir: Path) -> list[str]:
    """The Hydra options (``hydra/sweeper/optuna``) the project file ``<group>/<choice>.yaml`` puts in
    its defaults list, itself included; none when it is no project file (a plugin's own option)."""
    from omegaconf import OmegaConf

    if not (conf_dir / group).is_dir():  # a value (run_name=<4,000 characters>), not a group: no file to stat
        return []
    path = conf_dir / group / f"{choice}.yaml"
    try:
        if not path.is_file():
            return []
    except OSError:  # a choice too long for a file name is no project file
        return []
    options = []
    for entry in OmegaConf.load(path).get("defaults") or []:
        if isinstance(entry, str):  # "- submitit_slurm": a config of the same group
            if entry != "_self_":
                options.append(f"{group}/{entry}")
            continue
        for key, value in entry.items():  # "- override /hydra/sweeper: optuna"
            key = str(key).removeprefix("override").strip()
            target = key.lstrip("/") if key.startswith("/") else f"{group}/{key}"
            if isinstance(value, str):
                options.append(f"{target}/{value}")
    return options


def _module_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (hydra_plugins) is missing
        return False


def check_plugin_overrides(argv: Sequence[str], conf_dir: Path = CONF_DIR,
                           installed: Callable[[str], bool] | None = None) -> str | None:
    """An error naming the package and the extra to install when an override selects a Hydra plugin's
    option (``hydra/launcher=joblib``, or ``hparams_search=optuna``, whose defaults choose the Optuna
    sweeper) and the plugin is not installed; Hydra itself only says the option does not exist.
    ``installed(module)`` says whether a module can be imported (default: it is found on sys.path)."""
    installed = installed or _module_installed
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if arg.startswith("-") or not sep or "." in key:
            continue
        for choice in (c.strip() for c in value.split(",")):
            seen: list[str] = []
            todo = [f"{key}/{choice}"]
            while todo and len(seen) < 20:  # a project file may choose a plugin option through its defaults
                option = todo.pop()
                seen.append(option)
                group, _, name = option.rpartition("/")
                todo += [o for o in _defaults_options(group, name, conf_dir) if o not in seen]
                module, package = PLUGIN_OPTIONS.get(option, (None, None))
                if module is not None and not installed(module):
                    via = "" if option == f"{key}/{choice}" else f" (for {option})"
                    return (f"{key}={choice} needs the Hydra plugin {package}{via}, which is not installed: "
                            f"{PLUGIN_INSTALL} (docs/config.md#sweeps)")
    return None


def run_cli(main: Callable[[], object]) -> None:
    """Console entry point: nested group choices normalised, friendly group-choice and missing-plugin
    errors (``Config error: ...``, exit 2), then Hydra."""
    argv, notes = normalize_group_overrides(sys.argv[1:])
    for note in notes:
        print(note, file=sys.stderr)
    sys.argv[1:] = argv
    error = check_group_overrides(argv)
    if error:
        sys.exit(error)
    error = check_plugin_overrides(argv)
    if error:
        print(f"Config error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    main()
