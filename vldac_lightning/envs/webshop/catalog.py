"""The generated WebShop catalog: products and shopping instructions, deterministic from a seed.

Products carry the fields WebShop's engine builds from its scraped data (``asin``, ``category``,
``query``, ``name``/``Title``, ``product_category``, ``Description``, ``BulletPoints``,
``Attributes``, ``options``, ``pricing``/``Price``, ``Rating``, ``Reviews``), so the store, the
search index and the reward read generated and original products alike
(docs/environments.md#webshop). The vocabulary lives in ``vocab.yaml``.

What makes it hard, as the real store is (:class:`CatalogOptions`):

* **Families of near-duplicates**: products come in families of ``family_size`` that share the
  search query, type, title modifier and all but one attribute; each member has its own brand,
  option values and price. Every goal's family siblings are distractors that a search for it
  also finds and that score below 1 (a missing option value, attribute or price bound).
* **Instructions as people write them**: each attribute or option value is paraphrased with
  probability ``paraphrase_p`` ("without gluten" for "gluten free", "xl" for "x-large"); option
  values are written as WebShop's synthetic goals do ("with color: navy blue") only with
  probability ``option_names_p``, else in prose ("in navy"); a goal leaves each of its product's
  options out with probability ``partial_options_p`` (human goals often name no option or only
  some), and the title modifier with probability ``drop_modifier_p``.

Goals otherwise follow WebShop's ``get_human_goals``: a product, 1-3 of its attributes, one value
of each named option, a price bound drawn as WebShop draws it (two of the first four multiples of
10 above the price; the larger one). ``CatalogOptions.easy()`` is the earlier, easy store: no
families, every option named, nothing paraphrased.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PRICE_RANGE", "CatalogOptions", "catalog_options", "generate_catalog", "make_goal", "price_bound"]

PRICE_RANGE = [10.0 * i for i in range(1, 100)]  # WebShop's price bounds (goal.py)
_VOCAB = Path(__file__).with_name("vocab.yaml")
_TEMPLATES = (
    "i need {a} {item} that is {attrs}{options}",
    "i am looking for {a} {item} which is {attrs}{options}",
    "i want to buy {a} {item}, {attrs}{options}",
    "find me {a} {item} that is {attrs}{options}",
)
# Prose forms of an option value, by option name ({v}: the value as written).
_OPTION_PROSE = {
    "color": ("in {v}", "in the color {v}", "{v} colored"),
    "size": ("in size {v}", "{v} size", "in {v}"),
    "flavor": ("{v} flavored", "in {v} flavor"),
}
_REVIEWERS = ("great value", "works as described", "would buy again", "not bad for the price",
              "exactly what i needed", "quality could be better")


@dataclass(frozen=True)
class CatalogOptions:
    """How hard the generated store is (module docstring); ``env.env_kwargs.catalog`` sets them."""

    family_size: int = 4  # products per family (1: no near-duplicates)
    paraphrase_p: float = 0.5  # chance each attribute / option value of an instruction is paraphrased
    option_names_p: float = 0.3  # chance an option is written "name: value" (WebShop's synthetic goals)
    partial_options_p: float = 0.3  # chance a goal leaves out each option of its product
    drop_modifier_p: float = 0.3  # chance an instruction names the product type without its modifier

    @classmethod
    def easy(cls) -> CatalogOptions:
        """The earlier store: no distractor families, every option named verbatim."""
        return cls(family_size=1, paraphrase_p=0.0, option_names_p=1.0, partial_options_p=0.0, drop_modifier_p=0.0)


def catalog_options(raw: Mapping[str, Any] | CatalogOptions | None) -> CatalogOptions:
    """``env.env_kwargs.catalog`` as :class:`CatalogOptions`, validated; ``{"preset": "easy"}`` for the easy store."""
    if isinstance(raw, CatalogOptions):
        return raw
    raw = dict(raw or {})
    preset = raw.pop("preset", "hard")
    if preset not in ("hard", "easy"):
        raise ValueError(f"env.env_kwargs.catalog.preset must be 'hard' or 'easy', got {preset!r}")
    base = CatalogOptions() if preset == "hard" else CatalogOptions.easy()
    known = {f.name for f in fields(CatalogOptions)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"env.env_kwargs.catalog has unknown keys {unknown}; known: preset, {', '.join(sorted(known))}")
    values = {f.name: raw.get(f.name, getattr(base, f.name)) for f in fields(CatalogOptions)}
    if int(values["family_size"]) < 1:
        raise ValueError(f"env.env_kwargs.catalog.family_size must be >= 1, got {values['family_size']}")
    for name in known - {"family_size"}:
        if not 0.0 <= float(values[name]) <= 1.0:
            raise ValueError(f"env.env_kwargs.catalog.{name} is a probability in [0, 1], got {values[name]}")
    return CatalogOptions(int(values["family_size"]), *(float(values[n]) for n in
                                                         ("paraphrase_p", "option_names_p", "partial_options_p",
                                                          "drop_modifier_p")))


@lru_cache(maxsize=1)
def _vocab() -> dict[str, Any]:
    return yaml.safe_load(_VOCAB.read_text(encoding="utf-8"))


def price_bound(price: float, rng: random.Random) -> tuple[float, str]:
    """WebShop's price bound for a product of ``price``: (bound, instruction suffix)."""
    above = [p for p in PRICE_RANGE if p > price][:4]
    if len(above) >= 2:
        _, upper = sorted(rng.sample(above, 2))
        return upper, f", and price lower than {upper:.2f} dollars"
    return 1_000_000.0, ""


