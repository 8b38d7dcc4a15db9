"""A small picture of an ALFWorld text state, so VLM policies get one image per step.

ALFWorld here is text-first (TextWorld engine, no THOR renderer). The picture shows:

* top band: where the agent is ("countertop 1", or "middle of room" at the start), on a colour
  derived from the receptacle *type* (every cabinet shares a colour, the fridge has another), so
  the location is readable even after a small model's processor shrinks the image;
* middle: the objects visible there, one per line (as many as fit);
* bottom band: what the agent holds, green when it holds something, grey when its hands are empty.

It is drawn with Pillow and the DejaVu font bundled for Gym-Cards (identical on every machine).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from vldac_lightning.envs.gym_cards.render import font

__all__ = ["render_state", "type_colour"]

_BG = (245, 245, 240)
_TEXT = (20, 20, 20)
_HOLD = (40, 150, 60)
_EMPTY = (150, 150, 150)


def type_colour(location: str) -> tuple[int, int, int]:
    """A stable mid-tone colour per receptacle type ("cabinet 3" -> the colour of "cabinet")."""
    kind = location.rsplit(" ", 1)[0] if location[-1:].isdigit() else location
    h = hashlib.md5(kind.encode()).digest()
    return tuple(70 + b % 150 for b in h[:3])  # type: ignore[return-value]


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int, bold: bool) -> str:
    f = font(size, bold)
    if draw.textlength(text, font=f) <= width:
        return text
    while text and draw.textlength(text + "…", font=f) > width:
        text = text[:-1]
    return text + "…"


def render_state(location: str, visible: Sequence[str], inventory: Sequence[str], size: int = 128) -> np.ndarray:
    """The picture described in the module docstring, as uint8 ``[size, size, 3]``."""
    if size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {size}")
    img = Image.new("RGB", (size, size), _BG)
    draw = ImageDraw.Draw(img)
    pad = max(2, size // 40)
    fs = max(8, size // 11)
    band = fs + 2 * pad
    where = "middle of room" if location.startswith("the middle") else location
    draw.rectangle([0, 0, size, band], fill=type_colour(where))
    draw.text((pad, pad), _fit(draw, where, size - 2 * pad, fs, True), fill=(255, 255, 255), font=font(fs, True))

    holding = ", ".join(inventory)
    draw.rectangle([0, size - band, size, size], fill=_HOLD if holding else _EMPTY)
    hold_text = f"hold: {holding}" if holding else "hands empty"
    draw.text((pad, size - band + pad), _fit(draw, hold_text, size - 2 * pad, fs, True), fill=(255, 255, 255),
              font=font(fs, True))

    line = fs + 1
    y = band + pad
    rows = (size - 2 * band - 2 * pad) // line
    items = list(visible)
    if len(items) > rows:
        items = items[: rows - 1] + [f"+{len(visible) - rows + 1} more"]
    if not items:
        items = ["(nothing visible)"]
    for item in items:
        draw.text((pad, y), _fit(draw, item, size - 2 * pad, fs, False), fill=_TEXT, font=font(fs, False))
        y += line
    return np.asarray(img, dtype=np.uint8)
