"""Robust text -> action parsing for language-speaking environments.

The policy answers with ``{"thoughts": "...", "action": "..."}`` (docs/environments.md#response-formats), but generated text is
messy: code fences, prose around the object, single quotes, trailing commas, a tail cut off by the
token limit, Python literals, unicode operators. :func:`parse_action` recovers the action value
without ever evaluating the text (no ``eval`` / ``ast.literal_eval``).

Rules (mode ``"json"``):

* Only the first :data:`MAX_SCAN_CHARS` characters are looked at (bounded cost on huge outputs).
* Every top-level ``{...}`` span is a candidate, in text order; an unclosed span runs to the end of
  the text (truncated generation).  Braces and quotes inside strings are respected.
* For each candidate, ``json.loads`` is tried first; if that fails, a lenient tokenizer reads
  ``key: value`` pairs (single or double quotes, bare words, unterminated strings).  If no
  candidate holds the key, the same tokenizer runs over the whole text (``Action: stand``).
* The key is matched case-insensitively after stripping whitespace and markdown ``*`` / `` ` ``
  (``"Action"`` and ``**action**`` match, ``"act"`` does not).  Nested objects are searched
  breadth-first after the top-level keys.
* The FIRST action found wins: earlier candidates before later ones, and within one object the
  first occurrence of a duplicated key (``json.loads`` would keep the last).
* No value found -> ``parse_ok=False``; a value that is not an action name -> ``parse_ok=True,
  action_valid=False`` with the normalized value (cut to 64 characters) in ``action``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["MAX_SCAN_CHARS", "ParseResult", "action_value", "normalize_action_text", "parse_action"]

MAX_SCAN_CHARS = 16_384
_MAX_JSON_DEPTH = 64  # deeper candidates skip json.loads (which recurses) and go to the tokenizer
_MAX_VALUE_CHARS = 64  # invalid values are reported, but kept small (they land in info dicts)

# Characters a model may use for the ASCII operators. NFKC already maps full-width forms
# ("＋", "５"), but not these.
_CHAR_MAP = str.maketrans(
    {
        "\u2212": "-",  # minus sign
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u2012": "-",  # figure dash
        "\ufe63": "-",  # small hyphen-minus
        "\u00d7": "*",  # multiplication sign
        "\u2715": "*",
        "\u2716": "*",
        "\u22c5": "*",  # dot operator
        "\u2217": "*",  # asterisk operator
        "\u00f7": "/",  # division sign
        "\u2215": "/",  # division slash
    }
)
_STRIP_CHARS = " \t\r\n\"'`"


@dataclass(frozen=True)
class ParseResult:
    """Outcome of parsing one generated text."""

    action: str | None  # canonical action name if valid, else the normalized value (or None)
    parse_ok: bool  # an action value was found
    action_valid: bool  # ... and it is one of the action names
    error: str  # "" when valid, otherwise a short reason


def normalize_action_text(s: str) -> str:
    """Normalize an action value: NFKC (full-width digits), unicode operators -> ASCII,
    surrounding whitespace / quotes / backticks stripped. Case is kept (matching folds it)."""
    s = unicodedata.normalize("NFKC", s).translate(_CHAR_MAP)
    return s.strip(_STRIP_CHARS)


def _value_to_text(value: Any) -> str | None:
    """A JSON/tokenizer value as action text; None means 'no value' (null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)[:_MAX_VALUE_CHARS]


def _key_matches(raw_key: str, key: str) -> bool:
    return raw_key.strip(_STRIP_CHARS + "*").casefold() == key


# ---------------------------------------------------------------------------------------------
# Candidate objects: top-level {...} spans, string-aware, iterative (no recursion).
_SPECIAL = re.compile(r"[{}\[\]\"'\\]")


def _candidates(text: str) -> list[tuple[str, int]]:
    """Top-level ``{...}`` spans of ``text`` with their maximum nesting depth ({} and [])."""
    out: list[tuple[str, int]] = []
    depth = brackets = max_depth = 0
    start = -1
    quote = ""  # current string delimiter, "" outside strings
    skip = -1  # index of a backslash-escaped character
    for m in _SPECIAL.finditer(text):
        i, c = m.start(), m.group()
        if i == skip:
            continue
        if quote:
            if c == "\\":
                skip = i + 1
            elif c == quote:
                quote = ""
        elif c == "{":
            if depth == 0:
                start, max_depth, brackets = i, 0, 0
            depth += 1
            max_depth = max(max_depth, depth + brackets)
        elif c == "[":
            if depth > 0:
                brackets += 1
                max_depth = max(max_depth, depth + brackets)
        elif c == "]":
            brackets = max(brackets - 1, 0)
        elif c == "}":
            if depth > 0:
                depth -= 1
                if depth == 0:
                    out.append((text[start : i + 1], max_depth))
        elif depth > 0 and c == '"':
            quote = c
        elif depth > 0 and c == "'":
            # A single quote opens a string only where a JSON token may start; otherwise it is an
            # apostrophe ("don't") that must not swallow the rest of the object.
            j = i - 1
            while j >= 0 and text[j].isspace():  # stops at the previous quote: O(n) overall
                j -= 1
            if j >= 0 and text[j] in "{[:,":
                quote = c
    if depth > 0:  # truncated generation: the open object runs to the end
        out.append((text[start:], max_depth))
    return out


# ---------------------------------------------------------------------------------------------
# Lenient tokenizer: strings (either quote, possibly unterminated), punctuation, bare words.
_TOKEN = re.compile(
    r"""(?P<dq>"(?:[^"\\]|\\.)*(?:"|$))"""
    r"""|(?P<sq>'(?:[^'\\]|\\.)*(?:'|$))"""
    r"""|(?P<punct>[{}\[\]:,=])"""
    r"""|(?P<bare>[^\s{}\[\]:,="'][^\s{}\[\]:,="]*)""",
    re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)