def _sample_options(kind: dict[str, Any], rng: random.Random) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for name, pool_name in kind["options"].items():
        pool = _vocab()["options"][pool_name]
        keep = sorted(rng.sample(range(len(pool)), rng.randint(min(2, len(pool)), min(6, len(pool)))))
        options[name] = [pool[i] for i in keep]
    return options


def _product(index: int, rng: random.Random, category: str, kind: dict[str, Any], modifier: str,
             attributes: list[str], price: float) -> dict[str, Any]:
    """One product of ``kind`` with its own brand, option values, text, rating and reviews."""
    vocab = _vocab()
    cat = vocab["categories"][category]
    brand = rng.choice(vocab["brands"])
    options = _sample_options(kind, rng)
    noun = kind["noun"]
    title = f"{brand.title()} {modifier.title()} {noun.title()} - {attributes[0].title()}"
    bullets = [f"{a.capitalize()}: our {noun} is designed to be {a}." for a in attributes[1:]]
    bullets.append(f"Made by {brand.title()}; satisfaction guaranteed.")
    description = (f"This {modifier} {noun} from {brand.title()} is {' and '.join(attributes[:2])}. "
                   f"Available in {len(next(iter(options.values()), ['one']))} variants.")
    rating = round(rng.uniform(3.0, 5.0), 1)
    reviews = [{"title": rng.choice(_REVIEWERS), "score": rng.randint(3, 5), "body": f"The {noun} is fine."}
               for _ in range(rng.randint(1, 3))]
    return {
        "asin": f"G{index:09d}",  # WebShop ASINs are 10 characters
        "category": category,
        "query": kind["query"],
        "name": title,
        "Title": title,
        "product_category": " › ".join([*cat["path"], *kind["sub"]]),
        "Description": description,
        "BulletPoints": bullets,
        "Attributes": attributes,
        "options": options,
        "pricing": [price],
        "Price": f"${price:.2f}",
        "Rating": rating,
        "Reviews": reviews,
        "modifier": modifier,
        "noun": noun,
    }


def _family(start: int, size: int, rng: random.Random) -> list[dict[str, Any]]:
    """``size`` products sharing query, type, modifier and all but one attribute (module docstring)."""
    vocab = _vocab()
    category = rng.choice(sorted(vocab["categories"]))
    cat = vocab["categories"][category]
    kind = rng.choice(cat["types"])
    modifier = rng.choice(kind["modifiers"])
    attributes = rng.sample(cat["attributes"], rng.randint(3, 5))
    lo, hi = kind["price"]
    base_price = rng.uniform(lo, hi)
    members = []
    for j in range(size):
        attrs = list(attributes)
        if j:  # a sibling swaps one attribute for another of its category
            spare = [a for a in cat["attributes"] if a not in attrs]
            attrs[rng.randrange(len(attrs))] = rng.choice(spare)
        price = round(base_price * (rng.uniform(0.8, 1.6) if j else 1.0), 0) - 0.01
        members.append(_product(start + j, rng, category, kind, modifier, attrs, max(price, 0.99)))
    return members


def _say(value: str, p: float, rng: random.Random) -> str:
    """``value`` as an instruction writes it: a paraphrase with probability ``p`` (when there is one)."""
    options = _vocab()["paraphrases"].get(value)
    return rng.choice(options) if options and rng.random() < p else value


def make_goal(product: dict[str, Any], price: float, rng: random.Random,
              style: CatalogOptions | None = None) -> dict[str, Any]:
    """A shopping goal for ``product`` (WebShop's goal dict plus ``instruction_text``)."""
    style = style or CatalogOptions.easy()
    attributes = rng.sample(product["Attributes"], rng.randint(1, min(3, len(product["Attributes"]))))
    goal_options = {name: rng.choice(values) for name, values in sorted(product["options"].items())
                    if rng.random() >= style.partial_options_p}
    upper, price_text = price_bound(price, rng)
    noun = product.get("noun") or product["query"]
    modifier = product.get("modifier") if rng.random() >= style.drop_modifier_p else None
    item = f"{modifier} {noun}" if modifier else noun
    a = "an" if item[0] in "aeiou" else "a"
    attrs = " and ".join(_say(x, style.paraphrase_p, rng) for x in attributes)
    opts = ""
    for i, (name, value) in enumerate(goal_options.items()):
        if rng.random() < style.option_names_p:
            opts += f"{', and ' if i else ', with '}{name}: {value}"
        else:  # prose reads "..., in navy" / "..., and 18 inches size"
            prose = rng.choice(_OPTION_PROSE.get(name, _OPTION_PROSE["size"]))
            opts += (", and " if i else ", ") + prose.format(v=_say(value, style.paraphrase_p, rng))
    text = rng.choice(_TEMPLATES).format(a=a, item=item, attrs=attrs, options=opts) + price_text
    return {
        "asin": product["asin"],
        "category": product["category"],
        "query": product["query"],
        "name": product["name"],
        "product_category": product["product_category"],
        "instruction_text": text,
        "attributes": attributes,
        "price_upper": upper,
        "goal_options": goal_options,
    }


def generate_catalog(num_products: int, seed: int,
                     style: CatalogOptions | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(products, goals): ``num_products`` products (in families) and one goal per product, shuffled."""
    if num_products < 20:
        raise ValueError(f"num_products must be >= 20 (a search returns up to 50), got {num_products}")
    style = style or CatalogOptions()
    rng = random.Random(seed)
    products: list[dict[str, Any]] = []
    while len(products) < num_products:
        size = min(style.family_size, num_products - len(products))
        products.extend(_family(len(products), size, rng))
    goals = [make_goal(p, p["pricing"][0], rng, style) for p in products]
    rng.shuffle(goals)
    return products, goals
