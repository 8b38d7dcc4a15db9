"""Prompt templates (data in ``envs/prompts/*.yaml``) and their formatting from env info.

Each YAML file maps ``game -> {state, versions: {version -> {template, state_text}}}``; see the
header of ``prompts/gym_cards.yaml`` for the fields a template may use. New environments add a
YAML file next to it; no code change is needed here.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PROMPT_DIR", "PromptTemplate", "available_prompts", "load_prompt"]

PROMPT_DIR = Path(__file__).with_name("prompts")


def _field_text(value: Any) -> Any:
    """Info values as prompt text: lists comma-joined, booleans yes/no, the rest unchanged."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(_field_text(v)) for v in value)
    return value


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt version of one game."""

    game: str
    version: str
    template: str
    state_template: str | None = None
    state_text: bool = False  # the version always appends the state line

    def fields(self, info: Mapping[str, Any], num_images: int, action_names: Sequence[str]) -> dict[str, Any]:
        """The str.format fields for ``info`` (exposed for tests and custom templates)."""
        fields = {k: _field_text(v) for k, v in info.items()}
        formula = info.get("formula_text")
        if formula is None and "formula" in info:
            formula = "".join(str(t) for t in info["formula"])
        if formula is not None:
            fields["formula"] = formula
        fields["num_images"] = num_images
        fields["num_previous_actions"] = max(num_images - 1, 0)  # actions the image history spans
        fields["image_ref"] = "the image" if num_images <= 1 else f"the last of the {num_images} images"
        fields["actions"] = ", ".join(f'"{a}"' for a in action_names)
        return fields

    def format(
        self,
        info: Mapping[str, Any],
        num_images: int,
        action_names: Sequence[str],
        *,
        state_in_text: bool | None = None,
    ) -> str:
        """The prompt text. ``state_in_text`` (None = the version's ``state_text``) appends the state
        line; either source of the flag is enough."""
        fields = self.fields(info, num_images, action_names)
        text = self._fill(self.template, fields)
        if (state_in_text or self.state_text) and self.state_template:
            text = f"{text}\n{self._fill(self.state_template, fields)}"
        return text

    def state_line(self, info: Mapping[str, Any], num_images: int, action_names: Sequence[str]) -> str | None:
        """The one-line state description (what ``state_in_text`` appends); None if the game has none."""
        if not self.state_template:
            return None
        return self._fill(self.state_template, self.fields(info, num_images, action_names))

    def _fill(self, template: str, fields: Mapping[str, Any]) -> str:
        try:
            return template.format_map(fields)
        except KeyError as e:
            raise ValueError(
                f"prompt {self.game}/{self.version} needs field {e.args[0]!r}, which the env info lacks; "
                f"available fields: {sorted(fields)}"
            ) from None

    def required_fields(self) -> set[str]:
        """Field names the template (and state line) reference."""
        names: set[str] = set()
        for tpl in (self.template, self.state_template or ""):
            names.update(f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(tpl) if f)
        return names


@lru_cache(maxsize=1)
def _catalogue() -> dict[str, tuple[Path, dict[str, Any]]]:
    """game -> (file, spec) over every YAML file in PROMPT_DIR; cached (files ship with the package)."""
    games: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(PROMPT_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for game, spec in data.items():
            if game in games:
                raise ValueError(
                    f"prompt game {game!r} defined in both {games[game][0].name} and {path.name}"
                )
            if not isinstance(spec, dict) or not isinstance(spec.get("versions"), dict):
                raise ValueError(f"{path.name}: game {game!r} needs a 'versions' mapping")
            games[game] = (path, spec)
    return games


def available_prompts() -> dict[str, list[str]]:
    """game -> its prompt versions."""
    return {game: sorted(spec["versions"]) for game, (_, spec) in _catalogue().items()}


def load_prompt(game: str, version: str) -> PromptTemplate:
    """The template of ``game``/``version``; ValueError listing the valid games or versions."""
    catalogue = _catalogue()
    if game not in catalogue:
        raise ValueError(f"no prompts for game {game!r}; valid games: {sorted(catalogue)}")
    path, spec = catalogue[game]
    versions = spec["versions"]
    if version not in versions:
        raise ValueError(
            f"unknown prompt version {version!r} for game {game!r}; valid versions: {sorted(versions)}"
        )
    entry = versions[version]
    if not isinstance(entry, dict) or not isinstance(entry.get("template"), str):
        raise ValueError(f"{path.name}: {game}/{version} needs a 'template' string")
    return PromptTemplate(
        game=game,
        version=version,
        template=entry["template"],
        state_template=spec.get("state"),
        state_text=bool(entry.get("state_text", False)),
    )
