"""BM25 product search, standing in for WebShop's Lucene index (pyserini, Java).

Documents are what WebShop indexes (``search_engine/convert_product_file_format.py``): a product's
title, description, first bullet point and option values ("color: black, white, and size: ..."),
lower-cased. Scoring is Lucene's BM25 (pyserini's defaults k1 = 0.9, b = 0.4; idf
log(1 + (N - n + 0.5) / (n + 0.5))), a query term repeated counting again. Tokens are letter/digit
runs minus Lucene's English stop words, with plural endings folded (Lucene stems with Porter; we
fold only plurals: "extensions" finds "extension"). A search returns the best
``SEARCH_RETURN_N`` (50, as WebShop) ASINs, 10 per results page.

The index is a sparse term × document matrix of precomputed BM25 weights in CSR layout (numpy:
per term, the documents holding it and their weights): a query adds a few rows, so a catalog of
tens of thousands of products answers in about a millisecond.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["PRODUCT_WINDOW", "SEARCH_RETURN_N", "ProductSearch", "document", "tokenize"]

SEARCH_RETURN_N = 50
PRODUCT_WINDOW = 10  # results per page, as WebShop
K1, B = 0.9, 0.4  # Lucene / pyserini defaults
_TOKEN = re.compile(r"[a-z0-9]+")
# Lucene's EnglishAnalyzer stop set.
_STOP = frozenset("a an and are as at be but by for if in into is it no not of on or such that the their then "
                  "there these they this to was will with".split())


def _fold(token: str) -> str:
    """A plural's singular ("boxes" -> "box", "berries" -> "berry", "bars" -> "bar"), else the token."""
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 4 and token.endswith(("ches", "shes", "sses", "xes")):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def tokenize(text: str) -> list[str]:
    return [_fold(t) for t in _TOKEN.findall(text.lower()) if t not in _STOP]


def document(product: dict[str, Any]) -> str:
    """WebShop's search document for ``product``."""
    options = ", and ".join(f"{name}: {', '.join(values)}" for name, values in product.get("options", {}).items())
    bullets = product.get("BulletPoints") or [""]
    return " ".join([product["Title"], product["Description"], bullets[0], options]).lower()


class ProductSearch:
    """BM25 over a product list; :meth:`search` gives ASINs, best first (ties: catalog order)."""

    def __init__(self, products: Sequence[dict[str, Any]]) -> None:
        self._asins = [p["asin"] for p in products]
        vocab: dict[str, int] = {}
        rows, cols, counts = [], [], []
        lengths = np.zeros(len(products), np.float32)
        for d, product in enumerate(products):
            tokens = tokenize(document(product))
            lengths[d] = len(tokens)
            tf: dict[int, int] = {}
            for t in tokens:
                i = vocab.setdefault(t, len(vocab))
                tf[i] = tf.get(i, 0) + 1
            rows.extend(tf)
            cols.extend([d] * len(tf))
            counts.extend(tf.values())
        rows_a, cols_a = np.asarray(rows, np.int32), np.asarray(cols, np.int32)
        tf_a = np.asarray(counts, np.float32)
        n_docs = max(len(products), 1)
        df = np.bincount(rows_a, minlength=len(vocab)).astype(np.float32)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        norm = K1 * (1 - B + B * lengths / max(float(lengths.mean()) if len(lengths) else 1.0, 1e-9))
        weights = idf[rows_a] * tf_a * (K1 + 1) / (tf_a + norm[cols_a])
        order = np.argsort(rows_a, kind="stable")  # CSR: each term's documents side by side
        self._vocab = vocab
        self._docs = cols_a[order]
        self._weights = weights[order].astype(np.float32)
        self._indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)

    @property
    def nbytes(self) -> int:
        """Memory of the weight matrix (the index's bulk; the vocabulary dict comes on top)."""
        return self._weights.nbytes + self._docs.nbytes + self._indptr.nbytes

    def scores(self, query: str) -> np.ndarray:
        """float32 [num_products]: the BM25 score of every product for ``query``."""
        scores = np.zeros(len(self._asins), np.float32)
        # A repeated query term adds its row again, as in Lucene's boolean query.
        for i in (self._vocab[t] for t in tokenize(query) if t in self._vocab):
            lo, hi = self._indptr[i], self._indptr[i + 1]
            scores[self._docs[lo:hi]] += self._weights[lo:hi]  # a term's documents are distinct
        return scores

    def search(self, query: str, k: int = SEARCH_RETURN_N) -> list[str]:
        scores = self.scores(query)
        hits = np.flatnonzero(scores > 0)
        # Stable sort on -score: equal scores keep catalog order, so results are reproducible.
        order = hits[np.argsort(-scores[hits], kind="stable")][:k]
        return [self._asins[i] for i in order]
