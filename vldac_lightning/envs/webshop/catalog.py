"""The generated WebShop catalog: products and shopping instructions, deterministic from a seed.

Products carry the fields WebShop's engine builds from its scraped data (``asin``, ``category``,
``query``, ``name``/``Title``, ``product_category``, ``Description``, ``BulletPoints``,
``Attributes``, ``options``, ``pricing``/``Price``, ``Rating``, ``Reviews``), so the store, the
search index and the reward read generated and original products alike
(docs/environments.md#webshop). The vocabulary lives in ``vocab.yaml``.

Goals follow WebShop's ``get_human_goals``: a product, a few of its attributes, one value of
each of its options, and a price bound drawn as WebShop draws it (two of the first four multiples
of 10 above the price; the larger one), written as an instruction such as "i need a long clip-in
hair extension which is natural looking, with color: honey blonde, and price lower than 40.00
dollars".
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PRICE_RANGE", "generate_catalog", "make_goal", "price_bound"]

PRICE_RANGE = [10.0 * i for i in range(1, 100)]  # WebShop's price bounds (goal.py)
_VOCAB = Path(__file__).with_name("vocab.yaml")
_TEMPLATES = (
    "i need {a} {item} that is {attrs}{options}",
    "i am looking for {a} {item} which is {attrs}{options}",
    "i want to buy {a} {item}, {attrs}{options}",
    "find me {a} {item} that is {attrs}{options}",
)
_REVIEWERS = ("great value", "works as described", "would buy again", "not bad for the price",
              "exactly what i needed", "quality could be better")


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


def _product(index: int, rng: random.Random) -> dict[str, Any]:
    vocab = _vocab()
    category = rng.choice(sorted(vocab["categories"]))
    cat = vocab["categories"][category]
    kind = rng.choice(cat["types"])
    modifier = rng.choice(kind["modifiers"])
    brand = rng.choice(vocab["brands"])
    attributes = rng.sample(cat["attributes"], rng.randint(3, 5))
    options: dict[str, list[str]] = {}
    for name, pool_name in kind["options"].items():
        pool = vocab["options"][pool_name]
        keep = sorted(rng.sample(range(len(pool)), rng.randint(min(2, len(pool)), min(6, len(pool)))))
        options[name] = [pool[i] for i in keep]
    lo, hi = kind["price"]
    price = round(rng.uniform(lo, hi), 0) - 0.01
    noun = kind["noun"]
    title = f"{brand.title()} {modifier.title()} {noun.title()} - {attributes[0].title()}"
    bullets = [f"{a.capitalize()}: our {noun} is designed to be {a}." for a in attributes[1:]]
    bullets.append(f"Made by {brand.title()}; satisfaction guaranteed.")
    description = (f"This {modifier} {noun} from {brand.title()} is {attributes[0]}. "
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


def make_goal(product: dict[str, Any], price: float, rng: random.Random) -> dict[str, Any]:
    """A shopping goal for ``product`` (WebShop's goal dict plus ``instruction_text``)."""
    attributes = rng.sample(product["Attributes"], rng.randint(1, min(3, len(product["Attributes"]))))
    goal_options = {name: rng.choice(values) for name, values in sorted(product["options"].items())}
    upper, price_text = price_bound(price, rng)
    noun = product.get("noun") or product["query"]
    item = f"{product['modifier']} {noun}" if product.get("modifier") else noun
    a = "an" if item[0] in "aeiou" else "a"
    attrs = " and ".join(attributes)
    opts = "".join(f", with {k}: {v}" if i == 0 else f", and {k}: {v}" for i, (k, v) in enumerate(goal_options.items()))
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


def generate_catalog(num_products: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(products, goals): ``num_products`` products and one goal per product, shuffled."""
    if num_products < 20:
        raise ValueError(f"num_products must be >= 20 (a search returns up to 50), got {num_products}")
    rng = random.Random(seed)
    products = [_product(i, rng) for i in range(num_products)]
    goals = [make_goal(p, p["pricing"][0], rng) for p in products]
    rng.shuffle(goals)
    return products, goals
