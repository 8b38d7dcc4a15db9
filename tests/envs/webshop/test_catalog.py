"""The generated catalog: reproducible, satisfiable, and as hard as promised (families of
near-duplicates, paraphrased and partial instructions); its options are validated."""

from __future__ import annotations

import random

import pytest

from vldac_lightning.envs.webshop.catalog import (
    PRICE_RANGE,
    CatalogOptions,
    catalog_options,
    generate_catalog,
    price_bound,
)
from vldac_lightning.envs.webshop.reward import purchase_reward
from vldac_lightning.envs.webshop.store import Store

EASY = CatalogOptions.easy()


def test_the_catalog_is_reproducible_from_its_seed() -> None:
    a, goals_a = generate_catalog(100, seed=3)
    b, goals_b = generate_catalog(100, seed=3)
    c, _ = generate_catalog(100, seed=4)
    assert a == b and goals_a == goals_b and a != c
    assert len({p["asin"] for p in a}) == 100 and all(len(p["asin"]) == 10 for p in a)
    assert len({p["category"] for p in generate_catalog(400, seed=0)[0]}) == 5  # WebShop's five categories


def test_price_bounds_follow_webshop() -> None:
    rng = random.Random(0)
    for price in (3.99, 17.5, 44.99, 979.0):
        bound, text = price_bound(price, rng)
        above = [p for p in PRICE_RANGE if p > price][:4]
        assert bound in above[1:] and text == f", and price lower than {bound:.2f} dollars"
    assert price_bound(985.0, rng) == (1_000_000.0, "")  # fewer than two bounds above: no price clause


@pytest.mark.parametrize("style", [CatalogOptions(), EASY], ids=["hard", "easy"])
def test_every_goal_is_satisfiable_with_score_one(style: CatalogOptions) -> None:
    store = Store.generated(400, seed=0, num_eval_goals=50, style=style)
    for goal in store.goals:
        item = store.by_asin[goal["asin"]]
        assert all(v in item["options"][k] for k, v in goal["goal_options"].items())
        reward, _ = purchase_reward(item, goal, store.prices[goal["asin"]], goal["goal_options"])
        assert reward == 1.0, goal


def test_the_easy_preset_names_every_option_and_attribute_verbatim() -> None:
    for goal in Store.generated(300, seed=0, num_eval_goals=50, style=EASY).goals:
        assert all(a in goal["instruction_text"] for a in goal["attributes"])
        assert all(f"{k}: {v}" in goal["instruction_text"] for k, v in goal["goal_options"].items())


def test_hard_instructions_paraphrase_and_leave_options_out() -> None:
    products, goals = generate_catalog(1000, seed=0)
    by_asin = {p["asin"]: p for p in products}
    paraphrased = sum(not all(a in g["instruction_text"] for a in g["attributes"]) for g in goals) / len(goals)
    partial = sum(len(g["goal_options"]) < len(by_asin[g["asin"]]["options"]) for g in goals) / len(goals)
    named = sum(f"{k}: " in g["instruction_text"] for g in goals for k in g["goal_options"])
    options = sum(len(g["goal_options"]) for g in goals)
    # Defaults: paraphrase_p 0.5 per attribute (1-3 each), partial_options_p 0.3 per option
    # (1-2 each), option_names_p 0.3: wide bands around the expected shares.
    assert 0.35 < paraphrased < 0.85 and 0.2 < partial < 0.6 and 0.15 < named / options < 0.45


def test_families_are_distractors_sharing_query_type_and_most_attributes() -> None:
    products, goals = generate_catalog(800, seed=1)
    size = CatalogOptions().family_size
    beaten = total = 0
    for start in range(0, len(products), size):
        family = products[start:start + size]
        base = family[0]
        for sibling in family[1:]:
            assert (sibling["query"], sibling["modifier"], sibling["noun"]) == (base["query"], base["modifier"],
                                                                               base["noun"])
            assert len(set(sibling["Attributes"]) & set(base["Attributes"])) == len(base["Attributes"]) - 1
    for goal in goals:
        index = int(goal["asin"][1:])
        family = products[index - index % size: index - index % size + size]
        for sibling in (p for p in family if p["asin"] != goal["asin"]):
            options = {k: v for k, v in goal["goal_options"].items() if v in sibling["options"][k]}
            total += 1
            beaten += purchase_reward(sibling, goal, sibling["pricing"][0], options)[0] < 1.0
    assert beaten / total > 0.5, (beaten, total)  # most siblings miss an option, attribute or the bound


def test_catalog_options_are_validated_with_the_key_and_the_fix() -> None:
    assert catalog_options(None) == CatalogOptions() and catalog_options({"preset": "easy"}) == EASY
    assert catalog_options({"preset": "easy", "family_size": 3}).family_size == 3
    with pytest.raises(ValueError, match=r"unknown keys \['familysize'\]; known: preset, drop_modifier_p"):
        catalog_options({"familysize": 2})
    with pytest.raises(ValueError, match=r"catalog.paraphrase_p is a probability in \[0, 1\], got 1.5"):
        catalog_options({"paraphrase_p": 1.5})
    with pytest.raises(ValueError, match=r"catalog.preset must be 'hard' or 'easy', got 'medium'"):
        catalog_options({"preset": "medium"})


def test_splits_are_disjoint_and_sized() -> None:
    store = Store.generated(300, seed=0, num_eval_goals=50)
    evaluation, train = store.split(True), store.split(False)
    assert len(evaluation) == 50 and len(train) == 250
    assert not {id(g) for g in evaluation} & {id(g) for g in train}