_CLOSED = {'"': re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL), "'": re.compile(r"'(?:[^'\\]|\\.)*'", re.DOTALL)}


def _unquote(tok: str) -> str:
    """String token -> text; an unterminated (truncated) string keeps everything after the quote."""
    body = tok[1:-1] if _CLOSED[tok[0]].fullmatch(tok) else tok[1:]

    def esc(m: re.Match[str]) -> str:
        e = m.group(1)
        if len(e) == 5:
            return chr(int(e[1:], 16))
        return _ESCAPES.get(e, e)

    return _ESCAPE_RE.sub(esc, body)


_BARE_LITERALS = {"true": True, "false": False, "none": None, "null": None}


def _lenient_find(text: str, key: str) -> tuple[bool, Any]:
    """First ``key: value`` (or ``key = value``) pair with a scalar value; (found, value)."""
    prev2: tuple[str, str] | None = None  # (kind, text) of the token before the separator
    prev1: tuple[str, str] | None = None
    for m in _TOKEN.finditer(text):
        kind, tok = m.lastgroup or "", m.group()
        if (
            prev1 is not None
            and prev1[0] == "punct"
            and prev1[1] in ":="
            and prev2 is not None
            and prev2[0] in ("dq", "sq", "bare")
        ):
            raw_key = _unquote(prev2[1]) if prev2[0] != "bare" else prev2[1]
            if _key_matches(raw_key, key):
                if kind in ("dq", "sq"):
                    return True, _unquote(tok)
                if kind == "bare":
                    lit = tok.casefold()
                    return True, (_BARE_LITERALS[lit] if lit in _BARE_LITERALS else tok)
                if tok == "=":  # "=" is itself an action (EZPoints / Points24)
                    return True, tok
                if tok in ("[", "{"):  # a structured value: report it as an invalid action
                    return True, tok
        prev2, prev1 = prev1, (kind, tok)
    return False, None


# ---------------------------------------------------------------------------------------------
class _Pairs(list):
    """A JSON object kept as its ordered (key, value) pairs, so duplicated keys stay visible."""


def _json_find(candidate: str, key: str) -> tuple[bool, Any]:
    try:
        obj = json.loads(candidate, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        return False, None
    queue: deque[Any] = deque([obj])  # breadth-first: top-level keys win over nested ones
    while queue:
        node = queue.popleft()
        if isinstance(node, _Pairs):
            for k, v in node:
                if _key_matches(k, key):
                    return True, v
            queue.extend(v for _, v in node if isinstance(v, list))
        elif isinstance(node, list):
            queue.extend(v for v in node if isinstance(v, list))
    return False, None


def _find_value(text: str, key: str) -> tuple[bool, Any]:
    for cand, depth in _candidates(text):
        if depth <= _MAX_JSON_DEPTH:
            found, value = _json_find(cand, key)
            if found:
                return found, value
        found, value = _lenient_find(cand, key)
        if found:
            return found, value
    return _lenient_find(text, key)


@lru_cache(maxsize=64)
def _lookup(action_names: tuple[str, ...]) -> dict[str, str]:
    return {normalize_action_text(n).casefold(): n for n in action_names}


def _judge(value: str, action_names: Sequence[str]) -> ParseResult:
    norm = normalize_action_text(value)
    if not norm:
        return ParseResult(None, False, False, "empty action value")
    name = _lookup(tuple(action_names)).get(norm.casefold())
    if name is not None:
        return ParseResult(name, True, True, "")
    shown = norm[:_MAX_VALUE_CHARS]
    return ParseResult(shown, True, False, f"{shown!r} is not one of {list(action_names)}")


def parse_action(
    text: str, action_names: Sequence[str], *, key: str = "action", mode: str = "json"
) -> ParseResult:
    """Parse generated ``text`` into one of ``action_names`` (see the module docstring).

    ``mode="json"`` looks for ``key`` in a JSON-ish object; ``mode="action_only"`` requires the
    whole stripped text (same normalizations) to be an action name.
    """
    if mode not in ("json", "action_only"):
        raise ValueError(f"unknown parse mode {mode!r}; valid: 'json', 'action_only'")
    if not isinstance(text, str):
        return ParseResult(None, False, False, f"expected str, got {type(text).__name__}")
    text = text[:MAX_SCAN_CHARS]
    if not text.strip():
        return ParseResult(None, False, False, "empty output")
    if mode == "action_only":
        return _judge(text, action_names)
    found, value = _find_value(text, key.strip().casefold())
    if not found:
        return ParseResult(None, False, False, f"no {key!r} value found")
    value_text = _value_to_text(value)
    if value_text is None:
        return ParseResult(None, False, False, f"{key!r} is null")
    return _judge(value_text, action_names)


def action_value(text: str, *, key: str = "action", mode: str = "json") -> str | None:
    """The normalized action value in ``text``, not matched against any names and not shortened
    (None when there is none): for envs whose actions carry free text, e.g. WebShop's
    ``search[query]``. Same rules as :func:`parse_action`."""
    if mode not in ("json", "action_only"):
        raise ValueError(f"unknown parse mode {mode!r}; valid: 'json', 'action_only'")
    if not isinstance(text, str):
        return None
    text = text[:MAX_SCAN_CHARS]
    if mode == "json":
        found, value = _find_value(text, key.strip().casefold())
        text = _value_to_text(value) if found else None
    norm = normalize_action_text(text) if text else ""
    return norm or None
