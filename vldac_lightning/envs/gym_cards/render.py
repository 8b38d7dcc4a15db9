"""Pillow drawing helpers shared by the Gym-Cards environments.

Everything is drawn procedurally on a 300x300 RGB canvas with the DejaVu fonts bundled in
``fonts/`` (no system font is assumed, so images are identical on every machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from io import BytesIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CANVAS_SIZE = 300
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
RED = (200, 0, 0)
TABLE_GREEN = (20, 90, 45)  # dark felt: white cards and white text both contrast with it
CARD_BACK_BLUE = (30, 60, 150)

# Suit order matters only for drawing: index 1 and 2 are the red suits.
SUITS = ("\u2660", "\u2665", "\u2666", "\u2663")  # ♠ ♥ ♦ ♣
RED_SUITS = frozenset({1, 2})

_FONT_FILES = {True: "DejaVuSans-Bold.ttf", False: "DejaVuSans.ttf"}


@lru_cache(maxsize=2)
def _font_bytes(bold: bool) -> bytes:
    # Read through importlib.resources so the font is found even from a zipped install.
    ref = resources.files(__package__).joinpath("fonts", _FONT_FILES[bold])
    return ref.read_bytes()


@lru_cache(maxsize=128)
def font(size: int, bold: bool = True) -> ImageFont.FreeTypeFont:
    """The bundled DejaVu Sans (bold by default) at ``size`` pixels, cached."""
    return ImageFont.truetype(BytesIO(_font_bytes(bold)), size)


def new_canvas(background: tuple[int, int, int] = WHITE) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A fresh 300x300 RGB image and a drawing context on it."""
    img = Image.new("RGB", (CANVAS_SIZE, CANVAS_SIZE), background)
    return img, ImageDraw.Draw(img)


def to_array(img: Image.Image) -> np.ndarray:
    """HxWx3 uint8 array (a fresh, writable copy)."""
    return np.array(img, dtype=np.uint8)


def text_width(text: str, size: int, bold: bool = True) -> float:
    return font(size, bold).getlength(text)


def fit_size(texts: Sequence[str], max_width: float, max_size: int, min_size: int = 8) -> int:
    """Largest font size <= max_size at which every text fits in ``max_width`` pixels."""
    for size in range(max_size, min_size - 1, -1):
        if all(text_width(t, size) <= max_width for t in texts):
            return size
    return min_size


def draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    size: int,
    fill: tuple[int, int, int] = BLACK,
    anchor: str = "la",
    bold: bool = True,
) -> None:
    draw.text(xy, text, font=font(size, bold), fill=fill, anchor=anchor)


def wrap_words(words: Sequence[str], size: int, max_width: float) -> list[str]:
    """Greedy line wrapping of space-separated words (formula entries never split)."""
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if current and text_width(candidate, size) > max_width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def draw_wrapped(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    words: Sequence[str],
    max_size: int,
    fill: tuple[int, int, int] = WHITE,
    min_size: int = 12,
) -> None:
    """Draw words wrapped into ``box`` (x0, y0, x1, y1), shrinking the font until they fit."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    size = max_size
    lines = wrap_words(words, size, width)
    while size > min_size and len(lines) * int(size * 1.2) > height:
        size -= 2
        lines = wrap_words(words, size, width)
    step = int(size * 1.2)
    for i, line in enumerate(lines):
        draw_text(draw, (x0, y0 + i * step), line, size, fill)


def draw_card(
    draw: ImageDraw.ImageDraw, x: float, y: float, w: float, h: float, rank: str, suit: int
) -> None:
    """A face-up card: white rounded rectangle, corner index, big central rank and suit."""
    color = RED if suit in RED_SUITS else BLACK
    draw.rounded_rectangle(
        (x, y, x + w, y + h), radius=max(3, int(w * 0.1)), fill=WHITE, outline=BLACK, width=2
    )
    corner = max(8, int(h * 0.15))
    draw_text(draw, (x + w * 0.08, y + h * 0.05), rank, corner, color)
    draw_text(draw, (x + w * 0.08, y + h * 0.05 + corner), SUITS[suit], corner, color, bold=False)
    # The central rank is what a downscaled observation must still show, so it is the biggest glyph;
    # "10" is wider than one letter, hence the width fit.
    big = min(int(h * 0.34), fit_size([rank], w * 0.8, int(h * 0.34)))
    draw_text(draw, (x + w / 2, y + h * 0.52), rank, big, color, anchor="mm")
    draw_text(draw, (x + w / 2, y + h * 0.82), SUITS[suit], int(h * 0.2), color, anchor="mm", bold=False)


def draw_card_back(draw: ImageDraw.ImageDraw, x: float, y: float, w: float, h: float) -> None:
    """A face-down card: blue back inside a white frame, with a light grid pattern."""
    draw.rounded_rectangle(
        (x, y, x + w, y + h), radius=max(3, int(w * 0.1)), fill=WHITE, outline=BLACK, width=2
    )
    m = max(4, int(w * 0.08))
    ix0, iy0, ix1, iy1 = int(x + m), int(y + m), int(x + w - m), int(y + h - m)
    draw.rectangle((ix0, iy0, ix1, iy1), fill=CARD_BACK_BLUE)
    for gx in range(ix0 + 6, ix1, 8):
        draw.line((gx, iy0, gx, iy1), fill=(90, 120, 210), width=1)
    for gy in range(iy0 + 6, iy1, 8):
        draw.line((ix0, gy, ix1, gy), fill=(90, 120, 210), width=1)


@lru_cache(maxsize=1024)
def card_sprite(rank: str | None, suit: int, w: int, h: int) -> Image.Image:
    """A card (``rank=None``: its back) as an RGBA sprite with transparent corners.

    Glyph rendering dominates drawing time, so each distinct card is drawn once and pasted after.
    """
    sprite = Image.new("RGBA", (w + 1, h + 1), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sprite)
    if rank is None:
        draw_card_back(draw, 0, 0, w, h)
    else:
        draw_card(draw, 0, 0, w, h, rank, suit)
    return sprite


def draw_card_row(
    img: Image.Image,
    cards: Sequence[tuple[str, int] | None],
    y: int,
    w: int,
    h: int,
    gap: float = 8,
    margin: float = 10,
) -> None:
    """Paste cards centred in one row of ``img``; ``None`` is a face-down card.

    When the row would not fit, cards overlap (like a fanned hand) so that every rank in the
    top-left corner stays visible.
    """
    n = len(cards)
    if n == 0:
        return
    stride = w + gap
    if n > 1 and (n - 1) * stride + w > CANVAS_SIZE - 2 * margin:
        stride = (CANVAS_SIZE - 2 * margin - w) / (n - 1)
    total = (n - 1) * stride + w
    x0 = (CANVAS_SIZE - total) / 2
    for i, card in enumerate(cards):
        sprite = card_sprite(None, 0, w, h) if card is None else card_sprite(card[0], card[1], w, h)
        img.paste(sprite, (round(x0 + i * stride), round(y)), sprite)
