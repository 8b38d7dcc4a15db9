"""BM25 product search (``rank_bm25``), standing in for WebShop's Lucene index (pyserini, Java).

Documents are a product's title, attributes, category breadcrumb and search query, lower-cased
and split into word tokens; a search returns the best ``SEARCH_RETURN_N`` (50, as WebShop) ASINs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from rank_bm25 import BM25Okapi

__all__ = ["SEARCH_RETURN_N", "ProductSearch", "tokenize"]

SEARCH_RETURN_N = 50
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _document(product: dict[str, Any]) -> str:
    return " ".join([product["Title"], *product["Attributes"], product["product_category"], product["query"]])


class ProductSearch:
    """BM25 over a product list; :meth:`search` gives ASINs, best first (ties: catalog order)."""

    def __init__(self, products: Sequence[dict[str, Any]]) -> None:
        self._asins = [p["asin"] for p in products]
        self._bm25 = BM25Okapi([tokenize(_document(p)) for p in products])

    def search(self, query: str, k: int = SEARCH_RETURN_N) -> list[str]:
        tokens = tokenize(query)
        if not tokens:
            return []
        scores = self._bm25.get_scores(tokens)
        # Stable sort on -score: equal scores keep catalog order, so results are reproducible.
        order = np.argsort(-scores, kind="stable")[:k]
        return [self._asins[i] for i in order if scores[i] > 0]
