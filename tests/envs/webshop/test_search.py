"""BM25 search: Lucene's formula on a hand-worked corpus, WebShop's document fields, and the
catalog's difficulty as seen by the search (the instruction alone no longer finds everything)."""

from __future__ import annotations

import math

import pytest

from vldac_lightning.envs.webshop.catalog import CatalogOptions
from vldac_lightning.envs.webshop.search import ProductSearch, document, tokenize
from vldac_lightning.envs.webshop.store import Store


def item(asin: str, title: str, **extra: object) -> dict:
    return {"asin": asin, "Title": title, "Description": "", "BulletPoints": [""], "options": {}, **extra}


def test_bm25_scores_match_a_hand_computation() -> None:
    # d0 "red shoe" (2 tokens), d1 "red red hat" (3): avgdl 2.5, N 2, k1 0.9, b 0.4.
    # idf(red) = ln(1 + 0.5/2.5) = ln 1.2; idf(shoe) = ln(1 + 1.5/1.5) = ln 2.
    # norm(d0) = 0.9 (0.6 + 0.4*2/2.5) = 0.828; norm(d1) = 0.9 (0.6 + 0.4*3/2.5) = 0.972.
    search = ProductSearch([item("A", "red shoe"), item("B", "red red hat")])
    shoe = search.scores("shoe")
    assert shoe[0] == pytest.approx(math.log(2) * 1.9 / 1.828, rel=1e-5) and shoe[1] == 0
    red = search.scores("red")
    assert red[0] == pytest.approx(math.log(1.2) * 1.9 / 1.828, rel=1e-5)
    assert red[1] == pytest.approx(math.log(1.2) * 2 * 1.9 / 2.972, rel=1e-5)
    assert search.search("red") == ["B", "A"] and search.search("shoe") == ["A"]
    assert search.scores("red red")[1] == pytest.approx(2 * red[1])  # a repeated query term counts again
    assert search.search("the of") == [] and search.search("") == []


def test_tokens_drop_stop_words_and_fold_plurals() -> None:
    assert tokenize("The Hair Extensions, for berries and boxes of Glasses") == [
        "hair", "extension", "berry", "box", "glass"]
    assert tokenize("dress bus iris") == ["dress", "bus", "iris"]


def test_the_document_is_webshops_title_description_first_bullet_and_options() -> None:
    p = item("A", "Acme Tee", Description="Soft.", BulletPoints=["Cotton", "Hidden"],
             options={"color": ["navy blue", "red"], "size": ["large"]}, Attributes=["not indexed"])
    assert document(p) == "acme tee soft. cotton color: navy blue, red, and size: large"


def test_ties_keep_catalog_order_and_at_most_50_come_back() -> None:
    search = ProductSearch([item(f"A{i:03d}", "blue mug") for i in range(60)])
    assert search.search("mug") == [f"A{i:03d}" for i in range(50)]


def test_the_instruction_finds_its_product_less_often_in_the_hard_store() -> None:
    def recall(style: CatalogOptions) -> float:
        store = Store.generated(2000, seed=0, num_eval_goals=200, style=style)
        goals = store.split(evaluation=True)
        return sum(g["asin"] in store.search.search(g["instruction_text"])[:10] for g in goals) / len(goals)

    easy, hard = recall(CatalogOptions.easy()), recall(CatalogOptions())
    assert easy >= 0.8 and hard < easy - 0.05, (easy, hard)
