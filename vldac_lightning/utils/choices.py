"""Friendly errors for unknown config-group choices (``env=foo``).

Hydra lists "Available options" only for files directly inside a group folder; our env group is
nested (``env=gym_cards/ezpoints``, later ``env=miniworld/oneroom``), so a typo would get no list.
We check group overrides on the command line against the files under ``conf/`` first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def group_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """All choices of a config group, nested ones as ``sub/name``."""
    root = conf_dir / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


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
        if sep and sub and not arg.startswith("-") and (conf_dir / group).is_dir() and "." not in bare:
            fixed = f"{group}=" + ",".join(f"{sub}/{v.strip()}" for v in value.split(","))
            notes.append(f"note: reading {arg} as {fixed} (the {group} group's choices are nested names)")
            out.append(fixed)
        else:
            out.append(arg)
    return out, notes


def run_cli(main: Callable[[], object]) -> None:
    """Console entry point: nested group choices normalised, friendly group-choice errors, then Hydra."""
    argv, notes = normalize_group_overrides(sys.argv[1:])
    for note in notes:
        print(note, file=sys.stderr)
    sys.argv[1:] = argv
    error = check_group_overrides(argv)
    if error:
        sys.exit(error)
    main()
