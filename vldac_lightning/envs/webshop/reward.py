"""WebShop's purchase reward, as its store computes it on the "done" page.

Source: princeton-nlp/WebShop, ``web_agent_site/engine/goal.py`` (``get_reward`` and the
functions it calls; Yao et al. 2022, §3.2). Our reading of it:

    reward = r_type · (attribute matches + option matches + 1[price ≤ bound])
                    / (|goal attributes| + |goal options| + 1)

* **attribute matches**: a goal attribute counts when some product attribute has a fuzzy
  token-set ratio > 85 with it, or else when it is a substring of the product's lower-cased
  title, bullet points or description.
* **option matches**: each option the agent *chose* (colour/size/...; both sides passed through
  ``normalize_color``) counts once when: for the ``size`` option, its value is exactly one of the
  goal options; for other options, a goal option has a fuzzy ratio > 85 with it; or else its value
  is a substring of the title, bullet points or description. Options left unchosen count 0.
* **r_type** (product type): title nouns shared with the goal product's title, over the goal's
  title nouns = ``title_score`` (0.2 when the goal title has none); r_type = 0 if the score is 0,
  0.1 if below 0.1, 0.5 if neither the search query matches, nor ≥ 2 breadcrumb levels match, nor
  the score exceeds 0.2; else 1.
* Nothing bought within the horizon: reward 0 (the env's business, not this module's).

Two differences, both forced by running offline: WebShop finds title nouns with spaCy's
``en_core_web_lg`` tagger, which no package registry ships; we take the title's word tokens
minus English stop words (on the generated catalog titles are brand + modifier + noun + an
attribute). And ``thefuzz.token_set_ratio`` is computed with ``rapidfuzz`` (the library thefuzz
wraps) with thefuzz's preprocessing and rounding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rapidfuzz import fuzz, utils

__all__ = ["COLOR_SET", "normalize_color", "purchase_reward", "title_nouns", "token_set_ratio", "type_reward"]

EXACT_MATCH_OPTIONS = ("size",)
FUZZY_THRESHOLD = 85
# WebShop's engine/normalize.py colour list (alphabetical: the first hit wins).
COLOR_SET = (
    "alabaster apricot aqua ash asphalt azure banana beige black blue blush bordeaux bronze brown burgundy "
    "camel camo caramel champagne charcoal cheetah chestnut chocolate christmas coffee cognac copper coral "
    "cranberry cream crystal dark denim eggplant elephant espresso fuchsia gold granite grape graphite grass "
    "gray green grey heather indigo ivory ivy khaki lavender lemon leopard light lilac lime magenta maroon "
    "mauve merlot midnight mint mocha multicolor mushroom mustard natural navy nude olive orange peach pewter "
    "pink plum purple rainbow red rose royal rust sand sapphire seashell silver skull slate steel stone "
    "stonewash sunflower tan taupe teal tiger turquoise violet walnut wheat white wine yellow"
).split()
_STOP_WORDS = frozenset(
    "a an and are as at be by for from in into is it of on or the to with without your you this that "
    "these those its our set pack piece pcs".split()
)
_WORD = re.compile(r"[a-z0-9][a-z0-9'\-]*")


def normalize_color(value: str) -> str:
    """The first WebShop colour name contained in ``value``, else ``value`` unchanged."""
    for color in COLOR_SET:
        if color in value:
            return color
    return value


def token_set_ratio(a: str, b: str) -> int:
    """``thefuzz.fuzz.token_set_ratio``: lower-cased, punctuation-stripped, rounded to an int."""
    return int(round(fuzz.token_set_ratio(a, b, processor=utils.default_process)))


def title_nouns(title: str) -> list[str]:
    """The title's noun tokens, approximated offline as word tokens minus stop words."""
    return [w for w in _WORD.findall(title.lower()) if w not in _STOP_WORDS]


def type_reward(product: Mapping[str, Any], goal: Mapping[str, Any]) -> dict[str, Any]:
    """WebShop's ``get_type_reward``: r_type with its query/category/title components."""
    query_match = product["query"] == goal["query"]
    bought = {x.strip() for x in product["product_category"].split("›")}
    wanted = {x.strip() for x in goal["product_category"].split("›")}
    category_match = len(bought & wanted) >= 2
    desired = title_nouns(goal["name"])
    got = set(title_nouns(product["name"]))
    title_score = 0.2 if not desired else len(got & set(desired)) / len(desired)
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {"r_type": r_type, "query_match": query_match, "category_match": category_match,
            "title_score": title_score}


def _in_text(value: str, product: Mapping[str, Any]) -> bool:
    return (value in product["Title"].lower() or value in " ".join(product["BulletPoints"]).lower()
            or value in product["Description"].lower())


def attribute_matches(product: Mapping[str, Any], goal_attributes: Sequence[str]) -> int:
    """Goal attributes the product has (fuzzy attribute match, else found in its text)."""
    n = 0
    for wanted in goal_attributes:
        if any(token_set_ratio(have, wanted) > FUZZY_THRESHOLD for have in product["Attributes"]):
            n += 1
        elif _in_text(wanted, product):
            n += 1
    return n


def option_matches(product: Mapping[str, Any], goal_options: Sequence[str], chosen: Mapping[str, str]) -> int:
    """Chosen options that match a goal option (exact for size, fuzzy otherwise, else in the text)."""
    goal = [normalize_color(o) for o in goal_options]
    n = 0
    for name, value in chosen.items():
        value = normalize_color(value)
        if name.lower() in EXACT_MATCH_OPTIONS:
            matched = value in goal
        else:
            matched = any(token_set_ratio(g, value) > FUZZY_THRESHOLD for g in goal)
        if matched or _in_text(value, product):
            n += 1
    return n


def purchase_reward(product: Mapping[str, Any], goal: Mapping[str, Any], price: float,
                    chosen_options: Mapping[str, str]) -> tuple[float, dict[str, Any]]:
    """(reward, its parts) for buying ``product`` at ``price`` with ``chosen_options`` (module docstring)."""
    goal_options = goal["goal_options"]
    goal_values = list(goal_options.values()) if isinstance(goal_options, Mapping) else list(goal_options)
    kind = type_reward(product, goal)
    n_attr = attribute_matches(product, goal["attributes"])
    n_opt = option_matches(product, goal_values, chosen_options)
    r_price = price <= goal["price_upper"]
    total = (n_attr + n_opt + r_price) / (len(goal["attributes"]) + len(goal_values) + 1)
    reward = total * kind["r_type"]
    return reward, {**kind, "attribute_matches": n_attr, "option_matches": n_opt, "r_price": bool(r_price)}
