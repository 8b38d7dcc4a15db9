"""The store's data: products, prices, goals and the search index, generated or original.

``Store.generated(num_products, seed, num_eval_goals, style)`` builds the offline catalog
(:mod:`.catalog`; ``style`` = how hard, :class:`.catalog.CatalogOptions`).
``Store.original(data_dir)`` reads WebShop's own files (``items_shuffle.json``,
``items_ins_v2.json``, ``items_human_ins.json``, optionally ``reviews.json``; the ``_1000``
variants too) the way WebShop's ``load_products`` / ``get_human_goals`` do: option values
lower-cased with "/" as " | ", ``pricing`` parsed from "$a to $b", a ranged price drawn uniformly
once, goals with at least one attribute, shuffled with seed 233.

Goals are split like WebShop's: the first ``num_eval_goals`` of the shuffled list are the
evaluation goals, the rest the training goals.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from .catalog import CatalogOptions, generate_catalog, price_bound
from .search import ProductSearch

__all__ = ["ORIGINAL_FILES", "Store", "load_store"]

GOAL_SHUFFLE_SEED = 233  # WebShop's SimServer shuffles its goals with this seed
ORIGINAL_FILES = {
    "products": ("items_shuffle.json", "items_shuffle_1000.json"),
    "attributes": ("items_ins_v2.json", "items_ins_v2_1000.json"),
    "human": ("items_human_ins.json",),
    "reviews": ("reviews.json",),
}


@dataclass
class Store:
    """Products by ASIN, their prices, the goals (eval first) and the search index."""

    products: list[dict[str, Any]]
    goals: list[dict[str, Any]]
    num_eval_goals: int
    prices: dict[str, float] = field(default_factory=dict)
    source: str = "generated"

    def __post_init__(self) -> None:
        if not self.products or len(self.goals) <= self.num_eval_goals:
            raise ValueError(f"the store needs products and more than num_eval_goals={self.num_eval_goals} goals; "
                             f"got {len(self.products)} products and {len(self.goals)} goals")
        self.by_asin = {p["asin"]: p for p in self.products}
        self.prices = self.prices or {p["asin"]: float(p["pricing"][0]) for p in self.products}
        self.search = ProductSearch(self.products)

    def split(self, evaluation: bool) -> list[dict[str, Any]]:
        return self.goals[: self.num_eval_goals] if evaluation else self.goals[self.num_eval_goals:]

    @classmethod
    def generated(cls, num_products: int, seed: int, num_eval_goals: int,
                  style: CatalogOptions | None = None) -> Store:
        products, goals = generate_catalog(num_products, seed, style)
        return cls(products, goals, num_eval_goals)

    @classmethod
    def original(cls, data_dir: str | Path, num_eval_goals: int, seed: int = 0) -> Store:
        paths = _original_paths(Path(data_dir))
        products = _load_original_products(paths)
        rng = random.Random(seed)
        prices = {}
        for p in products:
            pricing = p["pricing"]
            prices[p["asin"]] = pricing[0] if len(pricing) == 1 else rng.uniform(*pricing[:2])
        goals = []
        for p in products:
            for ins in p.get("instructions", []):
                if not ins.get("instruction_attributes"):
                    continue  # WebShop skips goals without attributes
                upper, price_text = price_bound(prices[p["asin"]], rng)
                goals.append({
                    "asin": p["asin"], "category": p["category"], "query": p["query"], "name": p["name"],
                    "product_category": p["product_category"],
                    "instruction_text": ins["instruction"].strip(".") + price_text,
                    "attributes": ins["instruction_attributes"], "price_upper": upper,
                    "goal_options": ins.get("instruction_options", []),
                })
        random.Random(GOAL_SHUFFLE_SEED).shuffle(goals)
        return cls(products, goals, min(num_eval_goals, max(len(goals) - 1, 0)), prices, source="original")


def _original_paths(root: Path) -> dict[str, Path | None]:
    found: dict[str, Path | None] = {}
    for key, names in ORIGINAL_FILES.items():
        found[key] = next((root / n for n in names if (root / n).is_file()), None)
    missing = [ORIGINAL_FILES[k][0] for k in ("products", "attributes", "human") if found[k] is None]
    if missing:
        raise FileNotFoundError(f"env.env_kwargs.data_dir={str(root)!r} lacks WebShop's {missing} "
                                "(WebShop's setup.sh downloads them into its data/ folder); or set data_dir: null "
                                "to use the generated catalog")
    return found


def _load_original_products(paths: dict[str, Path | None]) -> list[dict[str, Any]]:
    raw = json.loads(paths["products"].read_text(encoding="utf-8"))
    attributes = json.loads(paths["attributes"].read_text(encoding="utf-8"))
    human = json.loads(paths["human"].read_text(encoding="utf-8"))
    reviews: dict[str, Any] = {}
    if paths["reviews"] is not None:
        reviews = {r["asin"]: r for r in json.loads(paths["reviews"].read_text(encoding="utf-8"))}
    products, seen = [], set()
    for p in raw:
        asin = p.get("asin")
        if not asin or asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        pricing_text = p.get("pricing") or ""
        pricing = [float(Decimal(re.sub(r"[^\d.]", "", x))) for x in pricing_text.split("$")[1:]] or [100.0]
        options = {}
        for name, contents in (p.get("customization_options") or {}).items():
            if contents:
                options[name.lower()] = [c["value"].strip().replace("/", " | ").lower() for c in contents]
        bullets = p.get("small_description") or []
        review = reviews.get(asin, {})
        products.append({
            "asin": asin, "category": p["category"], "query": p["query"].lower().strip(), "name": p["name"],
            "Title": p["name"], "product_category": p["product_category"],
            "Description": p.get("full_description") or "",
            "BulletPoints": bullets if isinstance(bullets, list) else [bullets],
            "Attributes": attributes.get(asin, {}).get("attributes") or ["DUMMY_ATTR"],
            "options": options, "pricing": pricing[:2],
            "Price": f"${pricing[0]}" if len(pricing) == 1 else f"${pricing[0]} to ${pricing[1]}",
            "Rating": review.get("average_rating", "N.A."),
            "Reviews": [{"title": r.get("title", ""), "score": r.get("score", r.get("stars", "")),
                         "body": r.get("body", r.get("review", ""))} for r in review.get("reviews", [])],
            "instructions": human.get(asin, []),
        })
    return products


@lru_cache(maxsize=4)
def load_store(data_dir: str | None, num_products: int, seed: int, num_eval_goals: int,
               style: CatalogOptions | None = None) -> Store:
    """The store for these settings, built once per process (workers share nothing)."""
    if data_dir:
        return Store.original(data_dir, num_eval_goals, seed)
    return Store.generated(num_products, seed, num_eval_goals, style)


def swatch(asin: str) -> tuple[str, str]:
    """A product's placeholder picture: (CSS colour, initials source) derived from its ASIN."""
    digest = hashlib.sha1(asin.encode()).digest()
    return f"hsl({digest[0] * 360 // 256}, 55%, 45%)", asin[-2:]
