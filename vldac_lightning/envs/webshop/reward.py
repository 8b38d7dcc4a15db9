"""WebShop's purchase reward, as its store computes it on the "done" page.

Source: princeton-nlp/WebShop master, ``web_agent_site/engine/goal.py`` (``get_reward`` and the
functions it calls; Yao et al. 2022, §3.2). Our reading of it:

    reward = r_type · (attribute matches + option matches + 1[price ≤ bound])
                    / (|goal attributes| + |goal options| + 1)

* **attribute matches**: a goal attribute counts when some product attribute has a fuzzy
  token-set ratio > 85 with it, or else when it is a substring of the product's lower-cased
  title, bullet points or description.
* **option matches**: each *goal* option counts once when some chosen option value has a fuzzy
  token-set ratio > 85 with it, both sides first passed through ``normalize_color``. The option's
  name plays no part (size too is fuzzy: "large" matches "x-large"), the product text is not
  consulted, and the count never exceeds the number of goal options. Options left unchosen match
  nothing.
* **r_type** (product type): title nouns shared with the goal product's title, over the goal's
  title nouns = ``title_score`` (0.2 when the goal title has none); r_type = 0 if the score is 0,
  0.1 if below 0.1, 0.5 if neither the search query matches, nor ≥ 2 breadcrumb levels match, nor
  the score exceeds 0.2; else 1.
* Nothing bought within the horizon: reward 0 (the env's business, not this module's).

Where we differ, and why (docs/environments.md#how-this-store-differs-from-the-original-webshop):
* Title nouns: WebShop tags them with spaCy's ``en_core_web_sm``, a model no package registry
  ships; ``title_nouns="words"`` (default) takes the title's word tokens minus English stop words
  instead, ``title_nouns="spacy"`` uses the tagger where the model is installed.
* ``thefuzz.fuzz.token_set_ratio`` is computed with ``rapidfuzz`` (the library thefuzz wraps)
  with thefuzz's default preprocessing (characters 128-255 dropped, lower-cased, punctuation to
  spaces) and rounding: the same integers.
* A goal whose options are a dict (our generated goals) is scored on its values. Master passes
  ``dict.items()`` there, which compares ``(name, value)`` tuples; only its synthetic goals are
  dicts (human goals are lists), so the published setting never takes that path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from rapidfuzz import fuzz, utils

__all__ = ["COLOR_SET", "TITLE_NOUNS", "normalize_color", "noun_tagger", "purchase_reward", "title_nouns",
           "token_set_ratio", "type_reward"]

FUZZY_THRESHOLD = 85
SPACY_MODEL = "en_core_web_sm"  # what WebShop master loads in goal.py
TITLE_NOUNS = ("words", "spacy")
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
_LATIN1 = {i: None for i in range(128, 256)}  # thefuzz's force_ascii drops exactly these


def normalize_color(value: str) -> str:
    """The first WebShop colour name contained in ``value`` (a substring test), else ``value``."""
    for color in COLOR_SET:
        if color in value:
            return color
    return value


def token_set_ratio(a: str, b: str) -> int:
    """``thefuzz.fuzz.token_set_ratio`` with its defaults: an int in 0..100."""
    a, b = a.translate(_LATIN1), b.translate(_LATIN1)
    return int(round(fuzz.token_set_ratio(a, b, processor=utils.default_process)))


def title_nouns(title: str) -> list[str]:
    """The title's noun tokens, approximated offline as word tokens minus stop words."""
    return [w for w in _WORD.findall(title.lower()) if w not in _STOP_WORDS]


@lru_cache(maxsize=1)
def _spacy_pipeline() -> Any:  # noqa: ANN401 - a spaCy Language
    try:
        import spacy

        return spacy.load(SPACY_MODEL)
    except (ImportError, OSError) as error:
        raise RuntimeError(
            f"env.env_kwargs.title_nouns='spacy' needs spaCy and its {SPACY_MODEL} model ({error}); install them "
            f"(pip install spacy && python -m spacy download {SPACY_MODEL}) or set title_nouns: words") from error


def spacy_title_nouns(title: str) -> list[str]:
    """WebShop's own title nouns: spaCy's NOUN / PROPN tokens, lower-cased."""
    return [t.text.lower() for t in _spacy_pipeline()(title) if t.pos_ in ("PNOUN", "NOUN", "PROPN")]


def noun_tagger(kind: str) -> Callable[[str], list[str]]:
    """The title-noun function ``title_nouns=kind`` names (``words`` or ``spacy``)."""
    if kind not in TITLE_NOUNS:
        raise ValueError(f"env.env_kwargs.title_nouns must be one of {TITLE_NOUNS}, got {kind!r}")
    if kind == "spacy":
        _spacy_pipeline()  # fail at construction, not at the first purchase
        return spacy_title_nouns
    return title_nouns


def type_reward(product: Mapping[str, Any], goal: Mapping[str, Any],
                nouns: Callable[[str], list[str]] = title_nouns) -> dict[str, Any]:
    """WebShop's ``get_type_reward``: r_type with its query/category/title components."""
    query_match = product["query"] == goal["query"]
    bought = {x.strip() for x in product["product_category"].split("›")}
    wanted = {x.strip() for x in goal["product_category"].split("›")}
    category_match = len(bought & wanted) >= 2
    desired = nouns(goal["name"])
    got = set(nouns(product["name"]))
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


def attribute_matches(product: Mapping[str, Any], goal_attributes: Sequence[str]) -> int:
    """Goal attributes the product has (fuzzy attribute match, else found in its text)."""
    text = (product["Title"].lower(), " ".join(product["BulletPoints"]).lower(), product["Description"].lower())
    n = 0
    for wanted in goal_attributes:
        if any(token_set_ratio(have, wanted) > FUZZY_THRESHOLD for have in product["Attributes"]):
            n += 1
        elif any(wanted in part for part in text):
            n += 1
    return n


def option_matches(goal_options: Iterable[str], chosen_values: Iterable[str]) -> int:
    """Goal options some chosen value fuzzy-matches after colour normalisation (≤ |goal options|)."""
    chosen = [normalize_color(v) for v in chosen_values]
    return sum(any(token_set_ratio(c, normalize_color(g)) > FUZZY_THRESHOLD for c in chosen)
               for g in goal_options)


def goal_option_values(goal: Mapping[str, Any]) -> list[str]:
    """The goal's option values: a dict's values (generated goals) or the list (human goals)."""
    options = goal["goal_options"]
    return list(options.values()) if isinstance(options, Mapping) else list(options)


def purchase_reward(product: Mapping[str, Any], goal: Mapping[str, Any], price: float,
                    chosen_options: Mapping[str, str],
                    nouns: Callable[[str], list[str]] = title_nouns) -> tuple[float, dict[str, Any]]:
    """(reward, its parts) for buying ``product`` at ``price`` with ``chosen_options`` (module docstring)."""
    goal_values = goal_option_values(goal)
    kind = type_reward(product, goal, nouns)
    n_attr = attribute_matches(product, goal["attributes"])
    n_opt = option_matches(goal_values, chosen_options.values())
    r_price = price <= goal["price_upper"]
    total = (n_attr + n_opt + r_price) / (len(goal["attributes"]) + len(goal_values) + 1)
    reward = total * kind["r_type"]
    return reward, {**kind, "attribute_matches": n_attr, "option_matches": n_opt, "r_price": bool(r_price)}
