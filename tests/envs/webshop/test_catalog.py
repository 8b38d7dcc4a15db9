"""The generated catalog and its BM25 search: reproducible, consistent with the reward, findable."""

from __future__ import annotations

import random

from vldac_lightning.envs.webshop.catalog import PRICE_RANGE, generate_catalog, price_bound
from vldac_lightning.envs.webshop.reward import purchase_reward
from vldac_lightning.envs.webshop.store import Store, load_store


def test_the_catalog_is_reproducible_from_its_seed() -> None:
    a, goals_a = generate_catalog(100, seed=3)
    b, goals_b = generate_catalog(100, seed=3)
    c, _ = generate_catalog(100, seed=4)
    assert a == b and goals_a == goals_b and a != c
    assert len({p["asin"] for p in a}) == 100 and all(len(p["asin"]) == 10 for p in a)
    assert len({p["category"] for p in a}) == 5  # WebShop's five categories


def test_price_bounds_follow_webshop() -> None:
    rng = random.Random(0)
    for price in (3.99, 17.5, 44.99, 979.0):
        bound, text = price_bound(price, rng)
        above = [p for p in PRICE_RANGE if p > price][:4]
        assert bound in above[1:] and text == f", and price lower than {bound:.2f} dollars"
    assert price_bound(985.0, rng) == (1_000_000.0, "")  # fewer than two bounds above: no price clause


def test_every_goal_is_satisfiable_with_score_one() -> None:
    store = Store.generated(400, seed=0, num_eval_goals=50)
    for goal in store.goals:
        item = store.by_asin[goal["asin"]]
        assert all(v in item["options"][k] for k, v in goal["goal_options"].items())
        assert all(a in goal["instruction_text"] for a in goal["attributes"])
        assert all(v in goal["instruction_text"] for v in goal["goal_options"].values())
        reward, _ = purchase_reward(item, goal, store.prices[goal["asin"]], goal["goal_options"])
        assert reward == 1.0, goal


def test_bm25_finds_the_target_in_the_top_10_for_90_percent_of_200_instructions() -> None:
    store = load_store(None, 2000, 0, 500)
    goals = store.split(evaluation=False)[:200]
    hits = sum(g["asin"] in store.search.search(g["instruction_text"])[:10] for g in goals)
    assert hits >= 180, f"{hits}/200"


def test_splits_are_disjoint_and_sized() -> None:
    store = Store.generated(300, seed=0, num_eval_goals=50)
    evaluation, train = store.split(True), store.split(False)
    assert len(evaluation) == 50 and len(train) == 250
    assert not {id(g) for g in evaluation} & {id(g) for g in train}
